"""Batched sampling of many prompts: prompts searched a fixed number at a time, each prompt's tree on the host.

    trees = batch.sample_branches(params, cfg, prompts, scfg, rng, batch=16)   # one `Branches` per prompt

The trainer (trees at risk nodes, self-play samples, rollouts) and the evaluation harness (one completion per
prompt) sample through this one function; its outputs are whole on every process of a multi-host run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from tqdm import tqdm

from tsp_jax.model import llama, sharding
from tsp_jax.search import host, tree


@dataclasses.dataclass
class Branches:
  """The branches of one prompt's tree: generated ids, and the tree structure in local branch indices."""
  ids: list[np.ndarray]  # per branch: [n_i] int32 generated ids (stop token included)
  parent: np.ndarray  # [n] int: local index of the parent branch, -1 for roots
  fork_pos: np.ndarray  # [n] int


def sample_branches(params: llama.Params, cfg: llama.LlamaConfig, prompts: Sequence[np.ndarray],
                    scfg: tree.SearchConfig, rng: jax.Array, batch: int, desc: str = "sampling",
                    rules: sharding.Rules | None = sharding.SAMPLE_RULES) -> list[Branches]:
  """Every prompt's tree, prompts searched `batch` at a time (padded to one compiled shape).

  Args:
    prompts: token ids [Lp_i] (BOS first), each at most `scfg.cache_len - scfg.max_new_tokens` long.
    scfg: the search settings; `cache_len` must be set (it fixes the padded prompt width).
    rng: the key of the whole call; batch i uses `fold_in(rng, i * batch)`.
    batch: prompts per compiled search (a multiple of the data-parallel devices on a mesh).
    desc: the progress bar's label (shown on process 0).
  """
  if scfg.cache_len <= scfg.max_new_tokens:
    raise ValueError(f"sample_branches needs cache_len > max_new_tokens, got {scfg.cache_len} and "
                     f"{scfg.max_new_tokens}")
  width = scfg.cache_len - scfg.max_new_tokens
  out = []
  for start in tqdm(range(0, len(prompts), batch), desc=desc, disable=jax.process_index() != 0):
    chunk = list(prompts[start:start + batch])
    padded = chunk + [chunk[0]] * (batch - len(chunk))
    ids = np.zeros((batch, width), np.int32)  # [batch, width]
    for i, p in enumerate(padded):
      if len(p) > width:
        raise ValueError(f"prompt {start + i} has {len(p)} tokens; the search's prompt width is {width}")
      ids[i, :len(p)] = p
    lens = np.array([len(p) for p in padded], np.int32)  # [batch]
    tr = host.to_host(tree.tree_search(params, cfg, ids, lens, jax.random.fold_in(rng, start), scfg, rules=rules))
    for i in range(len(chunk)):
      slots = [int(s) for s in host.branch_slots(tr) if tr.prefix_index[s] == i]
      local = {s: j for j, s in enumerate(slots)}
      out.append(Branches(ids=[host.generated_tokens(tr, s) for s in slots],
                          parent=np.array([local.get(int(tr.parent[s]), -1) for s in slots]),
                          fork_pos=np.array([int(tr.fork_pos[s]) for s in slots])))
  return out
