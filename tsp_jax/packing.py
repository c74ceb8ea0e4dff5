"""Packed node rows: the pairs of a batch grouped by the prefix they share, each prefix forwarded once for all of
its continuations (tree attention), bin-packed into rows of a fixed length.

A group is the pairs whose chosen and rejected sequences start with the same prefix (a TSP node's prompt + golden
code up to the node, or a self-play prompt: `PairSet.prefix_lens`). Its row segment holds the prefix once, then
every distinct continuation (the golden rest, the sampled branches, sub-fork branches) once; a continuation
attends to its prefix and to itself (`llama.Segments`), its positions continue the prefix's, and its first token
is predicted from the prefix's last column (`pred`). A group that does not fit a row is split over rows, the
prefix repeated, each pair whole in one row. Each pair slot of a row has the masks of its two sides over the row
(the dense masks moved to the continuations' columns), so every sum the dense losses take is a masked sum here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tsp_jax import pairs


@dataclasses.dataclass
class PackedPairs:
  """R rows of L tokens holding pairs of a PairSet in M pair slots per row (host arrays)."""
  tokens: np.ndarray  # [R, L] int32
  positions: np.ndarray  # [R, L] int32: position in its sequence (-1: padding)
  ids: np.ndarray  # [R, L] int32: segment of each column (0: padding)
  root: np.ndarray  # [R, L] int32: the segment a column's sequence continues (its own for a prefix)
  pred: np.ndarray  # [R, L] int32: the column whose logits predict this token (-1: none)
  chosen_mask: np.ndarray  # [R, M, L] float32: the dense chosen mask of each slot's pair, on the row's columns
  rejected_mask: np.ndarray  # [R, M, L] float32
  pair_index: np.ndarray  # [R, M] int32: the PairSet pair in each slot (-1: empty)

  @property
  def weight(self) -> np.ndarray:
    """[R, M] float32: 1 for a pair, 0 for an empty slot."""
    return (self.pair_index >= 0).astype(np.float32)

  def tokens_forwarded(self) -> int:
    """Non-padding columns (what the packed forward computes beyond padding)."""
    return int(np.sum(self.ids > 0))


@dataclasses.dataclass
class _Group:
  """One row segment: a prefix and the distinct continuations of its pairs."""
  prefix: np.ndarray
  conts: list[np.ndarray] = dataclasses.field(default_factory=list)
  index: dict[bytes, int] = dataclasses.field(default_factory=dict)
  pairs: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # (pair, chosen cont, rejected cont)

  def size(self) -> int:
    return len(self.prefix) + sum(len(c) for c in self.conts)

  def cont(self, tail: np.ndarray) -> int:
    key = tail.tobytes()
    if key not in self.index:
      self.index[key] = len(self.conts)
      self.conts.append(tail)
    return self.index[key]


def _scored_end(mask: np.ndarray, start: int) -> int:
  """One past a side's last scored token (its sequence's length as the dense masks see it), or `start`."""
  nz = np.flatnonzero(mask)
  return int(nz[-1]) + 1 if nz.size else start


def shared_prefix(ps: pairs.PairSet, i: int) -> int:
  """Tokens both sides of pair i share from the start, up to its `prefix_lens` (the node prefix)."""
  if ps.prefix_lens is None:
    raise ValueError("packing needs PairSet.prefix_lens (pairs built by pairs.pair_arrays)")
  p = int(ps.prefix_lens[i])
  diff = np.flatnonzero(ps.chosen[i, :p] != ps.rejected[i, :p])
  p = min(p, int(diff[0]) if diff.size else p)
  if p < 1:
    raise ValueError(f"pair {i} has no shared prefix (prefix_lens {int(ps.prefix_lens[i])})")
  return p


def _by_prefix(ps: pairs.PairSet, idx: Sequence[int]) -> dict[bytes, list[int]]:
  """The pairs `idx` by shared prefix (key: its length and tokens), in order of first appearance."""
  out: dict[bytes, list[int]] = {}
  for i in idx:
    p = shared_prefix(ps, int(i))
    out.setdefault(np.int32(p).tobytes() + ps.chosen[int(i), :p].tobytes(), []).append(int(i))
  return out


def grouped_order(ps: pairs.PairSet, seed: int, epochs: int) -> np.ndarray:
  """Every pair index once per epoch: the prefix groups in a seeded order per epoch, each group's pairs together
  (so packed micro-batches share prefixes). [epochs * N] int64."""
  groups = list(_by_prefix(ps, range(len(ps))).values())
  rng = np.random.default_rng(seed)
  return np.asarray([i for _ in range(epochs) for g in rng.permutation(len(groups)) for i in groups[g]], np.int64)


def _groups(ps: pairs.PairSet, idx: Sequence[int], length: int) -> list[_Group]:
  """The pairs `idx` as row segments of at most `length` tokens (groups split where they do not fit)."""
  by_prefix = _by_prefix(ps, idx)
  out = []
  for key, members in by_prefix.items():
    p = int(np.frombuffer(key[:4], np.int32)[0])
    prefix = ps.chosen[members[0], :p]
    group = _Group(prefix)
    for i in members:
      tails = []
      for toks, mask in ((ps.chosen[i], ps.chosen_mask[i]), (ps.rejected[i], ps.rejected_mask[i])):
        tails.append(toks[p:_scored_end(mask, p)])
      if len(prefix) + sum(len(t) for t in tails) > length:
        raise ValueError(f"a pair needs {len(prefix) + sum(len(t) for t in tails)} tokens packed, more than the "
                         f"row length {length}")
      grown = len(prefix) + sum(len(c) for c in group.conts) + sum(
          len(t) for t in tails if t.tobytes() not in group.index)
      if grown > length and group.pairs:
        out.append(group)
        group = _Group(prefix)
      group.pairs.append((i, group.cont(tails[0]), group.cont(tails[1])))
    out.append(group)
  return out


def pack_pairs(ps: pairs.PairSet, idx: Sequence[int], length: int, rows: int | None = None,
               slots: int | None = None, row_multiple: int = 1) -> PackedPairs:
  """Packs the pairs `idx` of `ps` into rows of `length` tokens (best fit of the groups).

  rows / slots: the number of rows and pair slots per row to lay out (static shapes for a jitted step; default
  what these pairs need, rows rounded up to `row_multiple`); fewer than needed is an error. Padding columns hold
  token 0 (never seen or scored).
  """
  groups = _groups(ps, idx, length)
  placed = pairs.pack_rows([g.size() for g in groups], length, seed=0) if groups else []
  need_slots = max([sum(len(groups[g].pairs) for g in row) for row in placed] + [0])
  n_rows = rows if rows is not None else -(-max(len(placed), 1) // row_multiple) * row_multiple
  n_slots = slots if slots is not None else max(need_slots, 1)
  if len(placed) > n_rows or need_slots > n_slots:
    raise ValueError(f"these pairs need {len(placed)} rows and {need_slots} pair slots, more than {n_rows} / "
                     f"{n_slots}")
  out = PackedPairs(tokens=np.zeros((n_rows, length), np.int32),
                    positions=np.full((n_rows, length), -1, np.int32), ids=np.zeros((n_rows, length), np.int32),
                    root=np.zeros((n_rows, length), np.int32), pred=np.full((n_rows, length), -1, np.int32),
                    chosen_mask=np.zeros((n_rows, n_slots, length), np.float32),
                    rejected_mask=np.zeros((n_rows, n_slots, length), np.float32),
                    pair_index=np.full((n_rows, n_slots), -1, np.int32))
  for r, row in enumerate(placed):
    at, segment, slot = 0, 0, 0
    for g in row:
      group = groups[g]
      p = len(group.prefix)
      segment += 1
      prefix_seg, prefix_at = segment, at
      cols = np.arange(at, at + p)
      out.tokens[r, cols], out.positions[r, cols] = group.prefix, np.arange(p)
      out.ids[r, cols], out.root[r, cols], out.pred[r, cols] = prefix_seg, prefix_seg, cols - 1
      out.pred[r, prefix_at] = -1
      at += p
      starts = []
      for cont in group.conts:
        segment += 1
        cols = np.arange(at, at + len(cont))
        out.tokens[r, cols], out.positions[r, cols] = cont, p + np.arange(len(cont))
        out.ids[r, cols], out.root[r, cols], out.pred[r, cols] = segment, prefix_seg, cols - 1
        if len(cont):
          out.pred[r, at] = prefix_at + p - 1  # the first token is predicted from the prefix's last column
        starts.append(at)
        at += len(cont)
      for i, c, j in group.pairs:
        for mask, dense, cont in ((out.chosen_mask, ps.chosen_mask[i], c), (out.rejected_mask, ps.rejected_mask[i], j)):
          n = len(group.conts[cont])
          mask[r, slot, starts[cont]:starts[cont] + n] = dense[p:p + n]
        out.pair_index[r, slot] = i
        slot += 1
  return out
