"""HF `LlamaForCausalLM` safetensors checkpoints <-> this project's parameter tree.

    cfg, params = load_hf_checkpoint(path, dtype=jnp.bfloat16, mesh=mesh)   # HF folder -> sharded params
    save_hf_checkpoint(params, cfg, path)                                   # params -> HF folder

One table (`_TABLE`) maps every HF tensor name to a parameter path and a layout transform; loading and saving
both expand it (`_entries`), so the two directions cannot drift apart. An HF `nn.Linear` weight is stored
`[out, in]`; ours keeps the input axes first and splits the fused head axis (`q`: `[D, H, Dh]` from
`[H*Dh, D]`, `o`: `[H, Dh, D]` from `[D, H*Dh]`), i.e. `ours = hf.T.reshape(shape)`. HF's q/k rows are already
in the rotate-half RoPE layout that `llama.apply_rope` uses, so no permutation is needed.

Loading checks the tensor names and shapes in the safetensors headers against the table before reading any
tensor data, then reads one tensor at a time and places it straight into its target sharding (only the
shards addressable by this process are transferred), so the host never holds more than one tensor. Saving
streams one tensor at a time from the devices into a safetensors file whose header is written first.

This module deliberately imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers numpy's "bfloat16" dtype, which safetensors' numpy reader needs)
import numpy as np
import safetensors
from absl import logging
from etils import epath

from tsp_jax.model import llama, sharding

CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
# Non-persistent buffers that some (older) exports contain; recomputed from rope_theta, safe to ignore.
_IGNORED_RE = re.compile(r"(^|\.)rotary_emb\.inv_freq$")

_SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
_ST_DTYPES = {"float64": "F64", "float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_ST_FLOAT_DTYPES = frozenset(_ST_DTYPES.values())

# ----------------------------------------------------------------------------------------------------------
# The conversion table: (HF name pattern, parameter path, n_in). `{i}` stands for the layer index. `n_in`:
# None = same layout on both sides; k = an HF nn.Linear weight [out, in] whose input is our first k axes
# (ours = hf.T.reshape(our_shape), hf = ours.reshape(prod(our_shape[:k]), -1).T).

_LAYER = "{i}"
_TABLE: tuple[tuple[str, tuple[str, ...], int | None], ...] = (
    ("model.embed_tokens.weight", ("embed",), None),
    ("model.layers.{i}.input_layernorm.weight", ("layers", _LAYER, "attn_norm", "scale"), None),
    ("model.layers.{i}.self_attn.q_proj.weight", ("layers", _LAYER, "attn", "q"), 1),
    ("model.layers.{i}.self_attn.k_proj.weight", ("layers", _LAYER, "attn", "k"), 1),
    ("model.layers.{i}.self_attn.v_proj.weight", ("layers", _LAYER, "attn", "v"), 1),
    ("model.layers.{i}.self_attn.o_proj.weight", ("layers", _LAYER, "attn", "o"), 2),
    ("model.layers.{i}.post_attention_layernorm.weight", ("layers", _LAYER, "mlp_norm", "scale"), None),
    ("model.layers.{i}.mlp.gate_proj.weight", ("layers", _LAYER, "mlp", "gate"), 1),
    ("model.layers.{i}.mlp.up_proj.weight", ("layers", _LAYER, "mlp", "up"), 1),
    ("model.layers.{i}.mlp.down_proj.weight", ("layers", _LAYER, "mlp", "down"), 1),
    ("model.norm.weight", ("final_norm", "scale"), None),
    ("lm_head.weight", ("lm_head",), 1),
)


class _Entry(NamedTuple):
  """One concrete tensor: HF name, parameter path, layout transform, our shape, HF shape."""
  hf_name: str
  path: tuple[str | int, ...]
  n_in: int | None
  shape: tuple[int, ...]
  hf_shape: tuple[int, ...]

  def to_ours(self, x: np.ndarray) -> np.ndarray:
    """HF layout -> ours (a view: the transpose and the axis split need no copy)."""
    return x if self.n_in is None else x.T.reshape(self.shape)

  def to_hf(self, x: np.ndarray) -> np.ndarray:
    """Our layout -> HF layout (a view)."""
    return x if self.n_in is None else x.reshape(math.prod(self.shape[:self.n_in]), -1).T


def _hf_shape(shape: tuple[int, ...], n_in: int | None) -> tuple[int, ...]:
  if n_in is None:
    return tuple(shape)
  return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))


def _get(tree: Mapping, path: tuple) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _entries(cfg: llama.LlamaConfig) -> list[_Entry]:
  """The table expanded for `cfg`, checked to cover the model's parameter tree exactly."""
  abstract = llama.abstract_params(cfg)
  out = []
  for pattern, path, n_in in _TABLE:
    for i in (range(cfg.n_layers) if _LAYER in pattern else [None]):
      p = tuple(i if k == _LAYER else k for k in path)
      shape = tuple(_get(abstract, p).shape)
      out.append(_Entry(pattern.format(i=i), p, n_in, shape, _hf_shape(shape, n_in)))
  table_paths = {e.path for e in out}
  model_paths = {tuple(k.key for k in kp) for kp, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  if table_paths != model_paths:  # llama.py changed without this table
    raise RuntimeError(f"conversion table out of sync with llama.Llama: params without an HF name "
                       f"{sorted(map(str, model_paths - table_paths))}, table paths not in the model "
                       f"{sorted(map(str, table_paths - model_paths))}")
  return out


# ----------------------------------------------------------------------------------------------------------
# config.json


def _refuse(msg: str) -> ValueError:
  return ValueError(f"unsupported HF config: {msg}")


def _rope_theta(c: Mapping[str, Any]) -> float:
  """rope_theta from the top level (transformers 4.x) and/or `rope_parameters` (5.x); refuses any scaling."""
  thetas = {}
  if c.get("rope_theta") is not None:
    thetas["rope_theta"] = c["rope_theta"]
  for key in ("rope_scaling", "rope_parameters"):
    rp = c.get(key)
    if rp is None:
      continue
    if not isinstance(rp, Mapping):
      raise _refuse(f"{key} must be a dict or null, found {rp!r}")
    # 5.x always writes rope_parameters.rope_type; a 4.x rope_scaling dict must name its type.
    rope_type = rp.get("rope_type", rp.get("type", "default" if key == "rope_parameters" else None))
    if rope_type != "default":
      raise _refuse(f"{key} = {dict(rp)!r} (rope_type {rope_type!r}): only default RoPE (no scaling) is "
                    f"implemented")
    if rp.get("partial_rotary_factor", 1.0) != 1.0:
      raise _refuse(f"{key}.partial_rotary_factor = {rp['partial_rotary_factor']}: only full-width RoPE is "
                    f"implemented")
    if rp.get("rope_theta") is not None:
      thetas[f"{key}.rope_theta"] = rp["rope_theta"]
  if not thetas:
    raise ValueError("HF config has no rope_theta (neither at the top level nor in rope_parameters); refusing "
                     "to guess (transformers would silently use 10000, CodeLlama needs 1e6)")
  if len({float(v) for v in thetas.values()}) > 1:
    raise ValueError(f"HF config has conflicting rope_theta values: {thetas}")
  return float(next(iter(thetas.values())))


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> llama.LlamaConfig:
  """`LlamaConfig` from the dict of an HF Llama `config.json` (transformers 4.x or 5.x layout).

  Args:
    hf_config: the parsed config.json.
    **overrides: LlamaConfig fields to set on top (e.g. `dtype="bfloat16"`, `param_dtype=...`), including the
      runtime choices that config.json never carries (`remat=True`, `kernel="cpu"`).
  Raises:
    ValueError: for anything this model does not implement (another architecture, RoPE scaling, tied
      embeddings, an activation other than SiLU, biases, a head_dim other than hidden_size / heads) or a
      missing required field (including rope_theta).
  """
  c = dict(hf_config)
  if c.get("model_type") != "llama":
    raise _refuse(f"model_type {c.get('model_type')!r}, expected 'llama'")
  archs = c.get("architectures")
  if archs is not None and list(archs) != ["LlamaForCausalLM"]:
    raise _refuse(f"architectures {archs!r}, expected ['LlamaForCausalLM']")
  if c.get("tie_word_embeddings", False):
    raise _refuse("tie_word_embeddings is true; this model has an untied lm_head (tied embeddings are not "
                  "implemented)")
  if c.get("hidden_act", "silu") != "silu":
    raise _refuse(f"hidden_act {c['hidden_act']!r}, only 'silu' (SwiGLU) is implemented")
  for key in ("attention_bias", "mlp_bias"):
    if c.get(key, False):
      raise _refuse(f"{key} is true; biases are not implemented")
  required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
  missing = [k for k in required if c.get(k) is None]
  if missing:
    raise ValueError(f"HF config lacks required field(s) {missing}")
  dim, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
  if c.get("head_dim") is not None and heads and int(c["head_dim"]) != dim // heads:
    raise _refuse(f"head_dim {c['head_dim']} != hidden_size / num_attention_heads = {dim // heads}")
  fields = dict(
      vocab_size=int(c["vocab_size"]),
      dim=dim,
      n_layers=int(c["num_hidden_layers"]),
      n_heads=heads,
      n_kv_heads=int(c.get("num_key_value_heads") or heads),
      ffn_dim=int(c["intermediate_size"]),
      rope_theta=_rope_theta(c),
      norm_eps=float(c.get("rms_norm_eps", 1e-6)),  # transformers' LlamaConfig default
      max_seq_len=int(c.get("max_position_embeddings", 2048)),  # transformers' LlamaConfig default
  )
  return llama.LlamaConfig(**{**fields, **overrides})


def config_to_hf(cfg: llama.LlamaConfig, dtype: str | None = None) -> dict[str, Any]:
  """A config.json dict that transformers 4.x (top-level rope_theta) and 5.x (rope_parameters) both read.

  Runtime choices (`cfg.dtype`, `cfg.remat`, `cfg.kernel`) are not written: `config_from_hf` takes them as overrides.

  Args:
    cfg: our config.
    dtype: the dtype the weights are stored in (default `cfg.param_dtype`), recorded as torch_dtype / dtype.
  """
  dtype = jnp.dtype(dtype or cfg.param_dtype).name
  return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.dim,
      "intermediate_size": cfg.ffn_dim,
      "num_hidden_layers": cfg.n_layers,
      "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": cfg.max_seq_len,
      "rms_norm_eps": cfg.norm_eps,
      "rope_theta": cfg.rope_theta,
      "rope_scaling": None,
      "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
      "attention_bias": False,
      "attention_dropout": 0.0,
      "mlp_bias": False,
      "pretraining_tp": 1,
      "tie_word_embeddings": False,
      "bos_token_id": 1,
      "eos_token_id": 2,
      "pad_token_id": None,
      "initializer_range": 0.02,
      "use_cache": True,
      "torch_dtype": dtype,  # transformers 4.x
      "dtype": dtype,  # transformers 5.x
  }


