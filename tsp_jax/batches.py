"""From a host `PairSet` to device batches, and the passes over a whole PairSet outside the train step: the
reference log-probs (once per round) and the dev-pair metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from tsp_jax import objective, packing, pairs
from tsp_jax.model import llama, sharding


LENGTH_BUCKET = 64  # batches are cut to the bucket that holds their longest scored row (a few compiled shapes)


def batch_length(masks: Sequence[np.ndarray], bucket: int = LENGTH_BUCKET) -> int:
  """Columns a batch needs: up to one past its last scored token (causal: later columns change nothing that is
  scored), rounded up to a multiple of `bucket`, at most the padded length. masks: [B, L] each."""
  total = masks[0].shape[1]
  used = max((int(np.max(np.nonzero(m.any(axis=0))[0], initial=-1)) + 2 for m in masks), default=total)
  return min(total, -(-max(used, 1) // bucket) * bucket)


def to_batch(ps: pairs.PairSet, idx: np.ndarray, batch_size: int, loss: str
             ) -> tuple[objective.SeqBatch | objective.PairBatch, np.ndarray | None]:
  """The batch of pair indices `idx` [n <= batch_size] for `loss` (padded with zero-weight rows, cut to
  `batch_length` columns) and its reference log-probs [batch_size, 2] (None for the `sft` loss, whose batch is
  the chosen sequences)."""
  n = len(idx)
  full = np.concatenate([idx, np.full(batch_size - n, idx[0])]) if n < batch_size else idx  # [batch_size]
  weight = (np.arange(batch_size) < n).astype(np.float32)  # [batch_size]
  if loss == "sft":
    mask = ps.chosen_mask[full] * weight[:, None]
    length = batch_length([mask])
    if ps.segments is None:
      return objective.SeqBatch(tokens=ps.chosen[full, :length], mask=mask[:, :length]), None
    segments = ps.segments[full, :length]
    return objective.SeqBatch(tokens=ps.chosen[full, :length], mask=mask[:, :length], segments=segments,
                              positions=pairs.segment_positions(segments)), None
  length = batch_length([ps.chosen_mask[full], ps.rejected_mask[full]])
  batch = objective.PairBatch(chosen=ps.chosen[full, :length], rejected=ps.rejected[full, :length],
                              chosen_mask=ps.chosen_mask[full, :length],
                              rejected_mask=ps.rejected_mask[full, :length], weight=weight)
  return batch, ps.ref_logps[full]


@dataclasses.dataclass(frozen=True)
class Packed:
  """The packed layout of pair batches: flat rows of `length` tokens or tree rows (`packing.TreeLayout`), as many
  per batch as its pairs need rounded up to `multiple` (the data-parallel shards; a few compiled shapes, as
  `LENGTH_BUCKET` gives dense batches)."""
  length: int | packing.TreeLayout
  multiple: int = 1


def make_batch(ps: pairs.PairSet, idx: np.ndarray, batch_size: int, loss: str, packed: Packed | None = None):
  """`to_batch`, or with a packed layout (pair losses) `to_packed_batch` with `batch_size` pair slots."""
  if packed is None or loss == "sft":
    return to_batch(ps, idx, batch_size, loss)
  return to_packed_batch(ps, idx, packed.length, slots=batch_size, row_multiple=packed.multiple)


def to_packed_batch(ps: pairs.PairSet, idx: np.ndarray, length: int | packing.TreeLayout, rows: int | None = None,
                    slots: int | None = None, row_multiple: int = 1) -> tuple[objective.PackedPairBatch, np.ndarray]:
  """The pairs `idx` packed into flat rows of `length` tokens or tree rows (`packing.pack_pairs`; rows / slots:
  static shapes) and their reference log-probs [rows, slots, 2] (0 in empty slots)."""
  pk = packing.pack_pairs(ps, idx, length, rows, slots, row_multiple)
  return _packed_batch(pk), _packed_ref(ps, pk)


def _packed_batch(pk: packing.PackedPairs) -> objective.PackedPairBatch:
  return objective.PackedPairBatch(tokens=pk.tokens, positions=pk.positions, ids=pk.ids, root=pk.root, pred=pk.pred,
                                   chosen_mask=pk.chosen_mask, rejected_mask=pk.rejected_mask, weight=pk.weight,
                                   prefix_len=pk.prefix_len, chunk_len=pk.chunk_len)


def _packed_ref(ps: pairs.PairSet, pk: packing.PackedPairs) -> np.ndarray:
  """The reference log-probs of each slot's pair, [R, M, 2] (0 in empty slots)."""
  ref = np.zeros((*pk.pair_index.shape, 2), np.float32)
  if ps.ref_logps is not None:
    ref[pk.pair_index >= 0] = ps.ref_logps[pk.pair_index[pk.pair_index >= 0]]
  return ref


