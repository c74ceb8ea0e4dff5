"""Host-side views of a `Tree`: per-branch tokens and texts, and the branch structure.

Call `to_host(tree)` once (`sharding.to_host`: one transfer, whole on every process of a multi-host run); the
other helpers take the numpy tree it returns.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tsp_jax.model.sharding import to_host  # noqa: F401  (re-exported: `host.to_host(tree)`)
from tsp_jax.search.tree import Tree


class Detokenizer(Protocol):
  def decode(self, ids, *, stop_at_eos: bool = True) -> str: ...


def branch_slots(tree: Tree) -> np.ndarray:
  """Indices of the slots that hold a branch, ascending. [num_branches] int."""
  return np.flatnonzero(np.asarray(tree.valid))


def generated_tokens(tree: Tree, slot: int) -> np.ndarray:
  """Tokens the branch generated after its prefix (stop token included). [n] int32."""
  return np.asarray(tree.tokens[slot, tree.prefix_lens[slot]:tree.lengths[slot]])


def full_tokens(tree: Tree, slot: int) -> np.ndarray:
  """Prefix + generated tokens of a branch. [lengths[slot]] int32."""
  return np.asarray(tree.tokens[slot, :tree.lengths[slot]])


def decode_continuation(prefix_ids: np.ndarray, generated: np.ndarray, tokenizer: Detokenizer) -> str:
  """Text of `generated` ids decoded in the context of their prefix.

  SentencePiece models with a dummy prefix (CodeLlama's) drop the leading space of the first piece of a
  decoded sequence, so the continuation is cut from the decoded whole, not decoded alone.
  """
  whole = tokenizer.decode(np.concatenate([prefix_ids, generated]))
  prefix = tokenizer.decode(prefix_ids)
  if whole.startswith(prefix):
    return whole[len(prefix):]
  return tokenizer.decode(generated)  # a byte-fallback sequence split at the boundary


def token_at_offset(prefix_ids: np.ndarray, generated: np.ndarray, char_offset: int, tokenizer: Detokenizer
                    ) -> int | None:
  """Index of the generated token whose text holds character `char_offset` of the decoded continuation.

  None when the offset lies past the continuation's text. Binary search over decoded prefixes (O(log n) decodes).
  """
  if char_offset < 0 or char_offset >= len(decode_continuation(prefix_ids, generated, tokenizer)):
    return None
  lo, hi = 0, len(generated) - 1  # the answer: the least i whose first i + 1 tokens cover char_offset
  while lo < hi:
    mid = (lo + hi) // 2
    if len(decode_continuation(prefix_ids, generated[:mid + 1], tokenizer)) > char_offset:
      hi = mid
    else:
      lo = mid + 1
  return lo


def continuation_text(tree: Tree, slot: int, tokenizer: Detokenizer) -> str:
  """Text of a branch's generated tokens (see `decode_continuation`)."""
  return decode_continuation(tree.tokens[slot, :tree.prefix_lens[slot]], generated_tokens(tree, slot), tokenizer)


def branch_texts(tree: Tree, tokenizer: Detokenizer) -> dict[int, str]:
  """Decoded continuation (generated tokens only) of every branch, by slot."""
  return {int(s): continuation_text(tree, s, tokenizer) for s in branch_slots(tree)}


def children(tree: Tree) -> dict[int, list[int]]:
  """Direct children of every branch (slots forked from it), by slot; branches without children map to []."""
  out: dict[int, list[int]] = {int(s): [] for s in branch_slots(tree)}
  for s in branch_slots(tree):
    parent = int(tree.parent[s])
    if parent >= 0:
      out[parent].append(int(s))
  return out


def decoded_tokens(tree: Tree) -> int:
  """Tokens the engine actually decoded: each branch from where it forked (or its prefix end for roots)."""
  slots = branch_slots(tree)
  start = np.where(tree.fork_pos[slots] >= 0, tree.fork_pos[slots], tree.prefix_lens[slots])
  return int(np.sum(tree.lengths[slots] - start))
