r"""Memory and throughput plan of a trainer config on TPU slices or NVIDIA GPUs, from abstract shapes (nothing is
allocated).

    python -m tsp_jax.plan                                      # CodeLlama-7B: configs/tpu.py v4_32, v5e_16, v5p_8
    python -m tsp_jax.plan --gpu                                # CodeLlama-7B: configs/gpu.py (1 and 8 GPUs)
    python -m tsp_jax.plan --config=configs/tsp.py:codellama_7b --tpu=v4-32,v5litepod-16,v5p-8,h100-8
    python -m tsp_jax.plan --config=configs/tsp.py:tiny --cross_check   # + XLA memory_analysis on this CPU

An accelerator is a TPU slice type (`v4-32`) or `<gpu>-<count>` (`h100-1`, `h200-8`, `a100-8`: GPUs of one host,
NVLink between them in the place of ICI); a config names its own in `accelerator` (configs/tpu.py, configs/gpu.py).
Per chip, for the config's mesh (`mesh_shape`, -1 = the remaining chips) under `sharding.TRAIN_RULES`:
- params, optimizer state (AdamW moments, `optax.MultiSteps` accumulators) and gradients: the shapes of
  `llama.abstract_params` / `tx.init` divided exactly as `train_step.state_shardings` shards them;
- reference model: a resident copy of the params only with `loss.reference = "initial"` (the reference
  log-probs are computed once per round, before training, so `previous` keeps no second model);
- activations: the residuals `jax.vjp` saves for the backward pass of the config's loss on one chip's share of the
  micro-batch (dense pairs of `search.max_prefix + search.max_new_tokens` tokens, or with `packed` the node rows
  that share needs at most: `packed_rows`), traced abstractly on 1- and 2-layer
  copies of the model and extrapolated per layer, with `LlamaConfig.remat` off (`none`) and on (`full`: each block
  saves only its input; one block's residuals are live again while its backward pass recomputes them). The
  config's `model.overrides.remat` picks the one the trainer runs (`remat` in the table);
- tree search: KV cache of S = prefixes_per_batch x slots_per_prefix slots x max_new_tokens generated tokens plus
  the P prefixes' shared cache (max_prefix tokens each) and their prefill logits, batch-sharded under
  `sharding.SAMPLE_RULES`, next to the params and the optimizer state still referenced from the previous round.
Activations are traced with the portable "xla" attention (scores materialised): on GPUs, cuDNN's fused attention
keeps less, so the GPU figures are upper bounds.
Roofline (lower bounds: perfect overlap, peak FLOP/s, HBM and ICI bandwidth): a train micro-step is
max(6 N tokens (8 N with remat) + attention FLOPs / peak, FSDP weight all-gathers (forward + backward, compute
dtype) and gradient reduce-scatter (param dtype) / ICI); a decode step of the tree search is max(FLOPs / peak,
(weights + KV cache) / HBM, weight all-gather / ICI) (weights stay FSDP-sharded while sampling).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from ml_collections import config_flags

from tsp_jax import config as config_lib
from tsp_jax.chips import CHIPS, GiB, Chip
from tsp_jax import objective, train_step
from tsp_jax.model import llama, sharding

HBM_HEADROOM = 0.9  # the share of HBM a program may use (XLA/runtime reserve the rest)


CORES_PER_CHIP = {"v4": 2, "v5p": 2}  # the accelerator type counts cores on v4/v5p (chips or GPUs elsewhere)


def parse_accelerator(name: str) -> tuple[Chip, int]:
  """`v4-32` -> (v4 chip, 16 chips); `v5litepod-16` -> (v5e, 16); `v5p-8` -> (v5p, 4); `h100-8` -> (H100, 8)."""
  gen, _, count = name.rpartition("-")
  if gen not in CHIPS or not count.isdigit():
    raise ValueError(f"unknown accelerator type {name!r}; expected one of {sorted(CHIPS)} followed by -<count>")
  return CHIPS[gen], int(count) // CORES_PER_CHIP.get(gen, 1)


def abstract_mesh(mesh_shape: Sequence[int], chips: int) -> AbstractMesh:
  """A (data, fsdp, tensor) AbstractMesh over `chips` devices (one -1 entry takes the rest)."""
  shape = list(mesh_shape)
  if -1 in shape:
    shape[shape.index(-1)] = chips // math.prod(s for s in shape if s != -1)
  if math.prod(shape) != chips:
    raise ValueError(f"mesh shape {tuple(mesh_shape)} does not fit {chips} chips")
  return AbstractMesh(tuple(shape), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def optimizer(config: ml_collections.ConfigDict):
  """The trainer's optimizer (its state's shapes do not depend on the schedule's length)."""
  return train_step.make_optimizer(config_lib.optim_config(config, updates=1))


