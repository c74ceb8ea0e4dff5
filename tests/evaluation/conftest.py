"""Fixtures shared by the evaluation tests (one verifier pool and one tiny checkpoint for the whole folder)."""

import json

import pytest

from tests import checkpoints
from tests.evaluation.helpers import EVAL_DIR, FIXTURE
from tsp_jax.evaluation import benchmarks


@pytest.fixture(scope="package")
def pool():
  """The real pool, with limits wide enough that CWEval's DSA/RSA key-generation tests (random parameter search:
  up to ~15 s of CPU on a loaded 2-core CI machine) cannot time out: these tests check verdicts, not speed."""
  from tsp_jax.verify.pool import VerifierPool, WorkerSettings
  settings = WorkerSettings(test_wall_s=180.0, test_cpu_s=180.0, cweval_test_timeout_s=90.0)
  with VerifierPool(num_workers=2, program_timeout_s=240.0, settings=settings) as p:
    yield p


@pytest.fixture(scope="package")
def tiny_checkpoint(tmp_path_factory):
  """A random tiny Llama saved as an HF folder with a tokenizer trained on eval prompts and the fixture."""
  texts = [json.loads(line)["prompt"] for line in open(FIXTURE, encoding="utf-8")]
  if EVAL_DIR:
    texts += [it.prompt for it in benchmarks.load_shared(EVAL_DIR, "cweval", "test")]
  return checkpoints.tiny_hf_checkpoint(tmp_path_factory.mktemp("ckpt"), texts)
