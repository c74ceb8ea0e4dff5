"""The one place where a trainer ConfigDict becomes typed configs, and where its defaults are resolved.

Config files (`configs/*.py`, or any file passed as `--config=/path.py`) describe variants; the package never
imports them. Their sections mirror dataclasses, so a field added to a dataclass is settable from the command
line without touching another file:
  c.search  every `tree.SearchConfig` field, plus the trainer's prompt budget (`SEARCH_BUDGET`);
  c.loss    every `objective.LossConfig` field but `name` (the mode's loss, `LOSSES`), plus `reference`;
  c.optim   every `train_step.OptimConfig` field but the schedule's length, plus the round budget (`SCHEDULE`);
  c.model   `preset`, `overrides` (every LlamaConfig field, None: the preset's), `dtype`, `kernel` ("auto").
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from etils import epath

from tsp_jax import objective, train_step
from tsp_jax.model import convert, llama
from tsp_jax.search import tree

LOSSES = {"sft": "sft", "selfplay": "dpo", "tsp": "tsp"}  # trainer mode -> objective loss
MODES = tuple(LOSSES)
BRANCH_LABELS = ("verifier", "all_rejected")  # how tsp mode labels sampled branches (`verify.labels`)
ROUND_PROMPTS = ("fresh", "same")  # which nodes / records each round starts from (`round_prompts`)
SEARCH_BUDGET = ("max_prefix", "prefixes_per_batch")  # c.search keys that are not SearchConfig fields
LOSS_EXTRA = ("reference",)  # "previous" (SPIN: the round's starting model) or "initial"
SCHEDULE = ("epochs", "steps", "warmup_ratio")  # c.optim keys that size a round's schedule
KERNEL_AUTO = "auto"


# ----------------------------------------------------------------------------------------------------------
# Sections: what config files build (dataclass defaults, then the variant's values).


def _section(cls, exclude: Sequence[str], extra: Sequence[str], values: dict[str, Any]) -> ml_collections.ConfigDict:
  """Every field of dataclass `cls` but `exclude` at its default, then `values`, which must set every `extra` key
  (the section's keys that are not fields) and nothing else."""
  fields = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls) if f.name not in exclude}
  unknown, missing = sorted(set(values) - set(fields) - set(extra)), sorted(set(extra) - set(values))
  if unknown or missing:
    raise ValueError(f"{cls.__name__} section: unknown keys {unknown}, missing keys {missing} (fields: "
                     f"{sorted(fields)}; extra keys: {sorted(extra)})")
  return ml_collections.ConfigDict({**fields, **values})


def model_overrides(**values) -> ml_collections.ConfigDict:
  """`c.model.overrides`: every LlamaConfig field but the runtime `dtype` / `kernel` (set in `c.model`), None
  (the preset's value) unless given, so any of them is settable with `--config.model.overrides.<field>=`."""
  types = {f.name: type(getattr(llama.LlamaConfig.tiny(), f.name)) for f in dataclasses.fields(llama.LlamaConfig)
           if f.name not in ("dtype", "kernel")}
  unknown = sorted(set(values) - set(types))
  if unknown:
    raise ValueError(f"model overrides {unknown} are not LlamaConfig fields ({sorted(types)})")
  return ml_collections.ConfigDict({k: values[k] if k in values else ml_collections.config_dict.placeholder(t)
                                    for k, t in types.items()})


def search_section(**values) -> ml_collections.ConfigDict:
  """`c.search`: every SearchConfig field at its default, then `values` (which must set the SEARCH_BUDGET keys).

  `stop_ids` here are stop tokens *besides* the tokenizer's EOS (default none); `cache_len` 0 means
  `max_prefix + max_new_tokens`.
  """
  return _section(tree.SearchConfig, (), SEARCH_BUDGET, {"stop_ids": (), **values})


