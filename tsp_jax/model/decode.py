"""Cached greedy decoding: prefill the prompts once, then one token per step inside `lax.fori_loop`.

This is the model-level reference decoder (demo, HF parity). The tree-search engine (`tsp_jax.search`) builds
on the same `prefill` and is the sampler used for self-play and evaluation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tsp_jax.model import llama


def prompt_positions(prompt_lens: jax.Array, width: int) -> jax.Array:
  """Positions of right-padded prompts: 0..len-1, then -1 (padding). prompt_lens: [B] -> [B, width]."""
  steps = jnp.arange(width, dtype=jnp.int32)[None, :]  # [1, width]
  return jnp.where(steps < prompt_lens[:, None], steps, -1)


def prefill(params: llama.Params, cfg: llama.LlamaConfig, prompts: jax.Array, prompt_lens: jax.Array,
            cache: llama.KVCache) -> tuple[jax.Array, llama.KVCache]:
  """Runs right-padded prompts [B, Lp] through the model, filling the cache.

  Returns the next-token logits at each row's last prompt token [B, V] (float32) and the cache.
  """
  logits, cache = llama.forward(params, cfg, prompts, prompt_positions(prompt_lens, prompts.shape[1]), cache)
  last = jnp.take_along_axis(logits, (prompt_lens - 1)[:, None, None], axis=1)[:, 0]  # [B, V]
  return last, cache


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "cache_len"))
def greedy_decode(params: llama.Params, cfg: llama.LlamaConfig, prompts: jax.Array, prompt_lens: jax.Array,
                  *, max_new_tokens: int, eos_id: int | None = None, cache_len: int | None = None
                  ) -> tuple[jax.Array, jax.Array]:
  """Greedy continuation of right-padded prompts.

  Args:
    prompts: [B, Lp] int32, right-padded; prompt_lens: [B] int32 (each >= 1).
    max_new_tokens: number of decode steps.
    eos_id: optional stop token (traced): after a row emits it, the row emits `eos_id` again and stops counting.
    cache_len: KV cache length, default Lp + max_new_tokens.
  Returns:
    tokens [B, max_new_tokens] int32 and the number of generated tokens per row [B] (EOS included).
  """
  b, lp = prompts.shape
  cache_len = cache_len or lp + max_new_tokens
  if cache_len < lp + max_new_tokens:
    raise ValueError(f"cache_len {cache_len} < prompt width {lp} + max_new_tokens {max_new_tokens}")
  cache = llama.init_cache(cfg, b, cache_len)
  logits, cache = prefill(params, cfg, prompts, prompt_lens, cache)
  eos = jnp.asarray(-1 if eos_id is None else eos_id, jnp.int32)

  def step(i, carry):
    logits, cache, out, done, count = carry
    tok = jnp.where(done, eos, jnp.argmax(logits, axis=-1).astype(jnp.int32))  # [B]
    out = out.at[:, i].set(tok)
    count = count + (~done).astype(jnp.int32)
    done = done | (tok == eos)
    pos = (prompt_lens + i)[:, None]  # [B, 1]
    logits, cache = llama.forward(params, cfg, tok[:, None], pos, cache)
    return logits[:, 0], cache, out, done, count

  init = (logits, cache, jnp.zeros((b, max_new_tokens), jnp.int32), jnp.zeros((b,), bool),
          jnp.zeros((b,), jnp.int32))
  _, _, out, _, count = jax.lax.fori_loop(0, max_new_tokens, step, init)
  return out, count
