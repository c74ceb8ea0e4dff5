"""Llama (CodeLlama) in Flax NNX, with pure-functional entry points.

The modules below define the architecture; the public entry points are pure functions of explicit pytrees:

    params = init_params(cfg, key)                      # nested dict of arrays
    cache = init_cache(cfg, batch, max_len)             # KVCache pytree
    logits, cache = forward(params, cfg, tokens, positions, cache)

`forward` merges the (cached, static) NNX graph definition with `params` inside jit, so nothing mutable crosses
the jit boundary. Layout follows HF `LlamaForCausalLM` (RMSNorm, rotate-half RoPE, grouped-query attention,
SwiGLU, untied embeddings) so HF weights load unchanged up to transposes (see `convert.py`).

KV cache semantics: token `t` of row `b` is written at cache slot `positions[b, t]`; a query at position `p`
attends to the slots `0..p` of its row. Rows therefore sit at independent depths (the tree search relies on
this) and must be filled contiguously from slot 0. A negative position marks a padding token: it is not
written to the cache and its output is meaningless. Keys are stored transposed ([B, KV, Dh, L]) so that q.K^T
needs no transpose and, under the "cpu" kernel, a decode query's scores are a sum of Dh rows vectorised along L.
A step reads the whole cache, so decoding loops keep it as short as what they have filled (`grow_cache`).

Shared prefixes (`PrefixKV`): when B = P * N rows continue P prompts (row b continues prompt b // N), the
prompts' keys/values are stored once, and each row's cache holds only what follows its prompt: the token at
position p of row b sits at slot p - len[b // N]. Attention reads the prompt's keys once for its N rows (a
matmul, or on "cpu" kernel decode steps a loop broadcasting them over the rows) instead of once per row, and a
row's cache is as long as its continuation, not prompt + continuation.

Kernels (`LlamaConfig.kernel`, static; the model never looks at the backend): "xla" is batched-einsum attention
and separate matmuls (TPU, the reference); "cpu" runs decode steps (T == 1) as fused elementwise score/value
loops and fused q|k|v, gate|up matmuls, tree rows with a block layout (`Segments.chunk_len`) block by block, other
no-cache rows in causal query blocks (no scores for keys right of a query), and the rest as "xla" does; "cudnn"
(NVIDIA GPUs) runs the attention of T > 1 calls without a shared prefix (training, prefill) as cuDNN's fused
attention (`jax.nn.dot_product_attention(implementation="cudnn")`) where cuDNN takes the shapes (`cudnn_applies`:
bf16 / fp16, head_dim a multiple of 8 up to 128), and everything else as "xla" does.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from tsp_jax.model import sharding

Params = dict[str, Any]
_NEG_INF = -1e30  # finite, so a fully masked (padding) row gives a uniform softmax, not NaN
# "cpu" kernel: no-cache rows longer than this attend in query blocks of at most this many columns (a pre-training
# step on rows of 352 tokens 1.15-1.17x faster than with whole rows: `python -m tsp_jax.bench.train_step --kernels`).
CAUSAL_BLOCK = 96
KERNELS = ("xla", "cpu", "cudnn")  # LlamaConfig.kernel values (see the module docstring)


def kernel_for_platform(platform: str) -> str:
  """The kernel (one of `KERNELS`) that runs fastest on a JAX platform: "cpu" for "cpu", "cudnn" for NVIDIA GPUs
  ("gpu", what `jax.default_backend()` says for CUDA, or "cuda"), "xla" otherwise (TPU, ROCm, ...).

  Top-level code calls it as `llama.kernel_for_platform(jax.default_backend())` when it builds a model config
  (`LlamaConfig(..., kernel=...)` or `dataclasses.replace(cfg, kernel=...)`); the model itself never looks at the
  backend.
  """
  return {"cpu": "cpu", "gpu": "cudnn", "cuda": "cudnn"}.get(platform, "xla")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Static hyper-parameters of a Llama model (hashable: passed to jit as a static argument)."""
  vocab_size: int
  dim: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  ffn_dim: int
  rope_theta: float = 1e6
  norm_eps: float = 1e-5
  max_seq_len: int = 16384
  dtype: str = "float32"  # activation / matmul dtype ("bfloat16" on TPU/GPU)
  param_dtype: str = "float32"  # storage dtype of the weights
  remat: bool = False  # recompute each block's activations in the backward pass (no-cache forwards only)
  kernel: str = "xla"  # attention / MLP kernel, one of KERNELS (a runtime choice, like dtype and remat)

  def __post_init__(self):
    for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
      if getattr(self, name) <= 0:
        raise ValueError(f"LlamaConfig.{name} must be positive, got {getattr(self, name)}")
    if self.dim % self.n_heads:
      raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
    if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads:
      raise ValueError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.n_kv_heads}")
    if (self.dim // self.n_heads) % 2:
      raise ValueError(f"head_dim {self.dim // self.n_heads} must be even for RoPE")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"LlamaConfig.{name} must be float32, bfloat16 or float16, got {getattr(self, name)!r}")
    if self.kernel not in KERNELS:
      raise ValueError(f"LlamaConfig.kernel must be one of {KERNELS}, got {self.kernel!r}")

  @property
  def head_dim(self) -> int:
    return self.dim // self.n_heads

  @classmethod
  def codellama_7b(cls, **overrides) -> LlamaConfig:
    """CodeLlama-7B(-Instruct): 6,738,546,688 parameters."""
    return cls(**{**dict(vocab_size=32016, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=11008),
                  **overrides})

  @classmethod
  def codellama_13b(cls, **overrides) -> LlamaConfig:
    """CodeLlama-13B(-Instruct)."""
    return cls(**{**dict(vocab_size=32016, dim=5120, n_layers=40, n_heads=40, n_kv_heads=40, ffn_dim=13824),
                  **overrides})

  @classmethod
  def codellama_34b(cls, **overrides) -> LlamaConfig:
    """CodeLlama-34B(-Instruct): grouped-query attention with 8 kv heads."""
    return cls(**{**dict(vocab_size=32000, dim=8192, n_layers=48, n_heads=64, n_kv_heads=8, ffn_dim=22016),
                  **overrides})

  @classmethod
  def tiny(cls, **overrides) -> LlamaConfig:
    """Small-model mode (CPU): dim 256, 6 layers, vocab 4096."""
    return cls(**{**dict(vocab_size=4096, dim=256, n_layers=6, n_heads=8, n_kv_heads=4, ffn_dim=688,
                         max_seq_len=2048), **overrides})

  @classmethod
  def from_preset(cls, name: str, **overrides) -> LlamaConfig:
    """A named preset (`codellama_7b`, `codellama_13b`, `codellama_34b`, `tiny`) with field overrides."""
    presets = {"codellama_7b": cls.codellama_7b, "codellama_13b": cls.codellama_13b,
               "codellama_34b": cls.codellama_34b, "tiny": cls.tiny}
    if name not in presets:
      raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(presets)}")
    return presets[name](**overrides)

  def num_params(self) -> int:
    """Parameter count from abstract shapes (allocates nothing)."""
    return sum(int(x.size) for x in jax.tree.leaves(abstract_params(self)))