def loss_section(**values) -> ml_collections.ConfigDict:
  """`c.loss`: every LossConfig field but `name`, then `values` (which must set `reference`)."""
  return _section(objective.LossConfig, ("name",), LOSS_EXTRA, values)


def optim_section(**values) -> ml_collections.ConfigDict:
  """`c.optim`: every OptimConfig field but `warmup_steps` / `total_steps`, then `values` (the SCHEDULE keys)."""
  return _section(train_step.OptimConfig, ("warmup_steps", "total_steps"), SCHEDULE, values)


# ----------------------------------------------------------------------------------------------------------
# Typed configs.


def _typed(cls, section: ml_collections.ConfigDict, skip: Sequence[str], **derived):
  values = {k: v for k, v in section.items() if k not in skip}
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f"config keys {unknown} are not fields of {cls.__name__} ({sorted(names)})")
  values.update(derived)
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def search_config(c: ml_collections.ConfigDict, stop_ids: Sequence[int], **overrides) -> tree.SearchConfig:
  """The sampler of a trainer config: every `c.search` field, the tokenizer's `stop_ids` (EOS) first, `cache_len`
  resolved, then `overrides` (e.g. self-play's `policy="none", slots_per_prefix=1`); `k` is capped by the slots."""
  s = c.search
  scfg = _typed(tree.SearchConfig, s, SEARCH_BUDGET, stop_ids=tuple(dict.fromkeys((*stop_ids, *s.stop_ids))),
                cache_len=s.cache_len or train_length(c))
  scfg = dataclasses.replace(scfg, **overrides)
  return dataclasses.replace(scfg, k=min(scfg.k, scfg.slots_per_prefix))


def loss_config(c: ml_collections.ConfigDict) -> objective.LossConfig:
  """The loss of the config's mode with the `c.loss` settings."""
  return _typed(objective.LossConfig, c.loss, LOSS_EXTRA, name=LOSSES[c.mode])


def optim_config(c: ml_collections.ConfigDict, updates: int) -> train_step.OptimConfig:
  """AdamW settings of a round of `updates` optimizer updates (warmup: `warmup_ratio` of them)."""
  return _typed(train_step.OptimConfig, c.optim, SCHEDULE, warmup_steps=int(c.optim.warmup_ratio * updates),
                total_steps=updates)


def packed_length(c: ml_collections.ConfigDict) -> int:
  """Tokens per packed pair row (`c.packed_length`; default room for a prefix and three continuations: any pair
  fits, and rows stay short, attention being quadratic in them); 0 when pair batches are dense (`c.packed`
  False, or the sft mode)."""
  if not c.packed or c.mode == "sft":
    return 0
  return c.packed_length or c.search.max_prefix + 3 * c.search.max_new_tokens


def train_length(c: ml_collections.ConfigDict) -> int:
  """Tokens per training sequence: the prompt budget plus the new tokens (pairs are padded to it)."""
  return c.search.max_prefix + c.search.max_new_tokens


def kernel(name: str, platform: str) -> str:
  """The model kernel of `c.model.kernel`: "auto" picks the platform's (`llama.kernel_for_platform`)."""
  return llama.kernel_for_platform(platform) if name == KERNEL_AUTO else name


def model_config(c: ml_collections.ConfigDict, vocab_size: int | None = None, platform: str | None = None
                 ) -> llama.LlamaConfig:
  """The model a trainer config builds.

  With `c.init_checkpoint`: the checkpoint's config.json. Otherwise the preset with `c.model.overrides`; in
  small-model mode (`c.tokenizer_vocab_size > 0`) its vocabulary is the trained tokenizer's (`vocab_size`,
  default `c.tokenizer_vocab_size`). Runtime fields: `dtype`, `remat` (an override) and `kernel` for `platform`
  (default: this process's backend).
  """
  platform = platform or jax.default_backend()
  overrides = {k: v for k, v in c.model.overrides.items() if v is not None}
  runtime = dict(dtype=c.model.dtype, kernel=kernel(c.model.kernel, platform))
  if c.init_checkpoint:
    hf_config = json.loads((epath.Path(c.init_checkpoint) / "config.json").read_text())
    return convert.config_from_hf(hf_config, remat=overrides.get("remat", False), **runtime)
  if c.tokenizer_vocab_size:
    overrides["vocab_size"] = vocab_size or c.tokenizer_vocab_size
  return llama.LlamaConfig.from_preset(c.model.preset, **{**overrides, **runtime})