def _read_config(path: Path) -> dict[str, Any]:
  file = path / CONFIG_NAME
  if not file.is_file():
    raise FileNotFoundError(f"no {CONFIG_NAME} in HF checkpoint folder {path} (looked for {file})")
  try:
    with open(file) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON: {e}") from e


# ----------------------------------------------------------------------------------------------------------
# Loading.


def _safe_open(file: Path):
  try:
    return safetensors.safe_open(str(file), framework="numpy")
  except safetensors.SafetensorError as e:
    raise ValueError(f"cannot read safetensors file {file} (corrupt or truncated?): {e}") from e


def _tensor_files(path: Path) -> dict[str, Path]:
  """Tensor name -> the file holding it, from the index json (sharded) or the single model.safetensors."""
  index, single = path / INDEX_FILE, path / SINGLE_FILE
  if index.is_file():
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{index} is not a valid safetensors index (needs a 'weight_map'): {e!r}") from e
    files = {name: path / shard for name, shard in weight_map.items()}
    absent = sorted({str(f) for f in files.values() if not f.is_file()})
    if absent:
      raise FileNotFoundError(f"{index} references shard file(s) that do not exist: {absent}")
    return files
  if single.is_file():
    return {}  # names come from the header
  bins = sorted(p.name for p in path.glob("pytorch_model*.bin"))
  raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {path}"
                          + (f" (found {bins}: only safetensors checkpoints are supported)" if bins else ""))


