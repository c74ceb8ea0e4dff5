"""Fixtures shared by the evaluation tests (one verifier pool and one tiny checkpoint for the whole folder)."""

import json
import shutil

import jax
import numpy as np
import pytest

from tests.evaluation.helpers import EVAL_DIR, FIXTURE
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.evaluation import benchmarks
from tsp_jax.model import convert, llama


@pytest.fixture(scope="package")
def pool():
  from tsp_jax.verify.pool import VerifierPool
  with VerifierPool(num_workers=2) as p:
    yield p


@pytest.fixture(scope="package")
def tiny_checkpoint(tmp_path_factory):
  """A random tiny Llama saved as an HF folder with a tokenizer trained on eval prompts and the fixture."""
  root = tmp_path_factory.mktemp("ckpt")
  texts = [json.loads(line)["prompt"] for line in open(FIXTURE, encoding="utf-8")]
  if EVAL_DIR:
    texts += [it.prompt for it in benchmarks.load_shared(EVAL_DIR, "cweval", "test")]
  tok = tokenizer_lib.train_tokenizer(texts, tokenizer_lib.min_vocab_size(texts) + 200, root / "tok.model")
  cfg = llama.LlamaConfig.tiny(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                               ffn_dim=64, max_seq_len=512)
  rng = np.random.default_rng(0)  # numpy init: jitting init_params costs ~15 s on 2 busy cores
  params = jax.tree_util.tree_map_with_path(
      lambda path, s: (np.ones(s.shape, s.dtype) if path[-1].key == "scale"
                       else rng.normal(0.0, 0.02, s.shape).astype(s.dtype)),
      jax.eval_shape(lambda k: llama.init_params(cfg, k), jax.random.key(0)))
  export = root / "export"
  convert.save_hf_checkpoint(params, cfg, export)
  shutil.copy(root / "tok.model", export / "tokenizer.model")
  return str(export)