def _bytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _chip_bytes(abstract, shardings) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs under a matching tree of NamedShardings."""
  leaves = zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))
  return sum(int(np.prod(sh.shard_shape(a.shape))) * jnp.dtype(a.dtype).itemsize for a, sh in leaves)


def packed_rows(config: ml_collections.ConfigDict, pairs: int) -> int:
  """Rows of `packed_length` tokens a micro-batch of `pairs` pairs fills (at most), assuming full-length prefixes
  and continuations: tsp nodes of K branches + the golden rest with K pairs each (every branch rejected, the
  fewest pairs per node) plus one node split with the previous batch; selfplay one pair (two continuations) per
  prompt."""
  s = config.search
  if config.mode == "tsp":
    tokens = (math.ceil(pairs / s.k) + 1) * (s.max_prefix + (s.k + 1) * s.max_new_tokens)
  else:
    tokens = pairs * (s.max_prefix + 2 * s.max_new_tokens)
  return math.ceil(tokens / config_lib.packed_length(config))


def abstract_batch(config: ml_collections.ConfigDict, batch: int, shards: int = 1):
  """ShapeDtypeStructs of one shard's micro-batch of `batch` examples (of `shards` * `batch` in all) and its
  reference log-probs (None for sft); with packed training, that shard's node rows: the micro-batch's rows
  (`packed_rows`) in whole shards, every row with a slot for each pair of the micro-batch."""
  length = config_lib.train_length(config)
  tok = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  mask = jax.ShapeDtypeStruct((batch, length), jnp.float32)
  if config_lib.loss_config(config).name == "sft":
    return objective.SeqBatch(tokens=tok, mask=mask), None
  if config_lib.packed_length(config):
    rows, cols, slots = -(-packed_rows(config, batch * shards) // shards), config_lib.packed_length(config), \
        batch * shards
    row = jax.ShapeDtypeStruct((rows, cols), jnp.int32)
    slot_mask = jax.ShapeDtypeStruct((rows, slots, cols), jnp.float32)
    packed = objective.PackedPairBatch(tokens=row, positions=row, ids=row, root=row, pred=row, chosen_mask=slot_mask,
                                       rejected_mask=slot_mask,
                                       weight=jax.ShapeDtypeStruct((rows, slots), jnp.float32))
    return packed, jax.ShapeDtypeStruct((rows, slots, 2), jnp.float32)
  pair = objective.PairBatch(chosen=tok, rejected=tok, chosen_mask=mask, rejected_mask=mask,
                             weight=jax.ShapeDtypeStruct((batch,), jnp.float32))
  return pair, jax.ShapeDtypeStruct((batch, 2), jnp.float32)


def residual_bytes(cfg: llama.LlamaConfig, loss_cfg: objective.LossConfig, batch, ref, param_shards: dict) -> int:
  """Bytes one chip keeps of the residuals jax.vjp saves for the backward pass of the loss on `batch` (one chip's
  share), excluding the params and the batch themselves. A residual shaped like a parameter (its compute-dtype
  cast) is divided by that parameter's shard count (`param_shards`: shape -> shards)."""
  loss = objective.loss_fn(loss_cfg.name)

  def residuals(params, batch, ref):
    _, vjp_fn = jax.vjp(lambda p: loss(p, cfg, batch, ref, loss_cfg)[0], params)
    inputs = {id(x) for x in jax.tree.leaves((params, batch, ref))}
    return [r for r in jax.tree.leaves(vjp_fn) if id(r) not in inputs]

  found = jax.eval_shape(residuals, llama.abstract_params(cfg), batch, ref)
  return sum(_bytes(r) // param_shards.get(tuple(r.shape), 1) for r in found)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Per-chip bytes and roofline times of one config on one TPU slice or set of GPUs."""
  accelerator: str
  chip: Chip
  chips: int
  mesh: tuple[int, ...]
  pairs_per_chip: float
  params: int
  opt_state: int
  grads: int
  reference: int
  acts_none: int
  acts_full: int
  remat: bool  # the config's LlamaConfig.remat: whether training keeps acts_full (else acts_none)
  kv_cache: int
  search_extra: int  # prefill cache + prefill logits + tree buffers
  train_step_s: float
  train_compute_s: float
  train_comm_s: float
  decode_step_s: float
  slots: int

  @property
  def state(self) -> int:
    return self.params + self.opt_state + self.reference

  @property
  def train_peak_none(self) -> int:
    return self.state + self.grads + self.acts_none

  @property
  def train_peak_full(self) -> int:
    return self.state + self.grads + self.acts_full

  @property
  def train_peak(self) -> int:
    """The train peak of the config as it runs (with or without remat)."""
    return self.train_peak_full if self.remat else self.train_peak_none

  @property
  def search_peak(self) -> int:
    return self.state + self.kv_cache + self.search_extra

  def fits(self, nbytes: int) -> bool:
    return nbytes <= HBM_HEADROOM * self.chip.hbm_bytes

  @property
  def decode_tokens_per_s(self) -> float:
    return self.slots / self.decode_step_s


def plan(config: ml_collections.ConfigDict, accelerator: str) -> Plan:
  """The memory and throughput plan of a trainer config on an accelerator type (e.g. `v4-32`, `h100-1`)."""
  chip, chips = parse_accelerator(accelerator)
  mesh = abstract_mesh(config.mesh_shape, chips)
  cfg = config_lib.model_config(config, platform="tpu")
  loss_cfg = config_lib.loss_config(config)
  tx = optimizer(config)

  # Train state, exactly as train_step.state_shardings shards it.
  shardings = train_step.state_shardings(cfg, tx, mesh)
  abstract = llama.abstract_params(cfg)
  params = _chip_bytes(abstract, shardings.params)
  opt_state = _chip_bytes(jax.eval_shape(tx.init, abstract), shardings.opt_state)
  reference = params if config.loss.reference == "initial" and loss_cfg.name != "sft" else 0

  # Activations: one chip's share of the micro-batch (batch sharded like the trainer's batch, or replicated).
  batch_spec = sharding.logical_to_spec(("batch",), sharding.TRAIN_RULES, (config.batch_size,), mesh)
  batch_shards = math.prod(mesh.shape[a] for a in jax.tree.leaves(tuple(batch_spec)))
  per_chip = config.batch_size // batch_shards
  batch, ref = abstract_batch(config, per_chip, batch_shards)
  param_shards = {tuple(a.shape): int(np.prod(a.shape)) // int(np.prod(sh.shard_shape(a.shape)))
                  for a, sh in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings.params))}

  def acts(remat: bool) -> tuple[int, int]:
    """(outside the blocks, per block) residual bytes of the model with or without per-layer remat."""
    one, two = (residual_bytes(dataclasses.replace(cfg, n_layers=n, remat=remat), loss_cfg, batch, ref,
                               param_shards) for n in (1, 2))
    return 2 * one - two, two - one

  outside, per_layer = acts(False)
  outside_remat, per_layer_remat = acts(True)  # per block: its input
  acts_none = outside + cfg.n_layers * per_layer
  acts_full = outside_remat + cfg.n_layers * per_layer_remat + per_layer
  length = config_lib.train_length(config)

  # Tree search: S slots x generated tokens of KV cache and the P prefixes' shared cache, batch-sharded by
  # SAMPLE_RULES.
  s = config.search
  cache_len = s.max_prefix + s.max_new_tokens
  slots = s.prefixes_per_batch * s.slots_per_prefix

  def cache_bytes(rows: int, length: int) -> int:
    one_layer = 0
    for shape, axes in zip(llama.cache_shapes(cfg, rows, length), (llama.CACHE_K_AXES, llama.CACHE_V_AXES)):
      spec = sharding.logical_to_spec(axes, sharding.SAMPLE_RULES, shape, mesh)
      one_layer += int(np.prod(NamedSharding(mesh, spec).shard_shape(shape))) * jnp.dtype(cfg.dtype).itemsize
    return cfg.n_layers * one_layer

  def batch_share(rows: int) -> int:
    spec = sharding.logical_to_spec(("batch",), sharding.SAMPLE_RULES, (rows,), mesh)
    return rows // math.prod(mesh.shape[a] for a in jax.tree.leaves(tuple(spec)))

  kv_cache = cache_bytes(slots, s.max_new_tokens)
  prefill_logits = batch_share(s.prefixes_per_batch) * s.max_prefix * cfg.vocab_size * 4
  tree_buffers = batch_share(slots) * (cache_len * (4 * 3 + 4) + cfg.vocab_size * 4)  # 3 f32 + ids [S, L]; logits
  search_extra = cache_bytes(s.prefixes_per_batch, s.max_prefix) + prefill_logits + tree_buffers

  # Roofline of a train micro-step (FSDP over `fsdp`, gradients all-reduced over `data`).
  n_matmul = cfg.num_params() - cfg.vocab_size * cfg.dim  # the embedding is a gather
  row_len = config_lib.packed_length(config) if loss_cfg.name != "sft" else 0
  if row_len:  # packed node rows: each chip's share of the micro-batch in its own rows
    tokens = -(-packed_rows(config, config.batch_size) // batch_shards) * batch_shards * row_len
    length = row_len
  else:
    tokens = config.batch_size * (1 if loss_cfg.name == "sft" else 2) * length
    if config.loss.sft_weight > 0:
      tokens = tokens * 3 // 2  # the SFT term runs a second forward over the chosen sequences
  attn = 4 * cfg.n_layers * length * length * cfg.dim * tokens // length  # QK^T and PV over the full square
  flops = (4 if cfg.remat else 3) * (2 * n_matmul * tokens + attn)  # remat: the backward reruns the forward
  compute_s = flops / (chips * chip.peak_flops)
  fsdp, data = mesh.shape["fsdp"], mesh.shape["data"]
  w_compute = n_matmul * jnp.dtype(cfg.dtype).itemsize / mesh.shape["tensor"]
  w_param = n_matmul * jnp.dtype(cfg.param_dtype).itemsize / mesh.shape["tensor"]
  comm = (2 * w_compute + w_param) * (fsdp - 1) / fsdp + 2 * w_param / fsdp * (data - 1) / data
  comm_s = comm / chip.ici_bw

  # Roofline of one decode step of the tree search (all S slots, weights FSDP-sharded and all-gathered).
  decode_flops = 2 * n_matmul * slots + 4 * cfg.n_layers * cache_len * cfg.dim * slots
  decode_hbm = w_compute + kv_cache + cache_bytes(s.prefixes_per_batch, s.max_prefix)
  decode_s = max(decode_flops / (chips * chip.peak_flops), decode_hbm / chip.hbm_bw,
                 w_compute * (fsdp - 1) / fsdp / chip.ici_bw)

  return Plan(accelerator=accelerator, chip=chip, chips=chips, mesh=tuple(mesh.shape.values()), pairs_per_chip=per_chip,
              params=params, opt_state=opt_state, grads=params, reference=reference, acts_none=acts_none,
              acts_full=acts_full, remat=cfg.remat, kv_cache=kv_cache, search_extra=search_extra,
              train_step_s=max(compute_s, comm_s), train_compute_s=compute_s, train_comm_s=comm_s,
              decode_step_s=decode_s, slots=slots)


def table(rows: Sequence[tuple[str, Plan]]) -> str:
  """Markdown tables (memory per chip in GiB; roofline throughput) of (config name, plan) rows."""
  g = lambda b: f"{b / GiB:.3g}"
  yes = lambda p, b: "yes" if p.fits(b) else "**no**"
  out = ["| config | accelerator (chips, mesh d/f/t) | pairs/chip | remat | params | optimizer | grads | ref model | "
         "activations: no remat / full remat | train peak: no remat / full remat | KV cache (S x new tokens) | "
         "search peak | HBM | fits: train no remat / full remat / search |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, p in rows:
    out.append(f"| {name} | {p.accelerator} ({p.chips}, {'/'.join(map(str, p.mesh))}) | {p.pairs_per_chip:g} | "
               f"{'full' if p.remat else 'none'} | {g(p.params)} | {g(p.opt_state)} | {g(p.grads)} | "
               f"{g(p.reference)} | "
               f"{g(p.acts_none)} / {g(p.acts_full)} | {g(p.train_peak_none)} / {g(p.train_peak_full)} | "
               f"{g(p.kv_cache)} | {g(p.search_peak)} | {g(p.chip.hbm_bytes)} | "
               f"{yes(p, p.train_peak_none)} / {yes(p, p.train_peak_full)} / {yes(p, p.search_peak)} |")
  out += ["", "| config | accelerator | train micro-step: compute / FSDP comm (s) | train step >= (s) | pairs/s <= | "
          "decode step >= (ms) | slot-tokens/s <= |", "|---|---|---|---|---|---|---|"]
  for name, p in rows:
    pairs = p.pairs_per_chip * p.chips
    out.append(f"| {name} | {p.accelerator} | {p.train_compute_s:.3g} / {p.train_comm_s:.3g} | {p.train_step_s:.3g} | "
               f"{pairs / p.train_step_s:.3g} | {1e3 * p.decode_step_s:.3g} | {p.decode_tokens_per_s:,.0f} |")
  return "\n".join(out)


def cross_check(config: ml_collections.ConfigDict) -> dict[str, int]:
  """XLA's memory_analysis of the config's train step compiled for this host's first device, next to the plan.

  Returns bytes: `xla_arguments` (train state + batch), `xla_temp` (gradients, activations and scratch),
  `plan_state` (params + optimizer state + step counter) + `plan_batch`, and `plan_temp` (gradients + activations,
  with the config's remat setting) of the same config on one chip.
  """
  cfg = config_lib.model_config(config)
  tx = optimizer(config)
  abstract = llama.abstract_params(cfg)
  state = jax.eval_shape(lambda p: train_step.init_state(p, tx), abstract)
  batch, ref = abstract_batch(config, config.batch_size)
  step = train_step.make_train_step(cfg, config_lib.loss_config(config), tx)
  mem = step.lower(state, batch, ref).compile().memory_analysis()
  p = plan_one_device(config)
  return {"xla_arguments": int(mem.argument_size_in_bytes), "xla_temp": int(mem.temp_size_in_bytes),
          "plan_state": _bytes(state), "plan_batch": _bytes((batch, ref)),
          "plan_temp": p.train_peak - p.state}


def plan_one_device(config: ml_collections.ConfigDict) -> Plan:
  """The plan of a config on a single chip (mesh 1 x 1 x 1): what a one-device CPU compile holds."""
  with config.unlocked():
    one = ml_collections.ConfigDict(config.to_dict())
  one.mesh_shape = (1, 1, 1)
  return plan(one, "v5litepod-1")


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`path/to/config.py[:arg]` -> its `get_config(arg)` (as `--config=` loads it)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


TPU_CONFIGS = ("configs/tpu.py:v4_32", "configs/tpu.py:v5e_16", "configs/tpu.py:v5p_8")  # from the checkout
GPU_CONFIGS = ("configs/gpu.py:h100_1", "configs/gpu.py:a100_1", "configs/gpu.py:h200_1", "configs/gpu.py:h100_8",
               "configs/gpu.py:h200_8")


def _cli_main() -> None:
  """Defines the flags here, not at import (the library modules define none at import)."""
  config_flag = config_flags.DEFINE_config_file(
      "config", None, f"Trainer config file[:variant] (default: {', '.join(TPU_CONFIGS)}, each on its own "
      "slice).", lock_config=False)
  gpu_flag = flags.DEFINE_bool("gpu", False, f"Without --config: the GPU presets ({', '.join(GPU_CONFIGS)}).")
  tpu_flag = flags.DEFINE_list("tpu", None, "Accelerator types: TPU slices (v4-32) or GPUs (h100-8) (default: the "
                               "config's `accelerator` field).")
  cross_check_flag = flags.DEFINE_bool("cross_check", False, "Also compile the train step on this host and "
                                       "compare XLA's memory_analysis with the plan (small configs only).")

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if config_flag.value is None:
      configs = [(spec.rpartition("/")[2], load_config(spec)) for spec in (GPU_CONFIGS if gpu_flag.value else
                                                                                TPU_CONFIGS)]
      rows = [(name, plan(c, c.accelerator)) for name, c in configs]
      first = configs[0][1]
    else:
      first = config_flag.value
      rows = [(f"{first.get('variant', '')}", plan(first, t))
              for t in tpu_flag.value or [first.get("accelerator") or "v4-32"]]
    cfg = config_lib.model_config(first, platform="tpu")
    print(f"model: {cfg.num_params():,} parameters (dim {cfg.dim}, {cfg.n_layers} layers, vocab {cfg.vocab_size}), "
          f"activations {cfg.dtype}, params {cfg.param_dtype}; HBM use allowed: {HBM_HEADROOM:.0%}\n")
    print(table(rows))
    if cross_check_flag.value and config_flag.value is not None:
      c = cross_check(config_flag.value)
      print(f"\ncross-check on {jax.devices()[0].platform} (one device): XLA arguments {c['xla_arguments']:,} B vs "
            f"plan state + batch {c['plan_state'] + c['plan_batch']:,} B; XLA temp {c['xla_temp']:,} B vs plan "
            f"gradients + activations {c['plan_temp']:,} B (ratio {c['xla_temp'] / c['plan_temp']:.2f})")

  app.run(main)


if __name__ == "__main__":
  _cli_main()
