"""Multi-host set-up: `jax.distributed.initialize()` on multi-host platforms only, and process-0-only I/O.

    from tsp_jax import distributed
    distributed.maybe_initialize()      # first thing in main(), before any other jax call
    if distributed.is_primary(): ...    # logs, metrics, exports

A run is multi-host when any of these holds (checked in this order):
- `TSP_DISTRIBUTED` is set: `1` forces initialisation, `0` disables it (`launch/tpu_vm.py run` sets it to 1 on
  slices with more than one worker);
- `JAX_COORDINATOR_ADDRESS` is set (explicit set-up; `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` then give the
  process count and this process's id, or jax's cluster auto-detection fills them in);
- a Cloud TPU slice with more than one worker is visible in the environment (`TPU_PROCESS_ADDRESSES` or
  `TPU_WORKER_HOSTNAMES` lists more than one host, or `MEGASCALE_NUM_SLICES` > 1).
On a Cloud TPU VM jax auto-detects the coordinator, process count and id from the TPU metadata. On CPU the
cross-process collectives use gloo (jax's default CPU collectives implementation).

Data: every process feeds a jitted program with global arrays. `host_to_global` / `global_batch` build them from host
values that every process holds whole (e.g. parameters from a seed, a pair batch), `from_process_local` from the
rows this process holds (data sharded by process, padded to a common count with `max_over_processes`);
`sharding.to_host` brings a global result back whole to every process. Host-side work is split with
`process_share` (each host's verifier pool labels its own share of the branches) and reassembled on every process
with `gather_shares`. `sync` is a barrier (e.g. before process 0 exports the model).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from tsp_jax.model import sharding


def multihost_requested(env: Mapping[str, str] | None = None) -> bool:
  """Whether the environment asks for a multi-process run (see the module docstring for the rules)."""
  env = os.environ if env is None else env
  flag = env.get("TSP_DISTRIBUTED")
  if flag is not None:
    if flag not in ("0", "1"):
      raise ValueError(f"TSP_DISTRIBUTED must be 0 or 1, got {flag!r}")
    return flag == "1"
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return True
  hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
  if len([h for h in hosts.split(",") if h.strip()]) > 1:
    return True
  return int(env.get("MEGASCALE_NUM_SLICES") or 1) > 1


def maybe_initialize(env: Mapping[str, str] | None = None) -> bool:
  """Calls `jax.distributed.initialize` when the run is multi-host (idempotent); returns whether it is."""
  env = os.environ if env is None else env
  if jax.distributed.is_initialized():
    return True
  if not multihost_requested(env):
    return False
  kwargs: dict[str, Any] = {}
  if env.get("JAX_COORDINATOR_ADDRESS"):
    kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
  if env.get("JAX_NUM_PROCESSES"):
    kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
  if env.get("JAX_PROCESS_ID"):
    kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
  jax.distributed.initialize(**kwargs)
  return True


def is_primary() -> bool:
  """True on process 0: the one process that writes logs, metrics and exports."""
  return jax.process_index() == 0


def _batch_sharding(mesh: Mesh, shape: tuple[int, ...], rules: sharding.Rules) -> NamedSharding:
  """Leading (batch) axis sharded by `rules`, the rest replicated."""
  return NamedSharding(mesh, sharding.logical_to_spec(("batch",) + (None,) * (len(shape) - 1), rules, shape, mesh))


def host_to_global(tree, shardings):
  """Global arrays in `shardings` (a matching tree of Shardings) from host arrays every process holds whole."""
  def put(x, sh):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])
  return jax.tree.map(put, tree, shardings)


def global_batch(tree, mesh: Mesh, rules: sharding.Rules = sharding.TRAIN_RULES):
  """Global arrays, batch-sharded over `mesh`, from host arrays [B, ...] that every process holds whole."""
  shardings = jax.tree.map(lambda x: _batch_sharding(mesh, np.shape(x), rules), tree)
  return host_to_global(tree, shardings)


def from_process_local(tree, mesh: Mesh, rules: sharding.Rules = sharding.TRAIN_RULES):
  """Global arrays [B, ...] from this process's rows [B / process_count, ...]: process i holds the i-th block (the
  rows its devices own on a mesh over `jax.devices()`, which lists the devices process by process)."""
  def put(x):
    x = np.asarray(x)
    shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(_batch_sharding(mesh, shape, rules), x, shape)
  return jax.tree.map(put, tree)


def process_share(n: int) -> range:
  """The indices of `n` items this process handles (every process_count-th, from its index)."""
  return range(jax.process_index(), n, jax.process_count())


def gather_shares(local: np.ndarray, n: int) -> np.ndarray:
  """[n, ...] on every process from each process's rows for `process_share(n)` (local: [len(share), ...])."""
  count = jax.process_count()
  if count == 1:
    return np.asarray(local)
  width = -(-n // count)
  padded = np.zeros((width,) + local.shape[1:], local.dtype)
  padded[:len(local)] = local
  every = np.asarray(multihost_utils.process_allgather(padded))  # [count, width, ...]
  out = np.empty((n,) + local.shape[1:], local.dtype)
  for p in range(count):
    rows = np.arange(p, n, count)
    out[rows] = every[p, :len(rows)]
  return out


def max_over_processes(n: int) -> int:
  """The largest of every process's `n` (e.g. local pair counts, to pad them to one global batch shape)."""
  if jax.process_count() == 1:
    return int(n)
  return int(np.max(multihost_utils.process_allgather(np.asarray(n, np.int32))))


def sync(name: str) -> None:
  """A barrier across processes (no-op on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