# ----------------------------------------------------------------------------------------------------------
# Pure numerical building blocks (also the units of the HF parity tests).


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """RMSNorm computed in float32; returns x's dtype. x: [..., D], scale: [D]."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (y * scale.astype(jnp.float32).reshape((1,) * (x.ndim - 1) + (-1,))).astype(x.dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables in the HF rotate-half layout. positions: [B, T] -> two [B, T, head_dim] float32."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))  # [head_dim/2]
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq[None, None, :]  # [B, T, head_dim/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, head_dim]
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotary embedding, rotate-half layout. x: [B, T, N, head_dim]; cos, sin: [B, T, head_dim]."""
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


def _decode_scores_cpu(q: jax.Array, k: jax.Array) -> jax.Array:
  """Scores of one query per row ("cpu" kernel). q: [..., KV, G, Dh]; k: [..., KV, Dh, S] (leading axes broadcast)
  -> [..., KV, G, S] float32.

  Written as Dh multiply-adds of [S]-long rows, which XLA fuses into one vectorised elementwise loop that streams
  the keys once (~3x faster on CPU than a batched [G, Dh] x [Dh, S] matmul or a multiply-reduce over Dh).
  """
  q = q.astype(jnp.float32)
  k = k.astype(jnp.float32)
  scores = q[..., 0, None] * k[..., None, 0, :]
  for d in range(1, q.shape[-1]):
    scores = scores + q[..., d, None] * k[..., None, d, :]
  return scores


def cudnn_applies(q: jax.Array, shared: object | None) -> bool:
  """Whether the "cudnn" kernel runs an attention call through cuDNN's fused kernel (static: shapes and dtypes).

  q: [B, T, H, Dh]. cuDNN's flash attention takes bf16 / fp16 with head_dim a multiple of 8 up to 128; a decode
  step (T == 1) reads its cache once either way, and a shared prefix needs two key sets under one softmax.
  """
  return (q.shape[1] > 1 and shared is None and q.dtype in (jnp.bfloat16, jnp.float16)
          and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128)


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, visible: jax.Array, implementation: str) -> jax.Array:
  """Attention by `jax.nn.dot_product_attention` (cuDNN's fused kernel with implementation "cudnn"; "xla": the
  same call on any backend, what the CPU tests compare). q: [B, T, H, Dh] (already scaled); k: [B, KV, Dh, S],
  v: [B, KV, S, Dh] (the cache layout); visible: [B, T, S] bool. Returns [B, T, H, Dh] in q's dtype.

  A query that sees no key (a padding token) sees every key instead: its output is meaningless either way, and
  no kernel is then asked for a softmax over nothing.
  """
  visible = visible | ~jnp.any(visible, axis=-1, keepdims=True)
  return jax.nn.dot_product_attention(q, k.transpose(0, 3, 1, 2), v.transpose(0, 2, 1, 3), mask=visible[:, None],
                                      scale=1.0, implementation=implementation)


