"""Attention / MLP kernels (`LlamaConfig.kernel`): every kernel, with and without a shared prefix, decodes exactly
(against uncached forwards), the kernels agree with each other, and the choice is static (never the backend's)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsp_jax.model import convert, decode, llama

# Grouped-query attention: 4 query heads share 2 kv heads (G = 2).
CFG = llama.LlamaConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)
PROMPT_LENS = np.array([4, 7], np.int32)  # shared prefix: P = 2 prompts ...
ROWS_PER_PROMPT = 3  # ... continued by N = 3 rows each
ROW_LENS = np.array([5, 9, 2], np.int32)  # no prefix: 3 rows prefilled to different depths
STEPS = 4  # T = 1 decode steps after the prefill
TOL = 1e-4


@functools.lru_cache(maxsize=None)
def params() -> llama.Params:
  """Seeded normal(0, 0.2) weights, normal(1, 0.1) norm scales: attention far from uniform, logits O(1)."""
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(1.0 if s.ndim == 1 else 0.0, 0.1 if s.ndim == 1 else 0.2,
                                                       s.shape), s.dtype), llama.abstract_params(CFG))


def uncached(seqs: list[np.ndarray]) -> np.ndarray:
  """Logits of one uncached forward over right-padded sequences (padding at position -1). -> [B, max_len, V]."""
  width = max(len(s) for s in seqs)
  tokens = np.zeros((len(seqs), width), np.int32)
  positions = np.full((len(seqs), width), -1, np.int32)
  for r, s in enumerate(seqs):
    tokens[r, :len(s)], positions[r, :len(s)] = s, np.arange(len(s))
  logits, _ = llama.forward(params(), CFG, jnp.asarray(tokens), jnp.asarray(positions))
  return np.asarray(logits)


@functools.lru_cache(maxsize=None)
def decoded(kernel: str, shared: bool) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, llama.KVCache]:
  """Prefill, then STEPS T = 1 decode steps under `kernel`, with or without a shared `PrefixKV`.

  Returns each row's full token sequence, the logits that predict its tokens after the prompt [B, STEPS + 1, V],
  the prefill logits [P or B, Lp, V] and the final cache.
  """
  cfg = dataclasses.replace(CFG, kernel=kernel)
  rng = np.random.default_rng(1)
  lens = PROMPT_LENS if shared else ROW_LENS
  width = int(lens.max())
  prompts = np.where(np.arange(width)[None] < lens[:, None], rng.integers(0, CFG.vocab_size, (len(lens), width)), 0)
  prompt_logits, prompt_cache = llama.forward(params(), cfg, jnp.asarray(prompts, jnp.int32),
                                              decode.prompt_positions(jnp.asarray(lens), width),
                                              llama.init_cache(cfg, len(lens), width))
  last = np.asarray(prompt_logits)[np.arange(len(lens)), lens - 1]  # [P or B, V]
  if shared:  # row b continues prompt b // N in a cache that holds only its continuation
    prefix = llama.PrefixKV(cache=prompt_cache, lens=jnp.asarray(lens))
    row_prompt = np.repeat(np.arange(len(lens)), ROWS_PER_PROMPT)  # [B]
    cache = llama.init_cache(cfg, len(row_prompt), STEPS)
  else:  # row b continues its own prompt in its own cache
    prefix, row_prompt, cache = None, np.arange(len(lens)), llama.grow_cache(prompt_cache, width + STEPS)
  b = len(row_prompt)
  cont = rng.integers(0, CFG.vocab_size, (b, STEPS)).astype(np.int32)  # [B, STEPS]
  steps = [last[row_prompt]]
  for i in range(STEPS):
    pos = lens[row_prompt][:, None] + i  # [B, 1]: each row at its own depth
    logits, cache = llama.forward(params(), cfg, jnp.asarray(cont[:, i:i + 1]), jnp.asarray(pos), cache,
                                  prefix=prefix)
    steps.append(np.asarray(logits[:, 0]))
  seqs = [np.concatenate([prompts[p, :lens[p]], cont[r]]) for r, p in enumerate(row_prompt)]
  return seqs, np.stack(steps, axis=1), np.asarray(prompt_logits), cache


@pytest.mark.parametrize("shared", [False, True], ids=["own_cache", "shared_prefix"])
@pytest.mark.parametrize("kernel", llama.KERNELS)
def test_cached_decode_equals_uncached_forward(kernel, shared):
  seqs, got, _, _ = decoded(kernel, shared)
  ref = uncached(seqs)  # [B, L, V]
  for r, seq in enumerate(seqs):
    pl = len(seq) - STEPS
    np.testing.assert_allclose(got[r], ref[r, pl - 1:len(seq)], atol=TOL, rtol=0, err_msg=f"row {r}")
  # Not vacuous: the logits depend on the context (different rows of one prompt, and positions, differ).
  assert np.abs(got[0, 1:] - got[1, 1:]).max() > 100 * TOL and np.abs(np.diff(got[0], axis=0)).max() > 100 * TOL


@pytest.mark.parametrize("shared", [False, True], ids=["own_cache", "shared_prefix"])
def test_kernels_agree(shared):
  _, xla_logits, xla_prefill, xla_cache = decoded("xla", shared)
  _, cpu_logits, cpu_prefill, cpu_cache = decoded("cpu", shared)
  np.testing.assert_array_equal(cpu_prefill, xla_prefill)  # T > 1: the same program
  np.testing.assert_allclose(cpu_logits, xla_logits, atol=1e-5, rtol=0)
  for a, b in zip(jax.tree.leaves(cpu_cache), jax.tree.leaves(xla_cache), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("t", [1, 3])
def test_attend_kernels_agree(t):
  """`attend` itself, with a shared prefix and masked keys: the kernels agree at T = 1 and coincide at T > 1."""
  b, p, h, kv, dh, s, lp = 4, 2, 4, 2, 8, 6, 5
  rng = np.random.default_rng(2)
  q, k, v, k_p, v_p = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in (
      (b, t, h, dh), (b, kv, dh, s), (b, kv, s, dh), (p, kv, dh, lp), (p, kv, lp, dh)))
  q_pos = jnp.asarray(np.array([[3], [5], [0], [2]]) + np.arange(t)[None], jnp.int32)  # [B, T]
  k_pos = np.broadcast_to(np.arange(s), (b, s)).copy()
  k_pos[1, 4] = -1  # [B, S], one empty slot
  shared = (k_p, v_p, jnp.asarray(np.arange(lp)[None] < np.array([[3], [5]])))  # [P, Lp] visibility
  k_pos = jnp.asarray(k_pos, jnp.int32)
  attend = jax.jit(llama.attend, static_argnames="kernel")  # one compile, not one per op
  for sh in (None, shared):
    xla = attend(q, k, v, q_pos, k_pos, sh, kernel="xla")
    cpu = attend(q, k, v, q_pos, k_pos, sh, kernel="cpu")
    assert xla.shape == cpu.shape == (b, t, h, dh)
    if t == 1:
      np.testing.assert_allclose(cpu, xla, atol=1e-5, rtol=0)
    else:
      np.testing.assert_array_equal(cpu, xla)
  with pytest.raises(ValueError, match="unknown attention kernel 'gpu'"):
    llama.attend(q, k, v, q_pos, k_pos, kernel="gpu")


def packed_documents(lens_per_row: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
  """Segment ids and positions of rows packed with documents of the given lengths, right-padded. -> [B, T] x 2."""
  ids = np.zeros((len(lens_per_row), width), np.int32)
  for r, lens in enumerate(lens_per_row):
    ends = np.cumsum(lens)
    for i, (start, end) in enumerate(zip(ends - lens, ends)):
      ids[r, start:end] = i + 1
  idx = np.broadcast_to(np.arange(width), ids.shape)
  starts = np.where(np.concatenate([np.ones_like(ids[:, :1], bool), ids[:, 1:] != ids[:, :-1]], axis=1), idx, 0)
  return ids, np.where(ids > 0, idx - np.maximum.accumulate(starts, axis=1), -1).astype(np.int32)


@pytest.mark.parametrize("width", [97, 352])
@pytest.mark.parametrize("packed", [False, True], ids=["plain_rows", "packed_documents"])
def test_causal_blocks_equal_the_masked_whole_row(width, packed):
  """The "cpu" kernel's causal query blocks (no-cache rows longer than CAUSAL_BLOCK: 2 uneven blocks of 97
  columns, 4 of 352) against the "xla" kernel's whole-row attention, at every column that is not padding."""
  b, h, kv, dh = 3, 4, 2, 8
  if packed:
    ids, pos = packed_documents([[30, width - 40], [width], [5, 60, width - 70]], width)
    seg = llama.Segments.documents(jnp.asarray(ids))
  else:
    lens = np.array([width, width - 50, 7])
    pos = np.where(np.arange(width)[None] < lens[:, None], np.arange(width)[None], -1).astype(np.int32)
    ids, seg = pos + 1, None
  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in (
      (b, width, h, dh), (b, kv, dh, width), (b, kv, width, dh)))
  pos = jnp.asarray(pos)
  attend = jax.jit(llama.attend, static_argnames=("kernel", "causal_columns"))
  blocks = attend(q, k, v, pos, pos, kernel="cpu", segments=seg, causal_columns=True)
  whole = attend(q, k, v, pos, pos, kernel="xla", segments=seg, causal_columns=True)
  real = ids > 0
  np.testing.assert_allclose(np.asarray(blocks)[real], np.asarray(whole)[real], atol=1e-5, rtol=0)
  # Not vacuous: the "cpu" kernel took the block path (another program), and its last block reads the first
  # column's value (row 1 / row 0: one sequence over the whole row).
  lowered = {kern: attend.lower(q, k, v, pos, pos, kernel=kern, segments=seg, causal_columns=True).as_text()
             for kern in ("cpu", "xla")}
  assert lowered["cpu"] != lowered["xla"]
  r = 1 if packed else 0
  moved = attend(q, k, v.at[r, :, 0].add(10.0), pos, pos, kernel="cpu", segments=seg, causal_columns=True)
  assert np.abs(np.asarray(moved)[r, -1] - np.asarray(blocks)[r, -1]).max() > 1e-3


