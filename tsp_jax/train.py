r"""Trainer: SFT, sequence-level self-play (SPIN) and Tree-like Self-Play, with checkpoints and resume.

    python -m tsp_jax.train --config=configs/tsp.py:tiny --workdir=runs/tsp [--config.rounds=2 ...]

Each round: the mode's pair source (`tsp_jax.sources`) builds the round's pairs from the current model, the
reference log-probs are computed once, then epochs of the mode's loss with AdamW, checkpointed. Everything a
round produces is written under `<workdir>/rounds/<r>/` before training starts and orbax checkpoints hold the
train state with the round and the position in the round's data order, so a killed run restarted with the same
command resumes exactly where it stopped. The workdir may be a `gs://` URI (files through `etils.epath`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from tsp_jax import batches, data, distributed, metrics_log, objective, packing, pairs, sources, train_step
from tsp_jax import config as config_lib
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.model import convert, llama, sharding

META_START = {"round": 0, "step_in_round": 0, "global_step": 0}  # where a run without checkpoints starts


def load_tokenizer(config: ml_collections.ConfigDict, workdir: epath.Path, records: list[data.Record]
                   ) -> tokenizer_lib.Tokenizer:
  """The checkpoint's tokenizer.model, or (small-model mode) one trained on the training records' code."""
  if config.init_checkpoint:
    return tokenizer_lib.Tokenizer.from_dir(config.init_checkpoint)
  path = workdir / "tokenizer.model"
  if path.exists():  # trained before a restart
    return tokenizer_lib.Tokenizer(path)
  texts = [t for r in records for t in (data.model_prompt(r), r.golden, r.vulnerable) if t]
  return tokenizer_lib.train_tokenizer(texts, config.tokenizer_vocab_size, path, seed=config.seed,
                                       split_words=config.tokenizer_split_words)


def initial_params(config: ml_collections.ConfigDict, cfg: llama.LlamaConfig, mesh) -> llama.Params:
  """The starting model: the HF checkpoint, or a seeded random init (small-model mode)."""
  if config.init_checkpoint:
    return convert.load_hf_checkpoint(config.init_checkpoint, dtype=jnp.float32, mesh=mesh)[1]
  return llama.init_params(cfg, jax.random.key(config.seed), mesh=mesh)


def checkpoint_manager(config: ml_collections.ConfigDict, workdir: epath.Path) -> ocp.CheckpointManager:
  """Orbax checkpoints in `config.checkpoint_dir`, default `<workdir>/checkpoints` (local or gs://)."""
  path = config.checkpoint_dir or str(workdir / "checkpoints")
  if not metrics_log.is_remote(path):
    path = os.path.abspath(path)
  return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                                                          create=True))


def restore(manager: ocp.CheckpointManager, cfg: llama.LlamaConfig, params: llama.Params, mesh, grad_accum: int
            ) -> tuple[dict[str, int], train_step.TrainState | None]:
  """The position (round, step in round, global step) and train state of the latest checkpoint, if any."""
  latest = manager.latest_step()
  if latest is None:
    return dict(META_START), None
  meta = {**META_START, **manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]}
  # The optimizer state's structure does not depend on the schedule: any round's tx gives the target.
  tx = train_step.make_optimizer(train_step.OptimConfig(grad_accum=grad_accum))
  shardings = train_step.state_shardings(cfg, tx, mesh)
  target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                        jax.eval_shape(lambda p: train_step.init_state(p, tx), params), shardings)
  state = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  logging.info("resumed from checkpoint %d: %s", latest, meta)
  return meta, state


def round_schedule(config: ml_collections.ConfigDict, num_pairs: int,
                   grouped: Callable[[int], np.ndarray] | None = None
                   ) -> tuple[train_step.OptimConfig, grain.MapDataset]:
  """The round's optimizer settings and its data order: pair indices, shuffled per epoch, batched.

  grouped: `epochs -> pair indices` in an order of its own (packed batches: `packing.grouped_order`, each prefix
  group's pairs together so that a micro-batch shares their prefixes).
  """
  epochs = config.optim.epochs
  if config.optim.steps:  # a fixed budget of micro-batches, whatever the number of pairs (equal-compute arms)
    epochs = math.ceil(config.optim.steps * config.batch_size / num_pairs)
  if grouped is not None:
    order = grain.MapDataset.source(grouped(epochs)).batch(config.batch_size)
  else:
    order = grain.MapDataset.range(num_pairs).shuffle(seed=config.seed).repeat(epochs).batch(config.batch_size)
  if config.optim.steps:
    order = order[:config.optim.steps]
  return config_lib.optim_config(config, max(1, math.ceil(len(order) / config.optim.grad_accum))), order