def _visible(q_pos: jax.Array, k_pos: jax.Array, q_seg: Segments | None, k_ids: jax.Array | None) -> jax.Array:
  """Which keys each query sees: causal by position, and with segments `Segments`' rule. q_pos: [B, T]; k_pos,
  k_ids: [B, S] (k_ids None without segments) -> [B, T, S] bool."""
  visible = (k_pos[:, None, :] <= q_pos[:, :, None]) & (k_pos[:, None, :] >= 0)
  if q_seg is not None:
    visible &= (k_ids[:, None, :] == q_seg.ids[:, :, None]) | (k_ids[:, None, :] == q_seg.root[:, :, None])
  return visible


def tree_attention(q: jax.Array, k: jax.Array, v: jax.Array, positions: jax.Array, segments: Segments) -> jax.Array:
  """Attention of tree rows block by block (the "cpu" kernel): equal to the whole-row masked attention of `attend`
  for the layout `Segments.chunk_len` promises, without the blocks that layout leaves unseen.

  A row is a prefix region of Lp = `segments.prefix_len` columns, then N chunks of C = `segments.chunk_len`; a
  prefix query sees only the prefix region, a chunk's query only the prefix region and its own chunk. So the
  prefix region's scores are [Lp, Lp] and each chunk's [C, Lp + C] under one softmax: Lp^2 + N C (Lp + C) scores
  per row and head instead of (Lp + N C)^2.
  q: [B, T, H, Dh] (already scaled); k: [B, KV, Dh, T]; v: [B, KV, T, Dh]; positions: [B, T]. -> [B, T, H, Dh].
  """
  b, t, h, dh = q.shape
  kv = k.shape[1]
  g, lp, c = h // kv, segments.prefix_len, segments.chunk_len
  n = (t - lp) // c
  ids, root = segments.ids, segments.root
  q = q.reshape(b, t, kv, g, dh)
  k_p, v_p = k[..., :lp], v[:, :, :lp]  # [B, KV, Dh, Lp], [B, KV, Lp, Dh]
  # The prefix region: its queries against its keys.
  seg_p = Segments(ids=ids[:, :lp], root=root[:, :lp])
  vis_pp = _visible(positions[:, :lp], positions[:, :lp], seg_p, ids[:, :lp])  # [B, Lp, Lp]
  s_pp = jnp.einsum("btkgd,bkds->bkgts", q[:, :lp], k_p, preferred_element_type=jnp.float32)  # [B, KV, G, Lp, Lp]
  probs_pp = jax.nn.softmax(jnp.where(vis_pp[:, None, None], s_pp, _NEG_INF), axis=-1).astype(v.dtype)
  out_p = jnp.einsum("bkgts,bksd->btkgd", probs_pp, v_p)  # [B, Lp, KV, G, Dh]
  # The chunks: each query against the prefix region's keys and its chunk's, under one softmax.
  chunk = lambda x: x[:, lp:].reshape(b, n, c, *x.shape[2:])  # [B, T, ...] -> [B, N, C, ...]
  q_c, pos_c, ids_c, root_c = chunk(q), chunk(positions), chunk(ids), chunk(root)  # [B, N, C, ...]
  k_c = k[..., lp:].reshape(b, kv, dh, n, c)  # [B, KV, Dh, N, C]
  v_c = v[:, :, lp:].reshape(b, kv, n, c, dh)  # [B, KV, N, C, Dh]
  flat = lambda x: x.reshape(b * n, c)  # [B, N, C] -> [B * N, C]
  vis_cp = _visible(pos_c.reshape(b, n * c), positions[:, :lp], Segments(ids=ids_c.reshape(b, n * c),
                                                                          root=root_c.reshape(b, n * c)),
                    ids[:, :lp]).reshape(b, n, c, lp)  # [B, N, C, Lp]
  vis_cc = _visible(flat(pos_c), flat(pos_c), Segments(ids=flat(ids_c), root=flat(root_c)),
                    flat(ids_c)).reshape(b, n, c, c)  # [B, N, C, C]
  s_cp = jnp.einsum("bntkgd,bkds->bnkgts", q_c, k_p, preferred_element_type=jnp.float32)  # [B, N, KV, G, C, Lp]
  s_cc = jnp.einsum("bntkgd,bkdns->bnkgts", q_c, k_c, preferred_element_type=jnp.float32)  # [B, N, KV, G, C, C]
  scores = jnp.concatenate([jnp.where(vis_cp[:, :, None, None], s_cp, _NEG_INF),
                            jnp.where(vis_cc[:, :, None, None], s_cc, _NEG_INF)], axis=-1)  # [B, N, KV, G, C, Lp+C]
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out_c = (jnp.einsum("bnkgts,bksd->bntkgd", probs[..., :lp], v_p) +
           jnp.einsum("bnkgts,bknsd->bntkgd", probs[..., lp:], v_c))  # [B, N, C, KV, G, Dh]
  return jnp.concatenate([out_p, out_c.reshape(b, n * c, kv, g, dh)], axis=1).reshape(b, t, h, dh)