def _read_headers(path: Path) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
  """Tensor name -> (file, safetensors dtype, shape), from the headers only (no tensor data is read)."""
  by_index = _tensor_files(path)
  files = sorted(set(by_index.values())) if by_index else [path / SINGLE_FILE]
  found: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
  for file in files:
    with _safe_open(file) as f:
      for name in f.keys():
        sl = f.get_slice(name)
        found[name] = (file, sl.get_dtype(), tuple(sl.get_shape()))
  for name, file in by_index.items():  # the index must agree with the shards' own headers
    if name not in found or found[name][0] != file:
      where = f"it is in {found[name][0]}" if name in found else "no shard contains it"
      raise ValueError(f"{path / INDEX_FILE} maps tensor {name} to {file}, but {where}")
  return found


def _check_names_and_shapes(entries: list[_Entry], found: Mapping[str, tuple[Path, str, tuple[int, ...]]],
                            path: Path) -> None:
  expected = {e.hf_name for e in entries}
  present = {n for n in found if not _IGNORED_RE.search(n)}
  missing, unexpected = sorted(expected - present), sorted(present - expected)
  if missing:
    raise ValueError(f"HF checkpoint {path} is missing {len(missing)} tensor(s) the config requires: "
                     f"{_short_list(missing)}")
  if unexpected:
    raise ValueError(f"HF checkpoint {path} has {len(unexpected)} unexpected tensor(s) with no place in "
                     f"the model: {_short_list(unexpected)}")
  for e in entries:
    file, st_dtype, shape = found[e.hf_name]
    if shape != e.hf_shape:
      raise ValueError(f"tensor {e.hf_name} in {file}: expected shape {e.hf_shape}, found {shape}")
    if st_dtype not in _ST_FLOAT_DTYPES:
      raise ValueError(f"tensor {e.hf_name} in {file}: dtype {st_dtype} is not a floating type "
                       f"{sorted(_ST_FLOAT_DTYPES)}")


