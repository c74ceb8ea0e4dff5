"""Packed SFT rows: bin-packing, segment positions, and the packed forward / loss / gradient against one
sequence per row (brute force)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsp_jax import batches, objective, pairs
from tsp_jax.model import llama

CFG = llama.LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)


@pytest.fixture(scope="module")
def params():
  return llama.init_params(CFG, jax.random.key(0))


def random_sequences(n: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
  rng = np.random.default_rng(seed)
  seqs = [np.asarray([1] + list(rng.integers(3, 64, int(rng.integers(3, 20)))), np.int32) for _ in range(n)]
  return seqs, [int(rng.integers(1, len(s))) for s in seqs]


def test_pack_rows_places_every_item_once_within_the_row_length():
  lengths = list(np.random.default_rng(0).integers(1, 33, 200))
  rows = pairs.pack_rows(lengths, 32, seed=1)
  assert sorted(i for row in rows for i in row) == list(range(200))
  assert all(sum(lengths[i] for i in row) <= 32 for row in rows)
  assert len(rows) <= 1.15 * sum(lengths) / 32  # best fit wastes little
  assert rows == pairs.pack_rows(lengths, 32, seed=1)
  assert rows != pairs.pack_rows(lengths, 32, seed=2)
  with pytest.raises(ValueError, match="1..32"):
    pairs.pack_rows([33], 32, seed=0)


def test_segment_positions_restart_per_segment():
  segments = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(pairs.segment_positions(segments),
                                [[0, 1, 2, 0, 1, 0, -1, -1], [0, 1, 2, 3, 4, 5, 6, 7]])


def test_packed_rows_hold_the_sequences_and_their_masks():
  seqs, prompt_lens = random_sequences(9, seed=3)
  ps = pairs.packed_sequence_set(seqs, prompt_lens, 24, pad_id=0, seed=0)
  dense = pairs.sequence_set(seqs, prompt_lens, 24, pad_id=0)
  assert len(ps) < len(seqs)
  found = []
  for r in range(len(ps)):
    for s in range(1, ps.segments[r].max() + 1):
      cols = np.flatnonzero(ps.segments[r] == s)
      found.append((tuple(ps.chosen[r, cols]), tuple(ps.chosen_mask[r, cols])))
  expected = [(tuple(seq), tuple(dense.chosen_mask[i, :len(seq)])) for i, seq in enumerate(seqs)]
  assert sorted(found) == sorted(expected)


def test_packed_forward_equals_each_sequence_alone(params):
  seqs, prompt_lens = random_sequences(7, seed=4)
  ps = pairs.packed_sequence_set(seqs, prompt_lens, 32, pad_id=0, seed=0)
  positions = pairs.segment_positions(ps.segments)
  logits, _ = llama.forward(params, CFG, jnp.asarray(ps.chosen), jnp.asarray(positions),
                            segments=llama.Segments.documents(jnp.asarray(ps.segments)))
  for r in range(len(ps)):
    for s in range(1, ps.segments[r].max() + 1):
      cols = np.flatnonzero(ps.segments[r] == s)
      alone, _ = llama.forward(params, CFG, jnp.asarray(ps.chosen[r:r + 1, cols]),
                               jnp.arange(len(cols), dtype=jnp.int32)[None])
      np.testing.assert_allclose(np.asarray(logits[r, cols]), np.asarray(alone[0]), atol=1e-5)


@pytest.mark.parametrize("remat", [False, True])
def test_packed_sft_loss_and_gradient_equal_the_dense_batch(params, remat):
  cfg = llama.LlamaConfig(**{**CFG.__dict__, "remat": remat})
  seqs, prompt_lens = random_sequences(10, seed=5)
  packed = pairs.packed_sequence_set(seqs, prompt_lens, 40, pad_id=0, seed=0)
  dense = pairs.sequence_set(seqs, prompt_lens, 20, pad_id=0)
  p_batch, _ = batches.to_batch(packed, np.arange(len(packed)), len(packed), "sft")
  d_batch, _ = batches.to_batch(dense, np.arange(len(dense)), len(dense), "sft")
  assert p_batch.segments is not None and d_batch.segments is None
  grad = jax.value_and_grad(lambda p, b: objective.sft_loss(p, cfg, b)[0])
  p_loss, p_grad = grad(params, p_batch)
  d_loss, d_grad = grad(params, d_batch)
  np.testing.assert_allclose(float(p_loss), float(d_loss), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5), p_grad, d_grad)


def test_segments_need_a_cache_free_forward_of_the_same_shape(params):
  tokens = jnp.ones((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="segments"):
    llama.forward(params, CFG, tokens, jnp.zeros((1, 4), jnp.int32),
                  segments=llama.Segments.documents(jnp.ones((1, 3), jnp.int32)))