def causal_block_attention(q: jax.Array, k: jax.Array, v: jax.Array, positions: jax.Array,
                           segments: Segments | None) -> jax.Array:
  """Attention of no-cache rows in query blocks (the "cpu" kernel): block i's queries against the keys of the
  columns up to the block's end, never the blocks to its right, which no query sees (`forward`'s no-cache rule).

  Equal to the whole-row masked attention of `attend` for every query that sees a key (a padding query, which sees
  none, averages the values of its block's span instead of the row's). With blocks of at most `CAUSAL_BLOCK`
  columns, N blocks compute (N + 1) / (2 N) of the [T, T] scores: 5/8 for rows of 352 in 4 blocks of 88.
  q: [B, T, H, Dh] (already scaled); k: [B, KV, Dh, T]; v: [B, KV, T, Dh]; positions: [B, T]. -> [B, T, H, Dh].
  """
  b, t, h, dh = q.shape
  kv = k.shape[1]
  n = -(-t // CAUSAL_BLOCK)
  bounds = [round(i * t / n) for i in range(n + 1)]
  q = q.reshape(b, t, kv, h // kv, dh)
  outs = []
  for start, end in zip(bounds[:-1], bounds[1:]):
    q_seg = None if segments is None else Segments(ids=segments.ids[:, start:end], root=segments.root[:, start:end])
    visible = _visible(positions[:, start:end], positions[:, :end], q_seg,
                       None if segments is None else segments.ids[:, :end])  # [B, C, end]
    scores = jnp.einsum("btkgd,bkds->bkgts", q[:, start:end], k[..., :end],
                        preferred_element_type=jnp.float32)  # [B, KV, G, C, end]
    probs = jax.nn.softmax(jnp.where(visible[:, None, None], scores, _NEG_INF), axis=-1).astype(v.dtype)
    outs.append(jnp.einsum("bkgts,bksd->btkgd", probs, v[:, :, :end]))  # [B, C, KV, G, Dh]
  return jnp.concatenate(outs, axis=1).reshape(b, t, h, dh)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, q_pos: jax.Array, k_pos: jax.Array,
           shared: tuple[jax.Array, jax.Array, jax.Array] | None = None, *, kernel: str,
           segments: Segments | None = None, causal_columns: bool = False) -> jax.Array:
  """Grouped-query causal attention by positions.

  q: [B, T, H, Dh] (already scaled); k: [B, KV, Dh, S] and v: [B, KV, S, Dh] (the cache layout: keys
  transposed, each (row, kv head) of v one contiguous [S, Dh] matrix); q_pos: [B, T]; k_pos: [B, S].
  Key s is visible to query t iff 0 <= k_pos[s] <= q_pos[t] (and, with segments, `Segments`' rule holds).
  segments: optional packed rows (no cache: S == T).
  shared: optional keys [P, KV, Dh, Lp], values [P, KV, Lp, Dh] and visibility [P, Lp] (bool) of P prompts;
  row b (B = P * N) attends to prompt b // N as well, under one softmax over both key sets.
  causal_columns: the keys are the queries' own columns (S == T, k_pos is q_pos) and no key right of a query's
    column is visible to it (static; `forward` without a cache).
  kernel: one of `KERNELS` (static): "cpu" computes a decode step (T == 1) as elementwise loops, tree rows
    (`Segments.chunk_len` > 0) block by block (`tree_attention`) and other `causal_columns` rows longer than
    `CAUSAL_BLOCK` in query blocks (`causal_block_attention`), "cudnn" the calls `cudnn_applies` to as cuDNN's
    fused attention, "xla" (and the others elsewhere) as batched einsums over whole rows, masked.
  Returns [B, T, H, Dh] in q's dtype.
  """
  if kernel not in KERNELS:
    raise ValueError(f"unknown attention kernel {kernel!r}; expected one of {KERNELS}")
  b, t, h, dh = q.shape
  kv = k.shape[1]
  g = h // kv
  if kernel == "cpu" and segments is not None and segments.chunk_len:
    return tree_attention(q, k, v, q_pos, segments)
  if kernel == "cpu" and causal_columns and shared is None and t > CAUSAL_BLOCK:
    return causal_block_attention(q, k, v, q_pos, segments)
  visible = _visible(q_pos, k_pos, segments, None if segments is None else segments.ids)  # [B, T, S]
  if kernel == "cudnn" and cudnn_applies(q, shared):
    return fused_attention(q, k, v, visible, "cudnn")
  q = q.reshape(b, t, kv, g, dh)  # [B, T, KV, G, Dh]
  cpu_decode = kernel == "cpu" and t == 1
  if cpu_decode:
    scores = _decode_scores_cpu(q[:, 0], k)[:, :, :, None, :]  # [B, KV, G, 1, S]
  else:
    scores = jnp.einsum("btkgd,bkds->bkgts", q, k, preferred_element_type=jnp.float32)
  scores = jnp.where(visible[:, None, None, :, :], scores, _NEG_INF)
  if shared is not None:
    k_p, v_p, visible_p = shared
    p, lp = visible_p.shape
    q_p = q.reshape(p, b // p, t, kv, g, dh)
    if cpu_decode:  # the prompt's keys broadcast over its N rows: no transposes around a batched matmul
      scores_p = _decode_scores_cpu(q_p[:, :, 0], k_p[:, None]).reshape(b, kv, g, 1, lp)  # [B, KV, G, 1, Lp]
    else:
      scores_p = jnp.einsum("pntkgd,pkds->pnkgts", q_p, k_p,
                            preferred_element_type=jnp.float32).reshape(b, kv, g, t, lp)  # [B, KV, G, T, Lp]
    visible_p = jnp.repeat(visible_p, b // p, axis=0)  # [B, Lp]
    scores = jnp.concatenate([jnp.where(visible_p[:, None, None, None, :], scores_p, _NEG_INF), scores], axis=-1)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # [B, KV, G, T, (Lp +) S]
  if shared is not None:
    probs_p, probs = probs[..., :lp], probs[..., lp:]
  if cpu_decode:
    # A multiply-reduce over S streams each [S, Dh] block of v once (XLA's batched matmul is ~3x slower here).
    out = jnp.sum(probs[:, :, :, 0, :, None] * v[:, :, None, :, :], axis=-2)[:, None]  # [B, 1, KV, G, Dh]
  else:
    out = jnp.einsum("bkgts,bksd->btkgd", probs, v)
  if shared is not None and cpu_decode:
    out = out + jnp.sum(probs_p.reshape(p, b // p, kv, g, lp, 1) * v_p[:, None, :, None, :, :],
                        axis=-2).reshape(b, 1, kv, g, dh)  # [B, 1, KV, G, Dh]
  elif shared is not None:
    out = out + jnp.einsum("pnkgts,pksd->pntkgd", probs_p.reshape(p, b // p, kv, g, t, lp),
                           v_p).reshape(b, t, kv, g, dh)
  return out.reshape(b, t, h, dh)


# ----------------------------------------------------------------------------------------------------------
# KV cache.


@flax.struct.dataclass
class KVCache:
  """Per-layer key/value buffers in the activation dtype: k[i] [B, KV, Dh, L] (transposed), v[i] [B, KV, L, Dh]."""
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]

  @property
  def max_len(self) -> int:
    return self.v[0].shape[2]


@flax.struct.dataclass
class Segments:
  """Packed rows (no cache): several sequences per row, each with its own positions.

  Key k is visible to query q (besides causality by position) iff ids[k] == ids[q] or ids[k] == root[q]. A
  document or a shared prefix has root == its own id; a continuation has its own id and the root of the prefix it
  continues (tree rows: it sees the prefix and itself, never a sibling). 0 marks padding.

  Tree rows may promise a block layout (static): with chunk_len C > 0, a row is a prefix region of `prefix_len`
  columns then chunks of C columns, no key of another chunk visible to a chunk's query and no chunk's key to a
  prefix-region query; the "cpu" kernel then skips those blocks (`tree_attention`), the others mask them.
  """
  ids: jax.Array  # [B, T] int32
  root: jax.Array  # [B, T] int32
  prefix_len: int = flax.struct.field(pytree_node=False, default=0)
  chunk_len: int = flax.struct.field(pytree_node=False, default=0)  # 0: no block layout

  @classmethod
  def documents(cls, ids: jax.Array) -> Segments:
    """Rows of whole sequences, each attending only to itself."""
    return cls(ids=ids, root=ids)


@flax.struct.dataclass
class PrefixKV:
  """Keys/values of P prompts shared by the B = P * N rows of a batch (row b continues prompt b // N)."""
  cache: KVCache  # P rows: each prompt's keys/values from slot 0
  lens: jax.Array  # [P] int32: prompt lengths


CACHE_K_AXES = ("batch", "kv_heads", "head_dim", "length")
CACHE_V_AXES = ("batch", "kv_heads", "length", "head_dim")


def cache_shapes(cfg: LlamaConfig, batch_size: int, max_len: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Shapes of one layer's key and value buffers."""
  return ((batch_size, cfg.n_kv_heads, cfg.head_dim, max_len), (batch_size, cfg.n_kv_heads, max_len, cfg.head_dim))


def init_cache(cfg: LlamaConfig, batch_size: int, max_len: int, *, mesh: jax.sharding.Mesh | None = None,
               rules: sharding.Rules | None = None) -> KVCache:
  """An all-zero KV cache for `batch_size` rows of `max_len` slots, sharded by `rules` when `mesh` is given."""
  if max_len > cfg.max_seq_len:
    raise ValueError(f"cache length {max_len} exceeds the model's max_seq_len {cfg.max_seq_len}")
  dtype = jnp.dtype(cfg.dtype)

  def zeros(shape, axes):
    if mesh is None:
      return jnp.zeros(shape, dtype)
    spec = sharding.logical_to_spec(axes, rules or sharding.SAMPLE_RULES, shape, mesh)
    return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=jax.sharding.NamedSharding(mesh, spec))()

  k_shape, v_shape = cache_shapes(cfg, batch_size, max_len)
  return KVCache(k=tuple(zeros(k_shape, CACHE_K_AXES) for _ in range(cfg.n_layers)),
                 v=tuple(zeros(v_shape, CACHE_V_AXES) for _ in range(cfg.n_layers)))


def grow_cache(cache: KVCache, max_len: int) -> KVCache:
  """The cache with its length extended to `max_len` slots (new slots zero)."""
  def pad(x, axis):
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, max_len - x.shape[axis])
    return jnp.pad(x, widths)
  return KVCache(k=tuple(pad(k, 3) for k in cache.k), v=tuple(pad(v, 2) for v in cache.v))


def _write_rows(buf: jax.Array, new: jax.Array, positions: jax.Array, length_axis: int) -> jax.Array:
  """Writes new [B, T, KV, Dh] into a cache buffer at per-row slots positions [B, T]; drops pos < 0.

  buf: [B, KV, L, Dh] (length_axis 2) or [B, KV, Dh, L] (length_axis 3).
  """
  b, l = buf.shape[0], buf.shape[length_axis]
  slots = jnp.where((positions >= 0) & (positions < l), positions, l)  # out of range -> dropped
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], positions.shape)
  index = (rows,) + (slice(None),) * (length_axis - 1) + (slots,)  # selects [B, T, KV, Dh]
  return buf.at[index].set(new.astype(buf.dtype), mode="drop")


# ----------------------------------------------------------------------------------------------------------
# NNX modules.


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str, ...], cfg: LlamaConfig,
           std: float | None = 0.02) -> nnx.Param:
  """A parameter tagged with logical axis names; normal(0, std) init, or ones when std is None."""
  dtype = jnp.dtype(cfg.param_dtype)
  value = jnp.ones(shape, dtype) if std is None else std * jax.random.normal(rngs.params(), shape, dtype)
  return nnx.Param(value, axes=axes)


