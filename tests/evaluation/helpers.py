"""Shared by the evaluation tests: the eval folder, hand-made verdicts and items, a stub verifier pool."""

import os

import pytest

from tsp_jax import config
from tsp_jax.evaluation.benchmarks import EvalItem
from tsp_jax.verify import types
from tsp_jax.verify.types import Task, Verdict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "sven_train_sample.jsonl")
EVAL_DIR = config.shared_dir("eval")
needs_eval = pytest.mark.skipif(not EVAL_DIR, reason="../shared/eval is not present")


def verdict(status="ok", secure=True, functional=None, **kw) -> Verdict:
  return Verdict(status=status, secure=secure, functional=functional, **kw)


class StubPool:
  """Verdicts by program text; the program "CRASH" gets a crashed verdict (a worker died on it)."""

  def __init__(self):
    self.calls = []

  def verify(self, tasks, programs):
    self.calls.append(len(programs))
    return [verdict("crashed", secure=False, functional=False) if p == "CRASH"
            else verdict(secure="vuln" not in p, functional=True) for p in programs]


def item(id_, cwe, prompt="def f():\n", seen=True, **refs) -> EvalItem:
  task = Task(id_, cwe, prompt=prompt, cwe_seen_in_train=seen, tests=types.TESTS_SCRIPT, functional_tests="pass")
  return EvalItem("cweval", task, prompt, refs)