def _short_list(names: list[str], limit: int = 20) -> str:
  return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _set(tree: dict, path: tuple, value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _read_tensor(file: Path, e: _Entry, dtype: np.dtype) -> np.ndarray:
  """One tensor in our layout as a (possibly strided) `dtype` array.

  The file is opened (memory-mapped) per tensor, so the pages it touches leave this process's RSS as soon as
  the tensor is copied out; the raw tensor is dropped before the caller transfers the result. Peak host
  memory: two copies of this tensor when it needs a transpose or a cast, one otherwise.
  """
  with _safe_open(file) as f:
    try:
      raw = f.get_tensor(e.hf_name)
    except safetensors.SafetensorError as err:
      raise ValueError(f"cannot read tensor {e.hf_name} from {file}: {err}") from err
  # A strided view in our layout: the transfer to the device does the transpose (much faster than a numpy
  # copy of a transposed view). The cast is explicit and keeps the layout; it copies only when needed.
  return e.to_ours(raw).astype(dtype, copy=False)


def load_hf_checkpoint(path: str | os.PathLike, dtype: Any = jnp.float32, mesh: jax.sharding.Mesh | None = None,
                       rules: sharding.Rules = sharding.TRAIN_RULES) -> tuple[llama.LlamaConfig, llama.Params]:
  """Loads an HF Llama checkpoint folder (config.json + safetensors, single file or sharded with an index).

  Every name and shape is checked against the config before any tensor data is read. Tensors are then read
  one at a time, converted to our layout, cast to `dtype` and placed directly into their sharding under
  `rules` on `mesh` (default device when `mesh` is None); only this process's addressable shards are
  transferred, and the host holds one tensor at a time.

  Args:
    path: the checkpoint folder.
    dtype: storage dtype of the returned params (float32, bfloat16 or float16), whatever the file holds.
    mesh: optional device mesh to shard the params over.
    rules: logical-axis rules for `mesh`.
  Returns:
    (cfg, params): `cfg.param_dtype` is `dtype`'s name (the runtime `cfg.dtype`, `remat` and `kernel` stay at
    their defaults: set them with `dataclasses.replace`); params is the tree `llama.forward` takes.
  Raises:
    FileNotFoundError: no folder / config.json / safetensors, or a shard named by the index is absent.
    ValueError: unsupported config, missing / unexpected tensors, wrong shapes, corrupt or truncated files.
  """
  path = Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"HF checkpoint folder {path} does not exist")
  dtype = jnp.dtype(dtype)
  if dtype.name not in _SUPPORTED_DTYPES:
    raise ValueError(f"dtype must be one of {_SUPPORTED_DTYPES}, got {dtype.name}")
  cfg = dataclasses.replace(config_from_hf(_read_config(path)), param_dtype=dtype.name)
  entries = _entries(cfg)
  found = _read_headers(path)
  _check_names_and_shapes(entries, found, path)

  shardings = None if mesh is None else llama.param_shardings(cfg, mesh, rules)
  by_file: dict[Path, list[_Entry]] = {}
  for e in entries:
    by_file.setdefault(found[e.hf_name][0], []).append(e)
  total_bytes = sum(math.prod(e.shape) for e in entries) * dtype.itemsize
  logging.info("loading %d tensors (%.2f GB as %s) from %d file(s) in %s", len(entries), total_bytes / 1e9,
               dtype.name, len(by_file), path)
  params: dict = {}
  done_bytes, start, last_log = 0, time.perf_counter(), time.perf_counter()
  for file, file_entries in sorted(by_file.items()):
    for e in file_entries:
      host = _read_tensor(file, e, dtype)  # the one tensor on the host
      if shardings is None:
        arr = jax.device_put(host)
      else:
        arr = jax.make_array_from_callback(e.shape, _get(shardings, e.path), lambda idx, h=host: h[idx])
      arr.block_until_ready()  # the transfer is done before the host buffer is dropped
      _set(params, e.path, arr)
      del host
      done_bytes += arr.size * dtype.itemsize
      if time.perf_counter() - last_log > 10:
        last_log = time.perf_counter()
        logging.info("loaded %.2f / %.2f GB (%.0f MB/s)", done_bytes / 1e9, total_bytes / 1e9,
                     done_bytes / 1e6 / (last_log - start))
  logging.info("loaded %s in %.1f s", path, time.perf_counter() - start)
  return cfg, params