def test_causal_blocks_train_like_whole_rows():
  """Gradients of a packed-row loss through `forward` (no cache: causal blocks under "cpu") equal the "xla"
  kernel's: padding queries, whose outputs differ between kernels, reach no loss."""
  cfg = dataclasses.replace(CFG, max_seq_len=256)
  ids, pos = packed_documents([[100, 90], [150], [20, 20, 160]], 200)
  tokens = jnp.asarray(np.random.default_rng(4).integers(0, CFG.vocab_size, ids.shape), jnp.int32)
  seg, pos, mask = llama.Segments.documents(jnp.asarray(ids)), jnp.asarray(pos), jnp.asarray(ids > 0)

  def loss(p, kernel):
    logits, _ = llama.forward(p, dataclasses.replace(cfg, kernel=kernel), tokens, pos, segments=seg)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # [B, T - 1]
    return -jnp.sum(jnp.where(mask[:, 1:] & (seg.ids[:, 1:] == seg.ids[:, :-1]), picked, 0.0))

  grads = {kern: jax.grad(loss)(params(), kern) for kern in ("cpu", "xla")}
  for a, g in zip(jax.tree.leaves(grads["cpu"]), jax.tree.leaves(grads["xla"]), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(g), atol=1e-4, rtol=1e-4)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["xla"])) > 1e-2


