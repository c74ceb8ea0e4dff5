"""Node-level preference pairs: tokenized nodes, branch labels -> (chosen, rejected, masks) arrays on the host.

Rules: chosen = the golden continuation or any branch verified secure (and functional when the task
has tests); rejected = branches verified vulnerable or broken. A secure branch is never a rejected sample.
Both sides of a pair start with the node's prefix; the masks score each side's tokens from the first position
where the two differ to its end, so only the tokens after the decision node carry signal.
"""

from __future__ import annotations

import bisect
import dataclasses
import io
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from etils import epath

from tsp_jax.data import Node

SECURE, VULNERABLE, BROKEN, DROP = "secure", "vulnerable", "broken", "drop"
# Pair kinds, counted separately in the metrics.
(KIND_GOLDEN_VS_VULNERABLE, KIND_GOLDEN_VS_BROKEN, KIND_BRANCH_VS_REJECTED, KIND_SEQUENCE, KIND_SUBTREE,
 KIND_LOCALIZED) = range(6)
KIND_NAMES = ("golden_vs_vulnerable", "golden_vs_broken", "secure_branch_vs_rejected", "sequence", "subtree_fork",
              "verifier_localized")


class Tokenizer(Protocol):
  """The part of `tsp_jax.tokenizer.Tokenizer` used here."""
  bos_id: int
  eos_id: int
  pad_id: int

  def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]: ...

  def decode(self, ids, *, stop_at_eos: bool = True) -> str: ...


NODES_AT = ("token", "line")


def check_nodes_at(at: str) -> None:
  """Raises ValueError unless `at` is one of `NODES_AT` (where a node's trees start: `tokenize_node`)."""
  if at not in NODES_AT:
    raise ValueError(f"unknown node position nodes_at={at!r}; expected one of {NODES_AT}")


@dataclasses.dataclass(frozen=True)
class NodePrompt:
  """A node in token space: the ids the sampler is given and the golden continuation ids."""
  node: Node | None
  prefix_ids: np.ndarray  # [Lp] int32, BOS first
  chosen_ids: np.ndarray  # [Lc] int32: golden continuation (+ EOS when it fits), at most max_new_tokens
  prefix_text: str  # the text of the whole prefix (before any cut from the left): node.prefix + the start of the
  # node's line that golden and twin share (at="token")


def tokenize_node(tok: Tokenizer, node: Node, max_prefix: int, max_new_tokens: int, at: str = "token"
                  ) -> NodePrompt | None:
  """Tokenizes a node so that prefix + continuation re-tokenizes to the ids of the whole golden text.

  `at="line"`: the prefix ends where the node's line begins; `"token"`: at the first token where the golden
  function and its vulnerable twin part (the decision token, often inside the line: `hashlib.` | `md5` /
  `sha256`), so the sampler's first token is the choice the patch made. Returns None when the tokenizer merges
  across the node boundary (the ids would not be the ones the model saw). A prefix longer than `max_prefix`
  keeps BOS and its last tokens.
  """
  check_nodes_at(at)
  prefix = tok.encode(node.prefix, bos=True)
  whole = tok.encode(node.prefix + node.golden_rest, bos=True)
  if whole[:len(prefix)] != prefix:
    return None
  cut, prefix_text = len(prefix), node.prefix
  if at == "token":
    twin = tok.encode(node.prefix + node.vulnerable_rest, bos=True)
    while cut < min(len(whole), len(twin)) - 1 and whole[cut] == twin[cut]:
      cut += 1
    shared = tok.decode(whole[:cut]).removeprefix(tok.decode(prefix))
    if not node.golden_rest.startswith(shared):  # a byte-fallback character split at the cut
      return None
    prefix, prefix_text = whole[:cut], node.prefix + shared
  chosen = whole[cut:] + [tok.eos_id]
  if len(prefix) > max_prefix:
    prefix = prefix[:1] + prefix[len(prefix) - max_prefix + 1:]
  return NodePrompt(node=node, prefix_ids=np.asarray(prefix, np.int32),
                    chosen_ids=np.asarray(chosen[:max_new_tokens], np.int32), prefix_text=prefix_text)


@dataclasses.dataclass
class PairSet:
  """N pairs, right-padded to L tokens, with their reference log-probs once computed (host arrays)."""
  chosen: np.ndarray  # [N, L] int32
  rejected: np.ndarray  # [N, L] int32
  chosen_mask: np.ndarray  # [N, L] float32
  rejected_mask: np.ndarray  # [N, L] float32
  kind: np.ndarray  # [N] int32 (KIND_*)
  ref_logps: np.ndarray | None = None  # [N, 2] float32
  segments: np.ndarray | None = None  # [N, L] int32: rows packed with several sequences (`packed_sequence_set`)
  prefix_lens: np.ndarray | None = None  # [N] int32: the node prefix both sides share (pairs; see `packing`)

  def __len__(self) -> int:
    return self.chosen.shape[0]

  def counts(self) -> dict[str, int]:
    return {name: int(np.sum(self.kind == i)) for i, name in enumerate(KIND_NAMES)}

  def save(self, path: str | os.PathLike) -> None:
    """Writes an `.npz` file (local or `gs://`) through a temporary name, so a reader never sees half a file."""
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in dataclasses.asdict(self).items() if v is not None})
    path = epath.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)

  @classmethod
  def load(cls, path: str | os.PathLike) -> PairSet:
    with np.load(io.BytesIO(epath.Path(path).read_bytes())) as f:
      return cls(**{k: f[k] for k in f.files})


