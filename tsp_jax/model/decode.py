"""Prefill of right-padded prompts into a KV cache: the first step of every decoding program.

The decoding loops themselves (greedy, sampling, tree search) live in `tsp_jax.search.tree`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tsp_jax.model import llama, sharding


def prompt_positions(prompt_lens: jax.Array, width: int) -> jax.Array:
  """Positions of right-padded prompts: 0..len-1, then -1 (padding). prompt_lens: [B] -> [B, width]."""
  steps = jnp.arange(width, dtype=jnp.int32)[None, :]  # [1, width]
  return jnp.where(steps < prompt_lens[:, None], steps, -1)


def prefill(params: llama.Params, cfg: llama.LlamaConfig, prompts: jax.Array, prompt_lens: jax.Array,
            cache: llama.KVCache, rules: sharding.Rules | None = None) -> tuple[jax.Array, llama.KVCache]:
  """Runs right-padded prompts [B, Lp] through the model, filling the cache.

  Returns the next-token logits at each row's last prompt token [B, V] (float32) and the cache.
  """
  positions = prompt_positions(prompt_lens, prompts.shape[1])
  logits, cache = llama.forward(params, cfg, prompts, positions, cache, rules=rules)
  last = jnp.take_along_axis(logits, (prompt_lens - 1)[:, None, None], axis=1)[:, 0]  # [B, V]
  return last, cache
