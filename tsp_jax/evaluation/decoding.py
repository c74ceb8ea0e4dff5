"""The evaluated model: an exported HF folder loaded, and one completion per prompt drawn from it.

Completions come from the tree-search engine (`search.batch.sample_branches`, policy `none`, one slot): greedy
at temperature 0, or the paper's temperature 0.2 / top-p 0.9 with a fixed seed. A prompt that does not fit the
model's context with room to generate is left to the caller as a counted skip (`encode_prompts` gives None).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.model import convert, llama
from tsp_jax.search import batch, host, tree


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How the one completion per prompt is drawn: greedy, or sampled (the paper: T 0.2, top-p 0.9) with a seed."""
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0
  max_new_tokens: int = 256
  batch_size: int = 16

  @classmethod
  def named(cls, name: str, **overrides) -> Decoding:
    """`greedy` or `sample` (temperature 0.2, top-p 0.9), with field overrides."""
    presets = {"greedy": {}, "sample": {"temperature": 0.2, "top_p": 0.9}}
    if name not in presets:
      raise ValueError(f"unknown decoding {name!r}; expected one of {sorted(presets)}")
    return cls(**{**presets[name], **overrides})


def encode_prompts(tok: tokenizer_lib.Tokenizer, prompts: Sequence[str], max_prompt_tokens: int
                   ) -> list[np.ndarray | None]:
  """BOS + the ids of each prompt; None for a prompt longer than `max_prompt_tokens` (a counted skip)."""
  ids = [np.asarray(tok.encode(p, bos=True), np.int32) for p in prompts]
  return [x if len(x) <= max_prompt_tokens else None for x in ids]


def generate(params: llama.Params, cfg: llama.LlamaConfig, tok: tokenizer_lib.Tokenizer,
             prompt_ids: Sequence[np.ndarray], decoding: Decoding) -> list[str]:
  """One completion per prompt (ids [Lp] each), through the tree-search engine with policy `none`."""
  if not prompt_ids:
    return []
  width = max(len(p) for p in prompt_ids)
  width = min(-(-width // 64) * 64, cfg.max_seq_len - decoding.max_new_tokens)  # few distinct compiled widths
  scfg = tree.SearchConfig(slots_per_prefix=1, max_new_tokens=decoding.max_new_tokens, policy="none",
                           temperature=decoding.temperature, top_p=decoding.top_p, stop_ids=(tok.eos_id,),
                           cache_len=width + decoding.max_new_tokens)
  branches = batch.sample_branches(params, cfg, list(prompt_ids), scfg, jax.random.key(decoding.seed),
                                   decoding.batch_size, "evaluate")
  return [host.decode_continuation(p, b.ids[0], tok) for p, b in zip(prompt_ids, branches)]


def load_model(checkpoint_dir: str | os.PathLike, dtype: str = "float32"
               ) -> tuple[llama.LlamaConfig, llama.Params, tokenizer_lib.Tokenizer]:
  """The HF folder the trainer exports (config.json + safetensors + tokenizer.model); clear errors if absent.

  The config runs in `dtype` with the kernel of the default backend (`llama.kernel_for_platform`).
  """
  checkpoint_dir = os.fspath(checkpoint_dir)
  if not os.path.isdir(checkpoint_dir):
    raise FileNotFoundError(f"checkpoint folder {checkpoint_dir!r} does not exist (the trainer exports an HF "
                            "folder to <workdir>/export)")
  tok = tokenizer_lib.Tokenizer.from_dir(checkpoint_dir)
  cfg, params = convert.load_hf_checkpoint(checkpoint_dir, dtype=jnp.dtype(dtype))
  return dataclasses.replace(cfg, dtype=dtype, kernel=llama.kernel_for_platform(jax.default_backend())), params, tok


def resolve_checkpoint(path: str | os.PathLike) -> str:
  """`path` itself, or `path/export` when `path` is a trainer workdir (no config.json, an export/ folder)."""
  path = os.fspath(path)
  export = os.path.join(path, "export")
  if not os.path.exists(os.path.join(path, "config.json")) and os.path.isdir(export):
    return export
  return path


def run_name(checkpoint_dir: str | os.PathLike) -> str:
  """A checkpoint's run name: its folder, or the workdir for `<workdir>/export`."""
  path = os.path.normpath(os.path.abspath(checkpoint_dir))
  base = os.path.basename(path)
  return os.path.basename(os.path.dirname(path)) if base == "export" else base