def pair_arrays(pairs: list[tuple[np.ndarray, np.ndarray, int]], prefix_lens: list[int], length: int,
                pad_id: int) -> PairSet:
  """Packs (chosen ids, rejected ids, kind) into a PairSet; masks start where the two sequences first differ."""
  n = len(pairs)
  out = PairSet(chosen=np.full((n, length), pad_id, np.int32), rejected=np.full((n, length), pad_id, np.int32),
                chosen_mask=np.zeros((n, length), np.float32), rejected_mask=np.zeros((n, length), np.float32),
                kind=np.zeros((n,), np.int32), prefix_lens=np.asarray(prefix_lens, np.int32).reshape(n))
  for i, ((chosen, rejected, kind), prefix_len) in enumerate(zip(pairs, prefix_lens)):
    chosen, rejected = chosen[:length], rejected[:length]
    m = min(len(chosen), len(rejected))
    diff = np.flatnonzero(chosen[:m] != rejected[:m])
    start = max(int(diff[0]) if diff.size else m, prefix_len, 1)
    out.chosen[i, :len(chosen)] = chosen
    out.rejected[i, :len(rejected)] = rejected
    out.chosen_mask[i, start:len(chosen)] = 1
    out.rejected_mask[i, start:len(rejected)] = 1
    out.kind[i] = kind
  return out


def sequence_set(seqs: list[np.ndarray], prompt_lens: list[int], length: int, pad_id: int) -> PairSet:
  """SFT examples as a PairSet (rejected = chosen, unused): chosen_mask scores every token after the prompt."""
  ps = pair_arrays([(s, s, KIND_SEQUENCE) for s in seqs], prompt_lens, length, pad_id)
  for i, (seq, n) in enumerate(zip(seqs, prompt_lens)):
    ps.chosen_mask[i, max(n, 1):min(len(seq), length)] = 1
  ps.rejected_mask[:] = 0
  return ps


def pack_rows(lengths: Sequence[int], length: int, seed: int) -> list[list[int]]:
  """Bin-packs items of `lengths` (each <= `length`) into rows of `length` tokens: best fit, in a seeded order.
  Returns the item indices of each row, in the order they sit in the row."""
  if any(n > length or n < 1 for n in lengths):
    raise ValueError(f"every packed item needs 1..{length} tokens, got {min(lengths)}..{max(lengths)}")
  order = np.random.default_rng(seed).permutation(len(lengths))
  rows: list[list[int]] = []
  free: list[tuple[int, int]] = []  # (free tokens, row), sorted
  for i in order:
    n = int(lengths[i])
    j = bisect.bisect_left(free, (n, -1))
    if j < len(free):
      room, row = free.pop(j)
    else:
      room, row = length, len(rows)
      rows.append([])
    rows[row].append(int(i))
    if room - n > 0:
      bisect.insort(free, (room - n, row))
  return rows


def packed_sequence_set(seqs: list[np.ndarray], prompt_lens: list[int], length: int, pad_id: int, seed: int
                        ) -> PairSet:
  """SFT examples bin-packed into rows of `length` tokens (`pack_rows`): `segments` numbers each row's sequences
  1, 2, ... (0: padding); chosen_mask scores every token after each sequence's prompt, as `sequence_set` does.
  Sequences longer than `length` are cut to it."""
  seqs = [s[:length] for s in seqs]
  rows = pack_rows([len(s) for s in seqs], length, seed)
  n = len(rows)
  ps = PairSet(chosen=np.full((n, length), pad_id, np.int32), rejected=np.full((n, length), pad_id, np.int32),
               chosen_mask=np.zeros((n, length), np.float32), rejected_mask=np.zeros((n, length), np.float32),
               kind=np.full((n,), KIND_SEQUENCE, np.int32), segments=np.zeros((n, length), np.int32))
  for r, items in enumerate(rows):
    at = 0
    for segment, i in enumerate(items, start=1):
      seq = seqs[i]
      ps.chosen[r, at:at + len(seq)] = seq
      ps.segments[r, at:at + len(seq)] = segment
      ps.chosen_mask[r, at + max(prompt_lens[i], 1):at + len(seq)] = 1
      at += len(seq)
  ps.rejected = ps.chosen.copy()
  return ps