# ----------------------------------------------------------------------------------------------------------
# Saving.


def _to_host(x: jax.Array) -> np.ndarray:
  """One parameter on the host (gathered across processes when it is not fully addressable here)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _write_safetensors(file: epath.Path, tensors: list[tuple[str, tuple[int, ...], np.dtype]],
                       arrays: Iterator[np.ndarray] | None) -> None:
  """Writes a safetensors file: the header first (from names / shapes / dtypes), then each array as it comes.

  `arrays` yields the arrays in `tensors` order; on processes other than the writer `arrays` is consumed
  elsewhere and this is not called. The file (local or `gs://`) is written under a temporary name and renamed
  when complete.
  """
  header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
  offset = 0
  for name, shape, dt in tensors:
    nbytes = math.prod(shape) * dt.itemsize
    header[name] = {"dtype": _ST_DTYPES[dt.name], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # 8-byte aligned data, as safetensors writes it
  tmp = file.with_name(file.name + ".tmp")
  with tmp.open("wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for (name, shape, dt), arr in zip(tensors, arrays, strict=True):
      if arr.shape != tuple(shape) or arr.dtype != dt:
        raise AssertionError(f"{name}: got {arr.shape} {arr.dtype}, header says {shape} {dt}")
      arr = np.ascontiguousarray(arr if sys.byteorder == "little" else arr.byteswap())  # safetensors: little-endian
      f.write(arr.reshape(-1).view(np.uint8).data)
  tmp.replace(file)


def save_hf_checkpoint(params: llama.Params, cfg: llama.LlamaConfig, path: str | os.PathLike, *,
                       max_shard_bytes: int = 2**31, dtype: Any = None) -> None:
  """Writes `params` as an HF `LlamaForCausalLM` checkpoint folder (config.json + safetensors).

  Files larger than `max_shard_bytes` are split HF style (`model-00001-of-0000N.safetensors` plus
  `model.safetensors.index.json` with `metadata.total_size` and `weight_map`); a tensor larger than the limit
  gets a shard of its own. Tensors are pulled to the host one at a time. Existing model*.safetensors files and
  the index in `path` are replaced. In a multi-process run every process must call this; process 0 writes.

  Args:
    params: parameter tree matching `cfg` (any sharding).
    cfg: the model config.
    path: output folder, local or `gs://` (created if needed).
    max_shard_bytes: size limit of one safetensors file.
    dtype: storage dtype in the files (default: each parameter's own dtype).
  """
  path = epath.Path(path)
  entries = _entries(cfg)
  for e in entries:
    try:
      leaf = _get(params, e.path)
    except (KeyError, TypeError, IndexError) as err:
      raise ValueError(f"params lack {e.path} (for {e.hf_name})") from err
    if tuple(leaf.shape) != e.shape:
      raise ValueError(f"params{list(e.path)} has shape {tuple(leaf.shape)}, cfg implies {e.shape}")
  out_dtypes = [jnp.dtype(dtype or _get(params, e.path).dtype) for e in entries]
  for dt in set(out_dtypes):
    if dt.name not in _SUPPORTED_DTYPES:
      raise ValueError(f"cannot save dtype {dt.name}; expected one of {_SUPPORTED_DTYPES}")

  # Plan the shards greedily in table order.
  shards: list[list[int]] = [[]]
  size = 0
  for k, (e, dt) in enumerate(zip(entries, out_dtypes)):
    nbytes = math.prod(e.hf_shape) * dt.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(k)
    size += nbytes
  n = len(shards)
  names = [SINGLE_FILE] if n == 1 else [f"model-{s + 1:05d}-of-{n:05d}.safetensors" for s in range(n)]

  writer = jax.process_index() == 0
  if writer:
    path.mkdir(parents=True, exist_ok=True)
    for old in path.iterdir():  # stale weights from an earlier save would confuse loaders
      if old.name in (SINGLE_FILE, INDEX_FILE) or _SHARD_RE.match(old.name):
        old.unlink()
    config_dtype = dtype or (out_dtypes[0].name if len(set(out_dtypes)) == 1 else cfg.param_dtype)
    (path / CONFIG_NAME).write_text(json.dumps(config_to_hf(cfg, config_dtype), indent=2) + "\n")

  start = time.perf_counter()
  total_size = 0
  weight_map = {}
  for shard, name in zip(shards, names):
    header = [(entries[k].hf_name, entries[k].hf_shape, out_dtypes[k]) for k in shard]
    arrays = (np.asarray(entries[k].to_hf(_to_host(_get(params, entries[k].path))), dtype=out_dtypes[k])
              for k in shard)
    if writer:
      _write_safetensors(path / name, header, arrays)
    else:
      for _ in arrays:  # take part in the gathers
        pass
    for hf_name, shape, dt in header:
      weight_map[hf_name] = name
      total_size += math.prod(shape) * dt.itemsize
    logging.info("wrote %s (%d tensors)", path / name, len(shard))
  if writer and n > 1:
    (path / INDEX_FILE).write_text(
        json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=2) + "\n")
  logging.info("saved %.2f GB to %s in %.1f s (%d file(s))", total_size / 1e9, path, time.perf_counter() - start, n)