@dataclasses.dataclass
class Run:
  """What the round loop needs, built once by `setup`."""
  config: ml_collections.ConfigDict
  workdir: epath.Path
  log: metrics_log.MetricsLog
  mesh: jax.sharding.Mesh
  tok: tokenizer_lib.Tokenizer
  cfg: llama.LlamaConfig
  loss_cfg: objective.LossConfig
  source: sources.PairSource
  manager: ocp.CheckpointManager
  initial: llama.Params | None  # the reference model of `loss.reference = "initial"`
  meta: dict[str, int]  # where to resume
  restored: train_step.TrainState | None  # the mid-round state to resume from


def setup(config: ml_collections.ConfigDict, workdir: epath.Path, log: metrics_log.MetricsLog
          ) -> tuple[Run, llama.Params]:
  """Data, tokenizer, model, pair source and the latest checkpoint; returns the run and its current params."""
  mesh = sharding.make_mesh(config.mesh_shape)
  logging.info("process %d/%d, %d devices, mesh %s", jax.process_index(), jax.process_count(), jax.device_count(),
               dict(mesh.shape))
  train_data = data.load_train_data(config.data_dir, config.train_split, config.dev_split, config.seed,
                                    config.dev_nodes, config.languages)
  log.write({"event": "data", **train_data.counts})
  tok = load_tokenizer(config, workdir, train_data.records)
  cfg = config_lib.model_config(config, tok.vocab_size)
  manager = checkpoint_manager(config, workdir)
  params = initial_params(config, cfg, mesh)
  initial = params if config.loss.reference == "initial" else None
  meta, restored = restore(manager, cfg, params, mesh, config.optim.grad_accum)
  run = Run(config=config, workdir=workdir, log=log, mesh=mesh, tok=tok, cfg=cfg,
            loss_cfg=config_lib.loss_config(config), source=sources.make(config, tok, train_data), manager=manager,
            initial=initial, meta=meta, restored=restored)
  return run, params if restored is None else restored.params


def pair_layout(run: Run, ps: pairs.PairSet) -> int | packing.TreeLayout:
  """How a round's pairs are packed: tree rows sized to `ps` (`packing.tree_layout`, `packed_chunks` chunks,
  costed with the model's `packing.score_cost`) where the model's kernel computes tree attention block by block
  ("cpu"), else flat rows of `config_lib.packed_length` tokens (0: dense pair batches)."""
  length = config_lib.packed_length(run.config)
  if length and run.config.packed_chunks > 0 and run.cfg.kernel == "cpu" and len(ps):
    return packing.tree_layout(ps, run.config.packed_chunks, score_cost=packing.score_cost(run.cfg))
  return length


def round_pairs(run: Run, r: int, params: llama.Params, global_step: int
                ) -> tuple[pairs.PairSet, pairs.PairSet | None]:
  """Round r's pairs and dev pairs with their reference log-probs: built and written to `rounds/<r>/`, or read
  back from there after a restart."""
  c, round_dir = run.config, run.workdir / "rounds" / str(r)
  round_dir.mkdir(parents=True, exist_ok=True)
  ps_path, dev_path = round_dir / "pairs.npz", round_dir / "dev_pairs.npz"
  if ps_path.exists():  # built before a restart: the same pairs and reference log-probs
    return pairs.PairSet.load(ps_path), pairs.PairSet.load(dev_path) if dev_path.exists() else None
  t0 = time.time()
  rng = jax.random.fold_in(jax.random.key(c.seed), r)
  ps, counts = run.source.round_pairs(params, run.cfg, rng, r)
  if len(ps) == 0:  # e.g. every branch of a weak model dropped: the round trains nothing (see train_round)
    logging.warning("round %d produced no training pairs: %s", r, counts)
    ps.save(ps_path)
    run.log.write({"event": "round_data", "round": r, "seconds": time.time() - t0, **counts}, global_step)
    return ps, None
  ref_params = run.initial if run.initial is not None else params
  paired = run.loss_cfg.name != "sft"
  if paired:
    ps.ref_logps = batches.reference_logps(ref_params, run.cfg, ps, run.loss_cfg, c.batch_size, pair_layout(run, ps))
  dev_built = run.source.dev_pairs(params, run.cfg, rng) if paired else None
  dev = None
  if dev_built is not None:
    dev, dev_counts = dev_built
    counts.update({f"dev_{k}": v for k, v in dev_counts.items()})
    if len(dev):
      dev.ref_logps = batches.reference_logps(ref_params, run.cfg, dev, run.loss_cfg, c.batch_size,
                                              pair_layout(run, dev))
      dev.save(dev_path)
    else:
      dev = None
  ps.save(ps_path)  # after the dev pairs: a round is built again unless both were written
  run.log.write({"event": "round_data", "round": r, "seconds": time.time() - t0, **counts}, global_step)
  return ps, dev