def segment_positions(segments: np.ndarray) -> np.ndarray:
  """Positions in packed rows: 0, 1, ... from the start of each segment (-1 on padding). [B, L] -> [B, L]."""
  idx = np.broadcast_to(np.arange(segments.shape[1]), segments.shape)
  start = np.concatenate([np.ones_like(segments[:, :1], bool), segments[:, 1:] != segments[:, :-1]], axis=1)
  first = np.maximum.accumulate(np.where(start, idx, 0), axis=1)  # [B, L]: column where each segment starts
  return np.where(segments > 0, idx - first, -1).astype(np.int32)


def node_pairs(prompt: NodePrompt, branches: list[np.ndarray], labels: list[str], max_pairs: int
               ) -> list[tuple[np.ndarray, np.ndarray, int]]:
  """Pairs at one node from its branches (generated ids after the prefix) and their labels.

  Every rejected branch is paired with the golden continuation; then secure branches are paired with rejected
  ones, up to `max_pairs` pairs in all.
  """
  def seq(cont):
    return np.concatenate([prompt.prefix_ids, cont])

  rejected = [(b, BROKEN if lab == BROKEN else VULNERABLE) for b, lab in zip(branches, labels)
              if lab in (VULNERABLE, BROKEN)]
  secure = [b for b, lab in zip(branches, labels) if lab == SECURE]
  out = [(seq(prompt.chosen_ids), seq(b), KIND_GOLDEN_VS_BROKEN if lab == BROKEN else KIND_GOLDEN_VS_VULNERABLE)
         for b, lab in rejected]
  out += [(seq(s), seq(b), KIND_BRANCH_VS_REJECTED) for s in secure for b, _ in rejected]
  return out[:max_pairs]


def subtree_pairs(parent: np.ndarray, fork_pos: np.ndarray, slots: list[int], labels: dict[int, str]
                  ) -> list[tuple[int, int]]:
  """Decision nodes inside one prefix's tree: (secure leaf, vulnerable leaf) slot pairs split at a fork token.

  For each fork (child c of p at position f), side A is c's subtree and side B is p's own branch after f with
  the subtrees forked from p (or its B-side descendants) later than f. When one side's leaves are all secure and
  the other side has a vulnerable leaf, the fork token is the decision node: the first secure leaf of the clean
  side is paired with each vulnerable leaf of the other (their shared prefix ends at f).
  """
  children: dict[int, list[int]] = {s: [] for s in slots}
  for s in slots:
    if parent[s] >= 0 and parent[s] in children:
      children[parent[s]].append(s)

  def subtree(s: int, after: int) -> list[int]:
    """s and the descendants that share s's tokens up to position `after` (forked later than it)."""
    out = [s]
    for c in children[s]:
      if fork_pos[c] > after:
        out += subtree(c, -1)
    return out

  out = []
  for c in slots:
    p = int(parent[c])
    if p < 0 or p not in children:
      continue
    f = int(fork_pos[c])
    side_a, side_b = subtree(c, -1), subtree(p, f)
    for clean, dirty in ((side_a, side_b), (side_b, side_a)):
      if all(labels.get(x) == SECURE for x in clean):
        out += [(clean[0], d) for d in dirty if labels.get(d) == VULNERABLE]
  return out


def common_prefix_len(a: np.ndarray, b: np.ndarray) -> int:
  """Number of leading tokens `a` and `b` share."""
  m = min(len(a), len(b))
  diff = np.flatnonzero(a[:m] != b[:m])
  return int(diff[0]) if diff.size else m


def localized_pairs(prefix_ids: np.ndarray, branches: list[np.ndarray], labels: list[str],
                    finding_tokens: list[int | None], golden_ids: np.ndarray | None, max_pairs: int
                    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
  """Pairs at verifier-localized decision nodes, from rollouts of one prompt that has no patch to diff.

  A vulnerable branch v whose first counted finding lies in its token `finding_tokens[v]` (None: not localized,
  taken as its end) and a secure sibling s (or the golden function) part at token c = their common prefix length.
  When c <= the finding's token, token c is the decision node: the pair (s, v) is kept and its masks start at c
  (`pair_arrays`). When c is past the finding, the flagged code lies in tokens both share, so the labels cannot
  come from the choice at c and the pair is dropped. A secure branch is never rejected.
  """
  secure = [b for b, lab in zip(branches, labels) if lab == SECURE]
  if golden_ids is not None:
    secure = [golden_ids] + secure
  out = []
  for v, lab, at in zip(branches, labels, finding_tokens):
    if lab != VULNERABLE:
      continue
    limit = len(v) if at is None else at
    out += [(np.concatenate([prefix_ids, s]), np.concatenate([prefix_ids, v]), KIND_LOCALIZED)
            for s in secure if common_prefix_len(s, v) <= limit]
  return out[:max_pairs]
