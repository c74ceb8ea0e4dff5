"""Device batches cut to their length bucket: the same losses as the full padded length (brute force)."""

import jax
import numpy as np
import pytest

from tsp_jax import batches, objective, pairs
from tsp_jax.model import llama

CFG = llama.LlamaConfig.tiny(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
                             max_seq_len=256)


def _pair_set(rng: np.random.Generator, n: int, length: int) -> pairs.PairSet:
  plist, prefix_lens = [], []
  for _ in range(n):
    p = int(rng.integers(2, 40))
    prefix = rng.integers(3, 64, p)
    plist.append((np.concatenate([prefix, rng.integers(3, 64, int(rng.integers(1, 60)))]),
                  np.concatenate([prefix, rng.integers(3, 64, int(rng.integers(1, 60)))]), pairs.KIND_SUBTREE))
    prefix_lens.append(p)
  ps = pairs.pair_arrays(plist, prefix_lens, length, 0)
  ps.ref_logps = rng.normal(-30, 5, (n, 2)).astype(np.float32)
  return ps


def test_batch_length_is_the_bucket_of_the_last_scored_token():
  mask = np.zeros((2, 200), np.float32)
  mask[0, 10:70] = 1  # last scored column 69: columns 0..70 are needed -> the 128 bucket
  assert batches.batch_length([mask]) == 128
  mask[1, 150:199] = 1
  assert batches.batch_length([mask]) == 200  # never beyond the padded length
  assert batches.batch_length([np.zeros((2, 200), np.float32)]) == 64


@pytest.fixture(scope="module")
def params():
  return llama.init_params(CFG, jax.random.key(0))


@pytest.mark.parametrize("loss", ["tsp", "dpo", "sft"])
def test_cut_batches_give_the_losses_of_full_length_batches(loss, params):
  rng = np.random.default_rng(0)
  ps = _pair_set(rng, 5, 256)
  loss_cfg = objective.LossConfig(name=loss, first_token_weight=2.0, sft_weight=0.0 if loss == "sft" else 0.5)
  idx = np.array([3, 1, 4])
  batch, ref = batches.to_batch(ps, idx, 4, loss)
  full = np.concatenate([idx, idx[:1]])
  weight = np.array([1, 1, 1, 0], np.float32)
  if loss == "sft":
    assert batch.tokens.shape[1] < 256
    dense = objective.SeqBatch(tokens=ps.chosen[full], mask=ps.chosen_mask[full] * weight[:, None])
  else:
    assert batch.chosen.shape[1] < 256
    dense = objective.PairBatch(chosen=ps.chosen[full], rejected=ps.rejected[full],
                                chosen_mask=ps.chosen_mask[full], rejected_mask=ps.rejected_mask[full],
                                weight=weight)
  fn = objective.loss_fn(loss)
  got, got_m = fn(params, CFG, batch, ref, loss_cfg)
  want, want_m = fn(params, CFG, dense, None if loss == "sft" else ps.ref_logps[full], loss_cfg)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for k in want_m:
    np.testing.assert_allclose(got_m[k], want_m[k], rtol=1e-5, atol=1e-6)