def _fused_decode_matmul(x: jax.Array, kernel: str) -> bool:
  """Whether x [B, T, D] is a decode step under the "cpu" kernel, where one matmul against concatenated weights
  (q|k|v, gate|up) runs ~1.4x faster on CPU than separate ones (M = B rows is small). Decoding loops hoist the
  concatenation out of the loop (the weights are loop-invariant)."""
  return kernel == "cpu" and x.shape[1] == 1


class RMSNorm(nnx.Module):
  """RMSNorm with a learned scale. [..., D] -> [..., D]."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.scale = _param(rngs, (cfg.dim,), ("norm",), cfg, std=None)
    self.eps = cfg.norm_eps

  def __call__(self, x: jax.Array) -> jax.Array:
    return rms_norm(x, self.scale[...], self.eps)


class Attention(nnx.Module):
  """Grouped-query self-attention with RoPE and an optional per-row KV cache."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, kv, dh = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    self.q = _param(rngs, (d, h, dh), ("embed", "heads", "head_dim"), cfg)
    self.k = _param(rngs, (d, kv, dh), ("embed", "kv_heads", "head_dim"), cfg)
    self.v = _param(rngs, (d, kv, dh), ("embed", "kv_heads", "head_dim"), cfg)
    self.o = _param(rngs, (h, dh, d), ("heads", "head_dim", "embed"), cfg)

  def __call__(self, x: jax.Array, positions: jax.Array, cache_kv: tuple[jax.Array, jax.Array] | None,
               rules: sharding.Rules | None, prefix: tuple[jax.Array, jax.Array, jax.Array] | None = None,
               segments: Segments | None = None) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """x: [B, T, D]; positions: [B, T]; cache_kv: ([B, KV, Dh, L], [B, KV, L, Dh]) or None.
    segments: packed rows (without a cache only; see `Segments`).

    prefix: this layer's shared prompt keys [P, KV, Dh, Lp], values [P, KV, Lp, Dh] and lengths [P] (with a
      cache only): row b's cache then starts after prompt b // (B / P).
    """
    cfg = self.cfg
    dt = x.dtype
    wq, wk, wv = (w[...].astype(dt) for w in (self.q, self.k, self.v))
    if _fused_decode_matmul(x, cfg.kernel):
      h, kv = cfg.n_heads, cfg.n_kv_heads
      qkv = jnp.einsum("btd,dnh->btnh", x, jnp.concatenate([wq, wk, wv], axis=1))  # [B, T, H + 2 KV, Dh]
      q, k, v = qkv[:, :, :h], qkv[:, :, h:h + kv], qkv[:, :, h + kv:]
    else:
      q = jnp.einsum("btd,dnh->btnh", x, wq)  # [B, T, H, Dh]
      k = jnp.einsum("btd,dnh->btnh", x, wk)  # [B, T, KV, Dh]
      v = jnp.einsum("btd,dnh->btnh", x, wv)  # [B, T, KV, Dh]
    q = sharding.constrain(q, ("batch", "length", "heads", "head_dim"), rules)
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
    q = apply_rope(q, cos, sin) * jnp.asarray(cfg.head_dim ** -0.5, dt)
    k = apply_rope(k, cos, sin)
    if cache_kv is None:
      k_all, v_all, k_pos = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3), positions  # [B,KV,Dh,T], [B,KV,T,Dh]
    else:
      b = x.shape[0]
      # Row b's cache slot 0 holds position `offset[b]`: 0, or the length of the shared prompt it continues.
      if prefix is None:
        offset = jnp.zeros((b, 1), jnp.int32)
      else:
        offset = jnp.repeat(prefix[2], b // prefix[2].shape[0])[:, None]  # [B, 1]
      slots = jnp.where(positions >= 0, positions - offset, -1)  # [B, T]
      k_all = sharding.constrain(_write_rows(cache_kv[0], k, slots, 3), CACHE_K_AXES, rules)  # [B, KV, Dh, L]
      v_all = sharding.constrain(_write_rows(cache_kv[1], v, slots, 2), CACHE_V_AXES, rules)  # [B, KV, L, Dh]
      cache_kv = (k_all, v_all)
      k_pos = offset + jnp.arange(v_all.shape[2])[None, :]  # [B, L]: the positions the slots hold
    shared = None
    if prefix is not None:
      k_p, v_p, lens = prefix
      shared = (k_p.astype(dt), v_p.astype(dt), jnp.arange(v_p.shape[2])[None, :] < lens[:, None])
    out = attend(q, k_all.astype(dt), v_all.astype(dt), positions, k_pos, shared, kernel=cfg.kernel,
                 segments=segments, causal_columns=cache_kv is None)  # [B, T, H, Dh]
    # As one [H * Dh] contraction: an einsum over (heads, head_dim) made XLA CPU transpose both operands per step.
    y = out.reshape(*out.shape[:2], -1) @ self.o[...].astype(dt).reshape(-1, cfg.dim)  # [B, T, D]
    return y, cache_kv


class MLP(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.gate = _param(rngs, (cfg.dim, cfg.ffn_dim), ("embed", "mlp"), cfg)
    self.up = _param(rngs, (cfg.dim, cfg.ffn_dim), ("embed", "mlp"), cfg)
    self.down = _param(rngs, (cfg.ffn_dim, cfg.dim), ("mlp", "embed"), cfg)

  def __call__(self, x: jax.Array, rules: sharding.Rules | None) -> jax.Array:
    """x: [B, T, D] -> [B, T, D]."""
    dt = x.dtype
    gate, up = self.gate[...].astype(dt), self.up[...].astype(dt)
    if _fused_decode_matmul(x, self.cfg.kernel):
      gate_up = x @ jnp.concatenate([gate, up], axis=1)  # [B, T, 2F]
      g, u = jnp.split(gate_up, 2, axis=-1)
    else:
      g, u = x @ gate, x @ up
    h = jax.nn.silu(g) * u  # [B, T, F]
    h = sharding.constrain(h, ("batch", "length", "mlp"), rules)
    return h @ self.down[...].astype(dt)


class Block(nnx.Module):
  """Pre-norm decoder layer: x + attn(norm(x)), then + mlp(norm(.))."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg, rngs=rngs)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg, rngs=rngs)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, positions, cache_kv, rules, prefix=None, segments=None):
    """x: [B, T, D] -> ([B, T, D], updated cache_kv)."""
    h, cache_kv = self.attn(self.attn_norm(x), positions, cache_kv, rules, prefix, segments)
    x = x + h
    x = x + self.mlp(self.mlp_norm(x), rules)
    return sharding.constrain(x, ("batch", "length", "embed"), rules), cache_kv


def _block_no_cache(block: Block, x: jax.Array, positions: jax.Array, rules: sharding.Rules | None,
                    segments: Segments | None) -> jax.Array:
  """One decoder layer without a KV cache. x: [B, T, D]; positions: [B, T] -> [B, T, D]."""
  return block(x, positions, None, rules, None, segments)[0]


# Per-layer activation rematerialisation: differentiating through a block saves only its inputs (x, positions,
# segments and the block's parameters) and recomputes everything else in the backward pass.
_remat_block = nnx.remat(_block_no_cache, static_argnums=(3,), policy=jax.checkpoint_policies.nothing_saveable)


class Llama(nnx.Module):
  """Token embedding, `n_layers` decoder blocks, final norm, untied LM head."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = _param(rngs, (cfg.vocab_size, cfg.dim), ("vocab", "embed"), cfg)
    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg, rngs=rngs)
    self.lm_head = _param(rngs, (cfg.dim, cfg.vocab_size), ("embed", "vocab"), cfg)

  def __call__(self, tokens: jax.Array, positions: jax.Array, cache: KVCache | None,
               rules: sharding.Rules | None, prefix: PrefixKV | None = None, segments: Segments | None = None
               ) -> tuple[jax.Array, KVCache | None]:
    """tokens, positions: [B, T] int32 -> logits [B, T, V] float32, updated cache."""
    dt = jnp.dtype(self.cfg.dtype)
    x = jnp.take(self.embed[...], tokens, axis=0).astype(dt)  # [B, T, D]
    x = sharding.constrain(x, ("batch", "length", "embed"), rules)
    new_k, new_v = [], []
    for i, layer in enumerate(self.layers):
      if cache is None:
        x = (_remat_block(layer, x, positions, rules, segments) if self.cfg.remat else
             layer(x, positions, None, rules, None, segments)[0])
      else:
        shared = None if prefix is None else (prefix.cache.k[i], prefix.cache.v[i], prefix.lens)
        x, (k, v) = layer(x, positions, (cache.k[i], cache.v[i]), rules, shared)
        new_k.append(k)
        new_v.append(v)
    x = self.final_norm(x)
    logits = jnp.einsum("btd,dv->btv", x, self.lm_head[...].astype(dt), preferred_element_type=jnp.float32)
    logits = sharding.constrain(logits, ("batch", "length", "vocab"), rules)
    return logits, (None if cache is None else KVCache(k=tuple(new_k), v=tuple(new_v)))


# ----------------------------------------------------------------------------------------------------------
# Pure entry points.


@functools.lru_cache(maxsize=None)
def _abstract_split(cfg: LlamaConfig) -> tuple[nnx.GraphDef, nnx.State]:
  return nnx.split(nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0))))