def test_kernel_is_static_and_keeps_the_cached_prefill(monkeypatch):
  """The programs depend on cfg.kernel alone: tracing never asks for the backend, a decode step's program differs
  between kernels, and a prefill into a cache is the same (uncached rows: `test_causal_blocks_*`)."""
  def no_backend(*args, **kwargs):
    raise AssertionError("the model asked for jax.default_backend()")
  monkeypatch.setattr(jax, "default_backend", no_backend)
  texts = {}
  for kernel in llama.KERNELS:
    cfg = dataclasses.replace(CFG, kernel=kernel, max_seq_len=63)  # a config no other test traced
    for t in (1, 5):
      tok = jnp.zeros((2, t), jnp.int32)
      texts[kernel, t] = llama.forward.lower(params(), cfg, tok, tok, llama.init_cache(cfg, 2, 8)).as_text()
  assert texts["cpu", 1] != texts["xla", 1]
  assert texts["cpu", 5] == texts["xla", 5]


def test_kernel_for_platform():
  assert llama.kernel_for_platform("cpu") == "cpu"
  assert llama.kernel_for_platform("gpu") == llama.kernel_for_platform("cuda") == "cudnn"  # NVIDIA (CUDA) only
  for platform in ("tpu", "rocm", "METAL"):
    assert llama.kernel_for_platform(platform) == "xla"
  assert set(map(llama.kernel_for_platform, ("cpu", "tpu", "gpu"))) == set(llama.KERNELS)
  assert CFG.kernel == "xla"  # the default: the portable reference


@pytest.mark.parametrize("kernel", ["gpu", "CPU", "", None])
def test_bad_kernel_raises(kernel):
  with pytest.raises(ValueError, match=r"LlamaConfig.kernel must be one of \('xla', 'cpu', 'cudnn'\)"):
    dataclasses.replace(CFG, kernel=kernel)
  with pytest.raises(ValueError, match="LlamaConfig.kernel must be one of"):
    llama.LlamaConfig.from_preset("tiny", kernel=kernel)


def test_kernel_is_not_written_to_hf_config():
  cfg = dataclasses.replace(CFG, kernel="cpu")
  hf = convert.config_to_hf(cfg)
  assert "kernel" not in hf and hf == convert.config_to_hf(CFG)
  assert convert.config_from_hf(hf).kernel == "xla"
  assert convert.config_from_hf(hf, kernel="cpu") == cfg
  assert convert.config_from_hf(hf, kernel="cpu", remat=True) == dataclasses.replace(cfg, remat=True)
  assert llama.abstract_params(cfg) == llama.abstract_params(CFG)  # same parameter tree: checkpoints load as before