def scored_tokens(batch: objective.SeqBatch | objective.PairBatch | objective.PackedPairBatch) -> float:
  """Tokens a batch scores (both sides of a pair)."""
  if isinstance(batch, objective.SeqBatch):
    return float(np.sum(batch.mask))
  return float(np.sum(batch.chosen_mask + batch.rejected_mask))


def _passes(ps: pairs.PairSet, batch_size: int, packed_length: int | packing.TreeLayout) -> list[np.ndarray]:
  """One pass over every pair in batches (prefix groups together when packed)."""
  order = packing.grouped_order(ps, 0, 1) if packed_length else np.arange(len(ps))
  return [order[s:s + batch_size] for s in range(0, len(ps), batch_size)]


def reference_logps(params: llama.Params, cfg: llama.LlamaConfig, ps: pairs.PairSet, loss_cfg: objective.LossConfig,
                    batch_size: int, packed_length: int | packing.TreeLayout = 0) -> np.ndarray:
  """Reference log-probs of every pair, [N, 2], computed once (jitted, batch by batch; packed rows of
  `packed_length` tokens when > 0, or tree rows of a `packing.TreeLayout`)."""
  ref_fn = jax.jit(lambda p, b: objective.reference_logps(p, cfg, b, loss_cfg))
  unset = dataclasses.replace(ps, ref_logps=np.zeros((len(ps), 2), np.float32))
  out = np.zeros((len(ps), 2), np.float32)
  for idx in _passes(unset, batch_size, packed_length):
    if not packed_length:
      batch, _ = to_batch(unset, idx, batch_size, "dpo")
      out[idx] = sharding.to_host(ref_fn(params, batch))[:len(idx)]
    else:
      pk = packing.pack_pairs(unset, idx, packed_length, slots=batch_size)
      ref = sharding.to_host(ref_fn(params, _packed_batch(pk)))  # [R, M, 2]
      out[pk.pair_index[pk.pair_index >= 0]] = ref[pk.pair_index >= 0]
  return out


def pair_metrics(params: llama.Params, cfg: llama.LlamaConfig, ps: pairs.PairSet, loss_cfg: objective.LossConfig,
                 batch_size: int, packed_length: int | packing.TreeLayout = 0) -> dict[str, float]:
  """Implicit-reward accuracy / margin vs the pairs' reference, and the policy's own preference accuracy
  (mean log-prob per scored token: chosen > rejected), over a whole PairSet (packed rows when packed_length > 0,
  or tree rows of a `packing.TreeLayout`)."""
  loss = jax.jit(lambda p, b, r: objective.tsp_loss(p, cfg, b, r, loss_cfg)[1])
  logps = jax.jit(lambda p, b: objective.pair_logps(p, cfg, b, loss_cfg))
  sums, total, pref = {}, 0, 0.0
  for idx in _passes(ps, batch_size, packed_length):
    if not packed_length:
      batch, ref = to_batch(ps, idx, batch_size, "tsp")
      order = idx
    else:
      pk = packing.pack_pairs(ps, idx, packed_length, slots=batch_size)
      batch, ref = _packed_batch(pk), _packed_ref(ps, pk)
      order = pk.pair_index[pk.pair_index >= 0]
    m = sharding.to_host(loss(params, batch, ref))
    for k in ("dpo_loss", "reward_accuracy", "margin"):
      sums[k] = sums.get(k, 0.0) + float(m[k]) * len(idx)
    c, r = sharding.to_host(logps(params, batch))  # [B] dense, [R * M] packed
    if packed_length:
      c, r = c[pk.pair_index.reshape(-1) >= 0], r[pk.pair_index.reshape(-1) >= 0]
    per_c = c[:len(idx)] / np.maximum(ps.chosen_mask[order].sum(1), 1)
    per_r = r[:len(idx)] / np.maximum(ps.rejected_mask[order].sum(1), 1)
    pref += float(np.sum(per_c > per_r))
    total += len(idx)
  return {**{k: v / total for k, v in sums.items()}, "preference_accuracy": pref / total}
