"""Model tests that need no reference implementation: configs, KV-cache exactness, input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsp_jax.model import decode, llama


def tiny_cfg(**kw) -> llama.LlamaConfig:
  return llama.LlamaConfig(**{**dict(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                                     max_seq_len=128), **kw})


@pytest.fixture(scope="module")
def model():
  cfg = tiny_cfg()
  return cfg, llama.init_params(cfg, jax.random.key(0))


def test_codellama_7b_param_count_from_abstract_shapes():
  cfg = llama.LlamaConfig.codellama_7b()
  assert cfg.num_params() == 6_738_546_688
  assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim, cfg.vocab_size) == (
      4096, 32, 32, 32, 11008, 32016)
  assert (cfg.rope_theta, cfg.norm_eps, cfg.max_seq_len) == (1e6, 1e-5, 16384)


def test_presets_13b_34b():
  # Hand-derived: 2 * V * D + L * (4 * D^2 + 3 * D * F + 2 * D) + D (34B: k/v have 8 * 128 rows).
  assert llama.LlamaConfig.codellama_13b().num_params() == (
      2 * 32016 * 5120 + 40 * (4 * 5120**2 + 3 * 5120 * 13824 + 2 * 5120) + 5120) == 13_016_028_160
  cfg34 = llama.LlamaConfig.codellama_34b()
  per_layer = 2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 22016 + 2 * 8192
  assert cfg34.n_kv_heads == 8 and cfg34.num_params() == 2 * 32000 * 8192 + 48 * per_layer + 8192


def test_abstract_params_allocate_nothing():
  shapes = llama.abstract_params(llama.LlamaConfig.codellama_34b())
  leaves = jax.tree.leaves(shapes)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert shapes["layers"][0]["attn"]["k"].shape == (8192, 8, 128)


def test_param_axes_cover_every_param_with_matching_rank():
  cfg = tiny_cfg()
  shapes, axes = llama.abstract_params(cfg), llama.param_axes(cfg)
  flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
  assert len(flat_axes) == len(jax.tree.leaves(shapes))
  jax.tree.map(lambda s, a: (len(a) == s.ndim) or pytest.fail(f"{a} vs {s.shape}"), shapes, axes,
               is_leaf=lambda x: isinstance(x, tuple))
  assert axes["embed"] == ("vocab", "embed") and axes["layers"][1]["mlp"]["down"] == ("mlp", "embed")


@pytest.mark.parametrize("kw, msg", [
    (dict(n_heads=4, n_kv_heads=3), "multiple of n_kv_heads"),
    (dict(n_heads=3), "not divisible by n_heads"),
    (dict(dtype="int8"), "dtype must be"),
    (dict(n_layers=0), "n_layers must be positive"),
])
def test_bad_config(kw, msg):
  with pytest.raises(ValueError, match=msg):
    tiny_cfg(**kw)


def test_forward_rejects_mismatched_shapes(model):
  cfg, params = model
  tokens = jnp.zeros((2, 5), jnp.int32)
  with pytest.raises(ValueError, match="must both be"):
    llama.forward(params, cfg, tokens, jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match="cache has 3 rows"):
    llama.forward(params, cfg, tokens, jnp.zeros((2, 5), jnp.int32), llama.init_cache(cfg, 3, 16))
  with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
    llama.init_cache(cfg, 1, 1000)


def test_prefill_then_decode_equals_uncached_forward(model):
  cfg, params = model
  b, t, split = 3, 24, 9
  tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(t), (b, t))
  full, none_cache = llama.forward(params, cfg, tokens, positions)
  assert none_cache is None
  cache = llama.init_cache(cfg, b, 32)
  logits, cache = llama.forward(params, cfg, tokens[:, :split], positions[:, :split], cache)
  steps = [logits]
  for i in range(split, t):
    step_logits, cache = llama.forward(params, cfg, tokens[:, i:i + 1], positions[:, i:i + 1], cache)
    steps.append(step_logits)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)


def test_grown_cache_continues_decoding(model):
  """A cache grown mid-decode (as the tree search does between phases) keeps what it held."""
  cfg, params = model
  b, t = 2, 12
  tokens = jax.random.randint(jax.random.key(4), (b, t), 0, cfg.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(t), (b, t))
  full, _ = llama.forward(params, cfg, tokens, positions)
  _, cache = llama.forward(params, cfg, tokens[:, :8], positions[:, :8], llama.init_cache(cfg, b, 8))
  cache = llama.grow_cache(cache, 16)
  assert cache.max_len == 16 and cache.k[0].shape[-1] == 16 and cache.v[0].shape[2] == 16
  for i in range(8, t):
    step, cache = llama.forward(params, cfg, tokens[:, i:i + 1], positions[:, i:i + 1], cache)
    np.testing.assert_allclose(step[:, 0], full[:, i], atol=1e-5, rtol=0)


def test_shared_prefix_decode_equals_uncached_forward(model):
  """Rows continuing shared prompts of different lengths (PrefixKV), decoded into caches that hold only the
  continuations, give the logits of an uncached forward over prompt + continuation."""
  cfg, params = model
  p, n, width, steps = 2, 3, 6, 4
  lens = jnp.array([4, 6], jnp.int32)
  seqs = jax.random.randint(jax.random.key(5), (p, width), 0, cfg.vocab_size)
  prompts = jnp.where(jnp.arange(width)[None] < lens[:, None], seqs, 0)
  _, prompt_cache = decode.prefill(params, cfg, prompts, lens, llama.init_cache(cfg, p, width))
  prefix = llama.PrefixKV(cache=prompt_cache, lens=lens)
  cont = np.asarray(jax.random.randint(jax.random.key(6), (p * n, steps), 0, cfg.vocab_size))
  cache = llama.init_cache(cfg, p * n, steps)
  for i in range(steps):
    pos = jnp.repeat(lens, n)[:, None] + i
    step, cache = llama.forward(params, cfg, jnp.asarray(cont[:, i:i + 1]), pos, cache, prefix=prefix)
    for b in range(p * n):
      seq = np.concatenate([np.asarray(prompts[b // n, :int(lens[b // n])]), cont[b, :i + 1]])
      ref, _ = llama.forward(params, cfg, jnp.asarray(seq[None]), jnp.arange(len(seq))[None])
      np.testing.assert_allclose(step[b, 0], ref[0, -1], atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="multiple of its 2 prompts"):
    llama.forward(params, cfg, jnp.zeros((3, 1), jnp.int32), jnp.zeros((3, 1), jnp.int32),
                  llama.init_cache(cfg, 3, 4), prefix=prefix)


def test_rows_at_different_depths(model):
  """Rows of one batch prefilled to different lengths (right padding) then decoded token by token."""
  cfg, params = model
  lens = np.array([3, 11, 7, 1])
  total = 16
  seqs = np.asarray(jax.random.randint(jax.random.key(2), (4, total), 0, cfg.vocab_size))
  width = int(lens.max())
  prompts = np.where(np.arange(width)[None] < lens[:, None], seqs[:, :width], 0)
  cache = llama.init_cache(cfg, 4, 32)
  last, cache = decode.prefill(params, cfg, jnp.asarray(prompts), jnp.asarray(lens), cache)
  per_row = [[np.asarray(last[r])] for r in range(4)]
  # Each row continues from its own depth: row r feeds seqs[r, lens[r] + i] at position lens[r] + i.
  for i in range(total - width):
    pos = lens + i
    tok = seqs[np.arange(4), pos]
    step_logits, cache = llama.forward(params, cfg, jnp.asarray(tok[:, None]), jnp.asarray(pos[:, None]), cache)
    for r in range(4):
      per_row[r].append(np.asarray(step_logits[r, 0]))
  for r in range(4):
    n = len(per_row[r])
    ref, _ = llama.forward(params, cfg, jnp.asarray(seqs[r:r + 1, :lens[r] + n - 1]),
                           jnp.arange(lens[r] + n - 1)[None])
    np.testing.assert_allclose(np.stack(per_row[r]), ref[0, lens[r] - 1:], atol=1e-5, rtol=0)


def test_padding_positions_do_not_touch_cache(model):
  cfg, params = model
  cache = llama.init_cache(cfg, 1, 8)
  tokens = jnp.array([[5, 6, 7]], jnp.int32)
  _, cache = llama.forward(params, cfg, tokens, jnp.array([[0, -1, -1]], jnp.int32), cache)
  k0, v0 = np.asarray(cache.k[0][0]), np.asarray(cache.v[0][0])  # [KV, Dh, L], [KV, L, Dh]
  assert np.abs(k0[..., 0]).sum() > 0 and np.all(k0[..., 1:] == 0)
  assert np.abs(v0[:, 0]).sum() > 0 and np.all(v0[:, 1:] == 0)


def test_bf16_compute_close_to_fp32(model):
  cfg, params = model
  cfg16 = tiny_cfg(dtype="bfloat16")
  tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(16), (2, 16))
  ref, _ = llama.forward(params, cfg, tokens, pos)
  out, _ = llama.forward(params, cfg16, tokens, pos)
  assert out.dtype == jnp.float32
  err = float(jnp.abs(out - ref).max())
  assert 0 < err < 0.05, err
