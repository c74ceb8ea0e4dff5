"""The evaluated model: loading an exported folder (clear errors, runtime dtype and kernel), checkpoint paths."""

import os

import jax
import pytest

from tsp_jax.evaluation import decoding
from tsp_jax.model import llama


def test_a_missing_model_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="checkpoint folder .* does not exist"):
    decoding.load_model(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="tokenizer.model"):
    decoding.load_model(tmp_path)


def test_load_model_sets_the_runtime_dtype_and_the_platform_kernel(tiny_checkpoint):
  cfg, params, tok = decoding.load_model(tiny_checkpoint, dtype="bfloat16")
  assert (cfg.dtype, cfg.param_dtype) == ("bfloat16", "bfloat16")
  assert cfg.kernel == llama.kernel_for_platform(jax.default_backend())
  assert cfg.vocab_size == tok.vocab_size
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jax.numpy.dtype("bfloat16")}


def test_a_trainer_workdir_resolves_to_its_export(tiny_checkpoint):
  workdir = os.path.dirname(tiny_checkpoint)
  assert decoding.resolve_checkpoint(workdir) == tiny_checkpoint
  assert decoding.resolve_checkpoint(tiny_checkpoint) == tiny_checkpoint
  assert decoding.run_name(tiny_checkpoint) == decoding.run_name(workdir) == os.path.basename(workdir)