# ----------------------------------------------------------------------------------------------------------
# Defaults and checks.


def shared_dir(name: str) -> str:
  """Default data folder `<name>` of `../shared/` (train/dev `data`, test `eval`): looked up from the working
  directory, then from the checkout that holds the package; '' when neither exists (then a flag must set it)."""
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for root in (os.getcwd(), package_root):
    path = os.path.normpath(os.path.join(root, "..", "shared", name))
    if os.path.isdir(path):
      return path
  return ""


def resolve_dirs(c: ml_collections.ConfigDict, **folders: str) -> ml_collections.ConfigDict:
  """`c` with each empty folder field (`key=shared name`, e.g. `data_dir="data"`) set to its `shared_dir`. A field
  may name several folders, comma-separated (`tsp_jax.data.data_dirs`); each must exist."""
  c = c.copy_and_resolve_references()
  for key, name in folders.items():
    if not c[key]:
      c[key] = shared_dir(name)
    if not c[key] or not all(os.path.isdir(d.strip()) for d in c[key].split(",") if d.strip()):
      raise ValueError(f"config.{key}={c[key]!r} is not a directory (pass --config.{key}=/path/to/shared/{name})")
  return c


def validate_trainer(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError on an inconsistent trainer config before any work starts."""
  if c.mode not in MODES:
    raise ValueError(f"unknown mode {c.mode!r}; expected one of {MODES}")
  if c.search.k > c.search.slots_per_prefix:
    raise ValueError(f"search.k={c.search.k} exceeds the slot budget search.slots_per_prefix="
                     f"{c.search.slots_per_prefix}")
  if c.search.cache_len and c.search.cache_len < train_length(c):
    raise ValueError(f"search.cache_len={c.search.cache_len} is shorter than search.max_prefix + "
                     f"search.max_new_tokens = {train_length(c)}")
  if c.rounds < 1 or c.optim.epochs < 1 or c.batch_size < 1:
    raise ValueError("rounds, optim.epochs and batch_size must be >= 1")
  if c.verify.labels not in BRANCH_LABELS:
    raise ValueError(f"verify.labels must be one of {BRANCH_LABELS}, got {c.verify.labels!r}")
  if c.records_per_round < 0:
    raise ValueError(f"records_per_round must be >= 0 (0: all), got {c.records_per_round}")
  if c.round_prompts not in ROUND_PROMPTS:
    raise ValueError(f"round_prompts must be one of {ROUND_PROMPTS}, got {c.round_prompts!r}")
  if c.packed_chunks < 0 or c.packed_length < 0:
    raise ValueError(f"packed_chunks and packed_length must be >= 0, got {c.packed_chunks}, {c.packed_length}")
  if c.loss.reference not in ("previous", "initial"):
    raise ValueError(f"loss.reference must be 'previous' or 'initial', got {c.loss.reference!r}")
  if not c.init_checkpoint and not c.tokenizer_vocab_size:
    raise ValueError("no tokenizer: set --config.init_checkpoint (an HF folder with tokenizer.model) or, in "
                     "small-model mode, --config.tokenizer_vocab_size > 0")
  if c.model.kernel != KERNEL_AUTO and c.model.kernel not in llama.KERNELS:
    raise ValueError(f"model.kernel={c.model.kernel!r}; expected {KERNEL_AUTO!r} or one of {llama.KERNELS}")
  search_config(c, ()).validate()
  loss_config(c)  # raises on bad loss settings
