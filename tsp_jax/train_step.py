"""The optimizer and the jitted, sharded train step (no I/O: the loop, data and checkpoints live in train.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tsp_jax import objective
from tsp_jax.model import llama, sharding


OPTIMIZERS = ("adamw", "adafactor")  # OptimConfig.optimizer values


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with linear warmup, cosine decay and global-norm clipping (the paper: lr 2e-5, warmup 0.1, clip 1).

  `optimizer="adafactor"` keeps factored second moments and no first moment instead of AdamW's two full moments
  (b1, b2 and eps are then unused): its state is a fraction of a percent of the params' bytes, what lets full
  fine-tuning of 7B with fp32 weights fit one 80 GB GPU (configs/gpu.py, `python -m tsp_jax.plan`).
  """
  lr: float = 2e-5
  warmup_steps: int = 0
  total_steps: int = 1000
  end_lr_ratio: float = 0.0
  weight_decay: float = 0.0
  clip_norm: float = 1.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  grad_accum: int = 1  # micro-batches per optimizer update
  optimizer: str = "adamw"  # one of OPTIMIZERS

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"OptimConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
    if self.lr <= 0 or self.total_steps < 1 or self.grad_accum < 1 or not 0 <= self.warmup_steps <= self.total_steps:
      raise ValueError(f"bad optimizer settings: {self}")


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32: micro-steps taken
  params: llama.Params
  opt_state: Any


def schedule(ocfg: OptimConfig) -> optax.Schedule:
  """Learning rate per optimizer update: linear warmup from 0, then cosine decay to end_lr_ratio * lr."""
  return optax.warmup_cosine_decay_schedule(0.0, ocfg.lr, ocfg.warmup_steps, ocfg.total_steps,
                                            end_value=ocfg.lr * ocfg.end_lr_ratio)


def make_optimizer(ocfg: OptimConfig) -> optax.GradientTransformation:
  """Clip -> AdamW(schedule) (or Adafactor without parameter scaling, momentum or update clipping: the learning
  rate means what it means for AdamW), accumulated over `grad_accum` micro-batches (optax.MultiSteps)."""
  if ocfg.optimizer == "adafactor":
    update = optax.adafactor(schedule(ocfg), multiply_by_parameter_scale=False, clipping_threshold=None,
                             weight_decay_rate=ocfg.weight_decay or None)
  else:
    update = optax.adamw(schedule(ocfg), ocfg.b1, ocfg.b2, ocfg.eps, weight_decay=ocfg.weight_decay)
  tx = optax.chain(optax.clip_by_global_norm(ocfg.clip_norm), update)
  return optax.MultiSteps(tx, every_k_schedule=ocfg.grad_accum) if ocfg.grad_accum > 1 else tx


def state_shardings(cfg: llama.LlamaConfig, tx: optax.GradientTransformation, mesh: Mesh,
                    rules: sharding.Rules = sharding.TRAIN_RULES):
  """NamedShardings of a TrainState: optimizer moments shaped like their parameters shard like them (AdamW's);
  the rest (factored moments, counters) is replicated."""
  param_sh = llama.param_shardings(cfg, mesh, rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract = llama.abstract_params(cfg)
  abstract_opt = jax.eval_shape(tx.init, abstract)
  opt_sh = optax.tree_map_params(tx, lambda leaf, sh, p: sh if leaf.shape == p.shape else replicated, abstract_opt,
                                 param_sh, abstract, transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=param_sh, opt_state=opt_sh)


def init_state(params: llama.Params, tx: optax.GradientTransformation, shardings: TrainState | None = None
               ) -> TrainState:
  """A fresh TrainState around `params` (placed in `shardings` when given)."""
  init = lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p))
  return jax.jit(init, out_shardings=shardings)(params)


class MeshStep:
  """A jitted function called (and lowered) under `mesh`: `sharding.constrain` reads the ambient mesh while tracing."""

  def __init__(self, jitted: Callable, mesh: Mesh):
    self.jitted, self.mesh = jitted, mesh

  def __call__(self, *args):
    with jax.set_mesh(self.mesh):
      return self.jitted(*args)

  def lower(self, *args):
    """AOT lowering (e.g. for `compile().memory_analysis()`)."""
    with jax.set_mesh(self.mesh):
      return self.jitted.lower(*args)


def make_train_step(cfg: llama.LlamaConfig, loss_cfg: objective.LossConfig, tx: optax.GradientTransformation,
                    shardings: TrainState | None = None, rules: sharding.Rules | None = sharding.TRAIN_RULES
                    ) -> Callable:
  """Returns `step(state, batch, ref_logps) -> (state, metrics)`, jitted, donating the state.

  batch is an `objective.PairBatch` (tsp, dpo) or `objective.SeqBatch` (sft); ref_logps [B, 2] or None.
  Metrics are reduced on device: the loss's metrics plus grad_norm and the learning rate of the update.
  With `shardings`, the step runs under their mesh and the forward constrains its activations by `rules` (batch
  over the data axes, heads / mlp / vocab over tensor): without constraints XLA may keep activations replicated.
  """
  loss = objective.loss_fn(loss_cfg.name)
  act_rules = None if shardings is None else rules

  def step(state: TrainState, batch, ref_logps):
    grad_fn = jax.value_and_grad(lambda p: loss(p, cfg, batch, ref_logps, loss_cfg, act_rules), has_aux=True)
    (_, metrics), grads = grad_fn(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  if shardings is None:
    return jax.jit(step, donate_argnums=(0,))
  return MeshStep(jax.jit(step, donate_argnums=(0,), out_shardings=(shardings, None)), shardings.step.mesh)
