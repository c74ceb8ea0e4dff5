"""Packed node rows: the pairs of a batch grouped by the prefix they share, each prefix forwarded once for all of
its continuations (tree attention), bin-packed into rows of a fixed length.

A group is the pairs whose chosen and rejected sequences start with the same prefix (a TSP node's prompt + golden
code up to the node, or a self-play prompt: `PairSet.prefix_lens`). Its row segment holds the prefix once, then
every distinct continuation (the golden rest, the sampled branches, sub-fork branches) once; a continuation
attends to its prefix and to itself (`llama.Segments`), its positions continue the prefix's, and its first token
is predicted from the prefix's last column (`pred`). A group that does not fit a row is split over rows, the
prefix repeated, each pair whole in one row. Each pair slot of a row has the masks of its two sides over the row
(the dense masks moved to the continuations' columns), so every sum the dense losses take is a masked sum here.

Two row layouts: flat rows of `length` columns (each group's prefix, then its continuations, groups one after the
other), or a `TreeLayout`: a prefix region holding the row's prefixes, then fixed chunks each holding whole
continuations, so that attention can skip the chunk-to-chunk and prefix-to-chunk blocks (`llama.tree_attention`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from tsp_jax import pairs
from tsp_jax.model import llama


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
  prefix_len: int = 0  # the tree layout of the rows (`TreeLayout`); 0 / 0: flat rows
  chunk_len: int = 0

  @property
  def weight(self) -> np.ndarray:
    """[R, M] float32: 1 for a pair, 0 for an empty slot."""
    return (self.pair_index >= 0).astype(np.float32)

  def tokens_forwarded(self) -> int:
    """Non-padding columns (what the packed forward computes beyond padding)."""
    return int(np.sum(self.ids > 0))


@dataclasses.dataclass(frozen=True)
class TreeLayout:
  """Tree rows: a prefix region of `prefix_len` columns (the row's prefixes, one after the other), then `chunks`
  chunks of `chunk_len` columns, each holding whole continuations (of any of the row's prefixes)."""
  prefix_len: int
  chunk_len: int
  chunks: int

  def __post_init__(self):
    if self.prefix_len < 1 or self.chunk_len < 1 or self.chunks < 2:
      raise ValueError(f"a tree layout needs a prefix region, chunks of >= 1 column and >= 2 chunks: {self}")

  @property
  def length(self) -> int:
    """Columns per row."""
    return self.prefix_len + self.chunks * self.chunk_len


def score_cost(cfg: llama.LlamaConfig) -> float:
  """The forward FLOPs of one attention score (QK^T and PV over every head and layer) per forward FLOP of one
  column's parameters (2 a parameter): how `tree_layout` weighs a layout's scores against its columns."""
  return 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim / (2 * cfg.num_params())


def tree_layout(ps: pairs.PairSet, chunks: int, bucket: int = 8, score_cost: float = 0.0) -> TreeLayout:
  """The tree layout of at most `chunks` chunks that holds any pair of `ps`: a chunk fits the longest
  continuation, the prefix region the longest shared prefix or two of them, rounded up to a multiple of `bucket`
  (a few compiled shapes). Of those (2..`chunks` chunks, 1 or 2 prefixes) the cheapest for all of `ps`: rows x
  (columns + `score_cost` x attention scores a row, Lp^2 + N C (Lp + C)). A self-play prompt has two
  continuations, so empty chunks would be computed for nothing, and two prompts share a row where their
  continuations fill a chunk each; a TSP node has K + 1 or more, and its rows one prefix."""
  longest_prefix = longest_cont = 1
  for i in range(len(ps)):
    p = shared_prefix(ps, i)
    longest_prefix = max(longest_prefix, p)
    for mask in (ps.chosen_mask[i], ps.rejected_mask[i]):
      longest_cont = max(longest_cont, _scored_end(mask, p) - p)
  if chunks < 2:
    raise ValueError(f"a tree layout needs >= 2 chunks, got {chunks}")
  up = lambda n: -(-n // bucket) * bucket
  layouts = [TreeLayout(up(m * longest_prefix), up(longest_cont), n) for m in (1, 2) for n in range(2, chunks + 1)]
  if not len(ps):
    return layouts[chunks - 2]  # one prefix, every chunk

  def cost(tree: TreeLayout) -> tuple[float, int, int]:
    rows = len(_tree_rows(_tree_groups(ps, range(len(ps)), tree), tree))
    lp, c, n = tree.prefix_len, tree.chunk_len, tree.chunks
    return rows * (tree.length + score_cost * (lp * lp + n * c * (lp + c))), lp, n

  return min(layouts, key=cost)


def _fit_chunks(lengths: Sequence[int], free: Sequence[int]) -> list[int] | None:
  """Chunks for continuations of `lengths` given each chunk's free columns `free` (first fit, longest first), or
  None when they do not all fit. Returns the chunk of each continuation, in the order of `lengths`."""
  room, where = list(free), [0] * len(lengths)
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    chunk = next((j for j, r in enumerate(room) if r >= lengths[i]), None)
    if chunk is None:
      return None
    room[chunk] -= lengths[i]
    where[i] = chunk
  return where


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


def _groups(ps: pairs.PairSet, idx: Sequence[int], fits: Callable[[int, list[int]], bool]) -> list[_Group]:
  """The pairs `idx` as row segments that `fits(prefix length, continuation lengths)` accepts (a group is split
  where its next pair would not fit; a pair that does not fit alone is an error)."""
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
      if not fits(p, [len(t) for t in {t.tobytes(): t for t in tails}.values()]):
        raise ValueError(f"a pair needs a prefix of {p} and continuations of {[len(t) for t in tails]} tokens, "
                         f"more than the row length holds")
      new = [len(t) for t in {t.tobytes(): t for t in tails if t.tobytes() not in group.index}.values()]
      if group.pairs and not fits(p, [len(c) for c in group.conts] + new):
        out.append(group)
        group = _Group(prefix)
      group.pairs.append((i, group.cont(tails[0]), group.cont(tails[1])))
    out.append(group)
  return out


def _tree_groups(ps: pairs.PairSet, idx: Sequence[int], tree: TreeLayout) -> list[_Group]:
  """`_groups` for the rows of `tree`: a segment's prefix fits the prefix region, its continuations the chunks."""
  empty = [tree.chunk_len] * tree.chunks
  return _groups(ps, idx, lambda p, conts: p <= tree.prefix_len and _fit_chunks(conts, empty) is not None)


# Where a row's groups sit: (group, column of its prefix, column of each of its continuations), per row.
_Placement = list[list[tuple[int, int, list[int]]]]


def _flat_rows(groups: list[_Group], length: int) -> _Placement:
  """Flat rows: the groups best-fit into rows of `length`, each one's prefix then its continuations."""
  out = []
  for row in pairs.pack_rows([g.size() for g in groups], length, seed=0) if groups else []:
    at, placed = 0, []
    for g in row:
      starts = list(at + len(groups[g].prefix) + np.cumsum([0] + [len(c) for c in groups[g].conts[:-1]]))
      placed.append((g, at, [int(x) for x in starts]))
      at += groups[g].size()
    out.append(placed)
  return out


def _tree_rows(groups: list[_Group], tree: TreeLayout) -> _Placement:
  """Tree rows: each group, largest first, in the first row whose prefix region and chunks hold it."""
  rows: list[tuple[int, list[int], list]] = []  # (prefix columns used, columns used per chunk, placements)
  for g in sorted(range(len(groups)), key=lambda g: -groups[g].size()):
    p, lens = len(groups[g].prefix), [len(c) for c in groups[g].conts]
    for r, (used, chunk_used, placed) in enumerate(rows + [(0, [0] * tree.chunks, [])]):
      where = _fit_chunks(lens, [tree.chunk_len - u for u in chunk_used]) if used + p <= tree.prefix_len else None
      if where is not None:
        break
    if r == len(rows):
      rows.append((used, chunk_used, placed))
    starts = []
    for j, n in zip(where, lens):
      starts.append(tree.prefix_len + j * tree.chunk_len + chunk_used[j])
      chunk_used[j] += n
    placed.append((g, used, starts))
    rows[r] = (used + p, chunk_used, placed)
  return [placed for _, _, placed in rows]


def pack_pairs(ps: pairs.PairSet, idx: Sequence[int], layout: int | TreeLayout, rows: int | None = None,
               slots: int | None = None, row_multiple: int = 1) -> PackedPairs:
  """Packs the pairs `idx` of `ps` into rows: flat rows of `layout` tokens (best fit of the groups), or the rows of
  a `TreeLayout`.

  rows / slots: the number of rows and pair slots per row to lay out (static shapes for a jitted step; default
  what these pairs need, rows rounded up to `row_multiple`); fewer than needed is an error. Padding columns hold
  token 0 (never seen or scored).
  """
  if isinstance(layout, TreeLayout):
    length = layout.length
    groups = _tree_groups(ps, idx, layout)
    placed = _tree_rows(groups, layout)
  else:
    length = layout
    groups = _groups(ps, idx, lambda p, conts: p + sum(conts) <= length)
    placed = _flat_rows(groups, length)
  need_slots = max([sum(len(groups[g].pairs) for g, _, _ in row) for row in placed] + [0])
  n_rows = rows if rows is not None else -(-max(len(placed), 1) // row_multiple) * row_multiple
  n_slots = slots if slots is not None else max(need_slots, 1)
  if len(placed) > n_rows or need_slots > n_slots:
    raise ValueError(f"these pairs need {len(placed)} rows and {need_slots} pair slots, more than {n_rows} / "
                     f"{n_slots}")
  tree = layout if isinstance(layout, TreeLayout) else None
  out = PackedPairs(tokens=np.zeros((n_rows, length), np.int32),
                    positions=np.full((n_rows, length), -1, np.int32), ids=np.zeros((n_rows, length), np.int32),
                    root=np.zeros((n_rows, length), np.int32), pred=np.full((n_rows, length), -1, np.int32),
                    chosen_mask=np.zeros((n_rows, n_slots, length), np.float32),
                    rejected_mask=np.zeros((n_rows, n_slots, length), np.float32),
                    pair_index=np.full((n_rows, n_slots), -1, np.int32),
                    prefix_len=tree.prefix_len if tree else 0, chunk_len=tree.chunk_len if tree else 0)
  for r, row in enumerate(placed):
    segment, slot = 0, 0
    for g, prefix_at, starts in row:
      group = groups[g]
      p = len(group.prefix)
      segment += 1
      prefix_seg = segment
      cols = np.arange(prefix_at, prefix_at + p)
      out.tokens[r, cols], out.positions[r, cols] = group.prefix, np.arange(p)
      out.ids[r, cols], out.root[r, cols], out.pred[r, cols] = prefix_seg, prefix_seg, cols - 1
      out.pred[r, prefix_at] = -1
      for cont, at in zip(group.conts, starts):
        segment += 1
        cols = np.arange(at, at + len(cont))
        out.tokens[r, cols], out.positions[r, cols] = cont, p + np.arange(len(cont))
        out.ids[r, cols], out.root[r, cols], out.pred[r, cols] = segment, prefix_seg, cols - 1
        if len(cont):
          out.pred[r, at] = prefix_at + p - 1  # the first token is predicted from the prefix's last column
      for i, c, j in group.pairs:
        for mask, dense, cont in ((out.chosen_mask, ps.chosen_mask[i], c), (out.rejected_mask, ps.rejected_mask[i], j)):
          n = len(group.conts[cont])
          mask[r, slot, starts[cont]:starts[cont] + n] = dense[p:p + n]
        out.pair_index[r, slot] = i
        slot += 1
  return out