def graphdef(cfg: LlamaConfig) -> nnx.GraphDef:
  """The static NNX graph definition of the model (cached per config)."""
  return _abstract_split(cfg)[0]


def abstract_params(cfg: LlamaConfig) -> Params:
  """Parameter tree of ShapeDtypeStructs (no allocation)."""
  return nnx.to_pure_dict(_abstract_split(cfg)[1])


def param_axes(cfg: LlamaConfig) -> Params:
  """Parameter tree of logical axis-name tuples, matching `abstract_params`."""
  state = _abstract_split(cfg)[1]
  axes = jax.tree.map(lambda v: v.get_metadata()["axes"], state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(axes)


def param_shardings(cfg: LlamaConfig, mesh: jax.sharding.Mesh, rules: sharding.Rules = sharding.TRAIN_RULES):
  """NamedSharding of every parameter under `rules` on `mesh`."""
  return sharding.tree_shardings(abstract_params(cfg), param_axes(cfg), mesh, rules)


def init_params(cfg: LlamaConfig, key: jax.Array, *, mesh: jax.sharding.Mesh | None = None,
                rules: sharding.Rules = sharding.TRAIN_RULES) -> Params:
  """Random parameters (normal(0, 0.02) weights, unit norm scales), materialised directly in their shardings."""
  def init(k):
    return nnx.to_pure_dict(nnx.state(Llama(cfg, rngs=nnx.Rngs(params=k))))
  out_shardings = None if mesh is None else param_shardings(cfg, mesh, rules)
  return jax.jit(init, out_shardings=out_shardings)(key)


@functools.partial(jax.jit, static_argnames=("cfg", "rules"))
def forward(params: Params, cfg: LlamaConfig, tokens: jax.Array, positions: jax.Array,
            cache: KVCache | None = None, rules: sharding.Rules | None = None,
            prefix: PrefixKV | None = None, segments: Segments | None = None
            ) -> tuple[jax.Array, KVCache | None]:
  """Logits of `tokens` and the updated cache.

  Args:
    params: parameter tree from `init_params` / `convert.load_hf_checkpoint`.
    cfg: model config (static); `cfg.kernel` picks the attention / MLP kernel.
    tokens: [B, T] int32 token ids.
    positions: [B, T] int32 positions (= cache slots); negative marks padding. Without a cache, no key right of
      a query's column may be visible to it (positions increase along each sequence's columns, as in plain,
      packed and tree rows): the "cpu" kernel computes no scores there.
    cache: optional KVCache with B rows; the new keys/values are written at `positions`.
    rules: optional logical-axis rules (static) for activation sharding constraints under `jax.set_mesh`.
    prefix: optional shared prompts (with a cache only): B must be a multiple of their count P; row b continues
      prompt b // (B / P), attends to it, and its cache holds position p at slot p - prompt length.
    segments: optional packed rows (without a cache only): several sequences per row, each with its own
      positions, attending as `Segments` says (documents: only to itself; tree rows: to its prefix and itself).
  Returns:
    logits [B, T, vocab] float32, and the updated cache (None when no cache was given).
  """
  if tokens.shape != positions.shape or tokens.ndim != 2:
    raise ValueError(f"tokens {tokens.shape} and positions {positions.shape} must both be [B, T]")
  if cache is not None and cache.k[0].shape[0] != tokens.shape[0]:
    raise ValueError(f"cache has {cache.k[0].shape[0]} rows but tokens have {tokens.shape[0]}")
  if segments is not None and (cache is not None or segments.ids.shape != tokens.shape
                               or segments.root.shape != tokens.shape):
    raise ValueError(f"segments {segments.ids.shape} / {segments.root.shape} need tokens of the same shape "
                     f"{tokens.shape} and no cache")
  if segments is not None and segments.chunk_len and (
      not 0 <= segments.prefix_len <= tokens.shape[1] or (tokens.shape[1] - segments.prefix_len) % segments.chunk_len):
    raise ValueError(f"a tree layout of {segments.prefix_len} prefix columns and chunks of {segments.chunk_len} "
                     f"does not tile rows of {tokens.shape[1]}")
  if prefix is not None and (cache is None or tokens.shape[0] % prefix.lens.shape[0]):
    raise ValueError(f"a shared prefix needs a cache and a batch ({tokens.shape[0]}) that is a multiple of its "
                     f"{prefix.lens.shape[0]} prompts")
  model = nnx.merge(graphdef(cfg), params)
  return model(tokens, positions, cache, rules, prefix, segments)
