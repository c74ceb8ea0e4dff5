"""Meshes, logical axis rules and sharding helpers.

Every parameter and cache array of the model carries *logical* axis names (`embed`, `heads`, ...). A rules table
maps each logical name to a mesh axis (or a tuple of mesh axes, or None for replicated); one table per run mode:

- `TRAIN_RULES`: FSDP over `fsdp` for the model dimension, tensor parallelism over `tensor` for heads / mlp /
  vocab, batch over `data` x `fsdp`.
- `SAMPLE_RULES`: the slot (batch) axis over `data` x `fsdp`, weights sharded only over `tensor` (decode reads
  every weight once per step, so FSDP's all-gathers would dominate).

A logical dimension whose size is not divisible by its mesh axes' product is sharded over the longest prefix
of those axes that divides it, or replicated (e.g. one kv head on a 4-way tensor axis), so any config runs on
any mesh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

TRAIN_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
)

SAMPLE_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", None),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
)


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh of the given shape over `devices` (default: all devices).

  Args:
    shape: three ints whose product equals the number of devices; at most one may be -1 (inferred).
    devices: devices to use, default `jax.devices()`.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape must have {len(MESH_AXES)} entries {MESH_AXES}, got {tuple(shape)}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape entries must be positive (one may be -1), got {tuple(shape)}")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if len(devices) % known:
      raise ValueError(f"cannot infer -1 in mesh shape {tuple(shape)} for {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(
        f"mesh shape {tuple(shape)} has {math.prod(shape)} devices but {len(devices)} are available")
  device_grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _axis_size(mesh_shape: dict[str, int], axes: str | tuple[str, ...] | None) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh_shape[a] for a in axes)


def logical_to_spec(logical: Sequence[str | None], rules: Rules, shape: Sequence[int] | None = None,
                    mesh: Mesh | jax.sharding.AbstractMesh | None = None) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec.

  A mesh axis is used at most once per array (the first logical dim claiming it wins). With `shape` and
  `mesh`, size-1 mesh axes are dropped and a dim is sharded over the longest prefix of its mesh axes whose size
  divides it (replicated if none does).
  """
  table = dict(rules)
  mesh_shape = dict(mesh.shape) if mesh is not None else None
  used: set[str] = set()
  spec = []
  for i, name in enumerate(logical):
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no rule; rules cover {sorted(table)}")
    axes = None if name is None else table[name]
    if axes is not None:
      axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
      axes_t = tuple(a for a in axes_t if a not in used)
      if mesh_shape is not None:
        axes_t = tuple(a for a in axes_t if mesh_shape.get(a, 1) > 1)
        if shape is not None:  # keep the longest prefix of the axes that divides the dim
          while axes_t and shape[i] % _axis_size(mesh_shape, axes_t):
            axes_t = axes_t[:-1]
      used.update(axes_t)
      axes = None if not axes_t else (axes_t[0] if len(axes_t) == 1 else axes_t)
    spec.append(axes)
  return PartitionSpec(*spec)


def tree_shardings(abstract_tree, axes_tree, mesh: Mesh, rules: Rules):
  """NamedShardings for a tree of ShapeDtypeStructs given a matching tree of logical-axis tuples."""
  return jax.tree.map(
      lambda a, names: NamedSharding(mesh, logical_to_spec(names, rules, a.shape, mesh)),
      abstract_tree, axes_tree, is_leaf=lambda x: isinstance(x, tuple))


def constrain(x: jax.Array, logical: Sequence[str | None], rules: Rules | None) -> jax.Array:
  """`with_sharding_constraint` by logical names under the ambient mesh (`jax.set_mesh`); no-op without one."""
  if rules is None:
    return x
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(logical, rules, x.shape, mesh))


def to_host(tree):
  """numpy copies of a tree of arrays, whole on every process (multi-host safe: a global array that this process
  does not fully address is all-gathered across processes; call it on every process)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(get, jax.device_get(tree) if jax.process_count() == 1 else tree)