def train_round(run: Run, r: int, params: llama.Params, global_step: int) -> tuple[llama.Params, int, dict]:
  """Round r from its start or from the restored mid-round state; returns params, global step and a summary."""
  c = run.config
  resume_step = run.meta["step_in_round"] if r == run.meta["round"] else 0
  ps, dev = round_pairs(run, r, params, global_step)
  if len(ps) == 0:
    run.log.write({"event": "round_skipped", "round": r, "reason": "no training pairs"}, global_step)
    return params, global_step, {"round": r, "pairs": 0}
  packed, dev_packed = pair_layout(run, ps), pair_layout(run, dev) if dev is not None else 0
  grouped = (lambda epochs: packing.grouped_order(ps, c.seed, epochs)) if packed else None
  ocfg, order = round_schedule(c, len(ps), grouped)
  layout = batches.Packed(packed, run.mesh.shape["data"] * run.mesh.shape["fsdp"]) if packed else None
  tx = train_step.make_optimizer(ocfg)
  shardings = train_step.state_shardings(run.cfg, tx, run.mesh)
  state = run.restored if resume_step > 0 else train_step.init_state(params, tx, shardings)
  step_fn = train_step.make_train_step(run.cfg, run.loss_cfg, tx, shardings)
  if dev is not None and resume_step == 0:
    before = batches.pair_metrics(state.params, run.cfg, dev, run.loss_cfg, c.batch_size, dev_packed)
    run.log.write({"event": "dev_before", "round": r, **before}, global_step)
  t_round = time.time()
  for i in range(resume_step, len(order)):
    t0 = time.time()
    batch, ref = batches.make_batch(ps, np.asarray(order[i]), c.batch_size, run.loss_cfg.name, layout)
    # Every process holds the whole batch: each puts its devices' rows (multi-host safe).
    state, metrics = step_fn(state, *distributed.global_batch((batch, ref), run.mesh))
    metrics = sharding.to_host(metrics)
    seconds = time.time() - t0
    global_step += 1
    run.log.write({"event": "train", "round": r, "step": i + 1, "steps": len(order), "global_step": global_step,
                   **metrics, "lr": float(train_step.schedule(ocfg)(min(i // ocfg.grad_accum, ocfg.total_steps))),
                   "step_s": seconds, "tokens_per_s": batches.scored_tokens(batch) / max(seconds, 1e-9),
                   "eta_s": (time.time() - t_round) / (i + 1 - resume_step) * (len(order) - i - 1)}, global_step)
    last = i + 1 == len(order)
    if last or (c.checkpoint_every > 0 and (i + 1) % c.checkpoint_every == 0):
      meta = {"round": r + 1, "step_in_round": 0} if last else {"round": r, "step_in_round": i + 1}
      run.manager.save(int(run.manager.latest_step() or 0) + 1, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({**meta, "global_step": global_step})))
      run.manager.wait_until_finished()
      run.log.flush()
  summary: dict[str, Any] = {"round": r, "pairs": len(ps)}
  if dev is not None:
    summary["dev_after"] = batches.pair_metrics(state.params, run.cfg, dev, run.loss_cfg, c.batch_size,
                                                dev_packed)
    run.log.write({"event": "dev_after", "round": r, **summary["dev_after"]}, global_step)
  return state.params, global_step, summary


def export(run: Run, params: llama.Params) -> str:
  """The final model as an HF folder `<workdir>/export` with its tokenizer.model (every process takes part)."""
  path = run.workdir / "export"
  convert.save_hf_checkpoint(params, run.cfg, path)  # process 0 writes
  if distributed.is_primary() and epath.Path(run.tok.model_path).exists():
    (path / "tokenizer.model").write_bytes(epath.Path(run.tok.model_path).read_bytes())
  distributed.sync("export")
  return str(path)


def run(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> dict[str, Any]:
  """Trains for `config.rounds` rounds (resuming from `workdir` if it holds checkpoints); returns a summary."""
  config = config_lib.resolve_dirs(config, data_dir="data")
  config_lib.validate_trainer(config)
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  log = metrics_log.MetricsLog(workdir, tensorboard=config.tensorboard, primary=distributed.is_primary())
  try:
    current, params = setup(config, workdir, log)
    summary: dict[str, Any] = {"rounds": []}
    global_step = current.meta["global_step"]  # train steps over all rounds (TensorBoard's step axis)
    with current.source, contextlib.closing(current.manager):
      for r in range(current.meta["round"], config.rounds):
        params, global_step, round_summary = train_round(current, r, params, global_step)
        summary["rounds"].append(round_summary)
    if config.export:
      summary["export"] = export(current, params)
    return summary
  finally:
    log.close()  # a remote metrics file is written out even when training fails


def _cli_main() -> None:
  """Defines the flags here, not at import, so that modules importing the trainer keep their own flag names."""
  config = config_flags.DEFINE_config_file("config", None, "Trainer config file[:variant].", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None,
                                "Output directory, local or gs:// (checkpoints, metrics, rounds, export).")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if workdir.value is None or config.value is None:
      raise app.UsageError("--config and --workdir are required")
    distributed.maybe_initialize()  # multi-host TPU slices only (see tsp_jax.distributed)
    run(config.value, workdir.value)

  app.run(main)


if __name__ == "__main__":
  _cli_main()
