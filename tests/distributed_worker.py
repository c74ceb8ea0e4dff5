"""One process of the multi-process train-step test (tests/test_distributed.py), also the single-process reference.

    JAX_COORDINATOR_ADDRESS=localhost:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i \
        python tests/distributed_worker.py          # with XLA_FLAGS=--xla_force_host_platform_device_count=4

Initialises jax.distributed from those variables (tsp_jax.distributed.maybe_initialize), builds the tiny TSP model
(configs/tsp.py:tiny, shrunk) from seeded host parameters and a fixed pair batch, runs one train step over a
(2, 2, 2) mesh of all global devices, feeding the batch as process-local halves, and prints one JSON line: loss, the
updated parameters' squared norm, and checks of the multi-host helpers. The single-process reference is the same
step on one device.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import tsp as tsp_config  # noqa: E402
from tsp_jax import config as config_lib  # noqa: E402
from tsp_jax import distributed, objective, train_step  # noqa: E402
from tsp_jax.model import llama, sharding  # noqa: E402

MESH_SHAPE = (2, 2, 2)
BATCH, LENGTH = 8, 32


# configs/tsp.py:tiny shrunk to one small layer (GQA kept) so the step compiles in seconds on a loaded CPU.
SMALL = dict(vocab_size=256, dim=64, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=64)


def model_config() -> llama.LlamaConfig:
  """The model of configs/tsp.py:tiny with the SMALL overrides."""
  c = tsp_config.get_config("tiny")
  c.model.overrides.update(SMALL)
  return config_lib.model_config(c, vocab_size=SMALL["vocab_size"], platform="cpu")


def pair_batch(vocab: int) -> tuple[objective.PairBatch, np.ndarray]:
  """A fixed batch of BATCH pairs sharing an 8-token prefix, and reference log-probs [BATCH, 2] (numpy)."""
  rng = np.random.default_rng(0)
  prefix = rng.integers(3, vocab, (BATCH, 8))
  chosen = np.concatenate([prefix, rng.integers(3, vocab, (BATCH, LENGTH - 8))], axis=1).astype(np.int32)
  rejected = np.concatenate([prefix, rng.integers(3, vocab, (BATCH, LENGTH - 8))], axis=1).astype(np.int32)
  mask = np.zeros((BATCH, LENGTH), np.float32)
  mask[:, 8:] = 1
  batch = objective.PairBatch(chosen=chosen, rejected=rejected, chosen_mask=mask, rejected_mask=mask.copy(),
                              weight=np.ones((BATCH,), np.float32))
  ref = rng.normal(-140.0, 5.0, (BATCH, 2)).astype(np.float32)  # off-policy reference: the loss is not log 2
  return batch, ref


def host_params(cfg: llama.LlamaConfig) -> llama.Params:
  """Seeded normal(0, 0.02) parameters as numpy (the same on every process; no init program to compile)."""
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda a: rng.normal(0.0, 0.02, a.shape).astype(np.float32), llama.abstract_params(cfg))


def one_step(local_rows: bool, mesh_shape: tuple[int, int, int] = MESH_SHAPE) -> dict[str, float]:
  """One sharded TSP train step over a mesh of the first prod(mesh_shape) global devices; the batch is fed
  whole or as process-local rows."""
  cfg = model_config()
  mesh = sharding.make_mesh(mesh_shape, jax.devices()[:int(np.prod(mesh_shape))])
  loss_cfg = objective.LossConfig(name="tsp", beta=0.1)
  tx = train_step.make_optimizer(train_step.OptimConfig(lr=1e-3, total_steps=10))
  shardings = train_step.state_shardings(cfg, tx, mesh)
  params = distributed.host_to_global(host_params(cfg), shardings.params)
  state = train_step.init_state(params, tx, shardings)
  batch, ref = pair_batch(cfg.vocab_size)
  if local_rows:
    rows = BATCH // jax.process_count()
    local = jax.tree.map(lambda x: x[jax.process_index() * rows:(jax.process_index() + 1) * rows], (batch, ref))
    batch, ref = distributed.from_process_local(local, mesh)
  else:
    batch, ref = distributed.global_batch((batch, ref), mesh)
  state, metrics = train_step.make_train_step(cfg, loss_cfg, tx, shardings)(state, batch, ref)
  sq_norm = jax.jit(lambda p: sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p)))(state.params)
  embed = sharding.to_host(state.params["embed"])  # [V, D], whole on every process
  return {"loss": float(metrics["loss"]), "param_sq_norm": float(sq_norm),
          "embed_sum": float(np.sum(embed.astype(np.float64))), "embed_shape": list(embed.shape)}


def main() -> None:
  multihost = distributed.maybe_initialize()
  result = one_step(local_rows=multihost)
  largest = distributed.max_over_processes(jax.process_index() + 1)
  share = distributed.process_share(5)  # e.g. the branches this host's verifier pool labels
  labels = distributed.gather_shares(np.array([10 * i for i in share], np.int32), 5)
  distributed.sync("done")
  print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(), "multihost": multihost,
                    "devices": jax.device_count(), "local_devices": jax.local_device_count(),
                    "primary": distributed.is_primary(), "max_over_processes": largest, "share": list(share),
                    "gathered": labels.tolist(), **result}), flush=True)


if __name__ == "__main__":
  main()
