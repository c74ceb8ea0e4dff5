r"""The device check: what only an accelerator can measure, in one command (<= 8 minutes on one H200).

    python -m tsp_jax.bench.device --out=DIR            # CodeLlama-7B shapes, random weights, on this machine's GPU
    python -m tsp_jax.bench.device --out=DIR --smoke    # the same code at toy sizes (CPU, seconds; in the suite)
    bash launch/device_check.sh                         # the prepared command for a lent GPU (writes $OUT)

Writes DIR/device.md (a Markdown table) and DIR/device.json (every figure; a section that failed holds its error,
and the others still run; both files are rewritten after each section, so a run cut short keeps what it measured):
  1. decode: cached decoding of `decode_slots` x `decode_new_tokens` from one prompt (tree search, policy `none`)
     with random bf16 weights: new tokens/s, and the fraction of the HBM-bandwidth roofline (weights + the prompt's
     and the slots' keys/values read per step at the measured step rate, `bench.search.roofline_fraction`);
  2. tree search: TSP's node expansion (`root_k`, K branches from each of several node prefixes) against HF
     `transformers` `generate` with torch on the same device (the same weights, converted by
     `convert.save_hf_checkpoint`): new tokens/s of each and their ratio;
  3. train step: the 7B TSP step (bf16 compute, fp32 weights, remat, the one-GPU presets' Adafactor) on generated
     node pairs, dense vs packed (`bench.train_step.compare`): tokens/s and MFU (6 N per token + attention, over
     the device's bf16 peak; remat's recomputation is not counted as useful);
  4. pre-training step: the small-model experiment's pre-training step (configs/experiment.py:synth's model and
     micro-batch: SFT on packed rows) on the accelerator vs this host's CPU.

Peak FLOP/s and HBM bandwidth are the published figures (`tsp_jax.chips`) of the device found, or the settings'
(`--smoke`: nominal CPU figures, so the code path runs; its fractions mean nothing). Imports nothing that the
device image lacks (no grain, ml_collections, bandit, semgrep, tensorboardX); torch only in section 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from tsp_jax import chips, objective, train_step
from tsp_jax.bench import search as bench_search
from tsp_jax.bench import train_step as bench_train
from tsp_jax.model import llama

# configs/experiment.py:synth's model (small-model mode, its trained tokenizer's vocabulary) and pre-training
# micro-batch (8 rows of max_prefix + max_new_tokens = 256 + 96 tokens); tests/test_bench_device.py checks them.
PRETRAIN_MODEL = dict(vocab_size=2048, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=1024,
                      rope_theta=1e4)
GOALS = {"decode": ("roofline_fraction", 0.5), "tree_search": ("ratio_vs_hf", 2.0), "train_step": ("packed_mfu", 0.35)}


@dataclasses.dataclass(frozen=True)
class Settings:
  """The check's sizes (`SMOKE`: toy ones)."""
  preset: str = "codellama_7b"
  model: tuple[tuple[str, Any], ...] = ()  # LlamaConfig overrides of the preset
  dtype: str = "bfloat16"  # activations (and the decode sections' weights)
  decode_slots: int = 64
  decode_new_tokens: int = 256
  prompt_len: int = 32
  nodes: int = 8  # tree search: node prefixes, K branches each
  node_prefix_len: int = 256
  node_branches: int = 8
  node_new_tokens: int = 64
  repeats: int = 3
  train: bench_train.Settings = bench_train.Settings(nodes=2, prefix_len=512, cont_len=128, batch_size=4, steps=3)
  pretrain_model: tuple[tuple[str, Any], ...] = tuple(PRETRAIN_MODEL.items())
  pretrain_rows: int = 8
  pretrain_len: int = 352
  pretrain_steps: int = 5
  hbm_bw: float = 0.0  # bytes/s; 0: the device's published figure
  peak_flops: float = 0.0  # bf16 FLOP/s; 0: the device's published figure


SMOKE = Settings(preset="tiny", model=(("vocab_size", 256), ("dim", 64), ("n_layers", 2), ("n_heads", 4),
                                       ("n_kv_heads", 2), ("ffn_dim", 128), ("max_seq_len", 512)), dtype="float32",
                 decode_slots=4, decode_new_tokens=8, prompt_len=8, nodes=2, node_prefix_len=16, node_branches=2,
                 node_new_tokens=8, repeats=1,
                 train=bench_train.Settings(vocab=256, nodes=1, prefix_len=32, cont_len=8, batch_size=4, steps=1),
                 pretrain_model=(("vocab_size", 256), ("dim", 32), ("n_layers", 1), ("n_heads", 2),
                                 ("n_kv_heads", 1), ("ffn_dim", 64)), pretrain_rows=2, pretrain_len=64, pretrain_steps=1, hbm_bw=20e9, peak_flops=1e12)


def model_config(s: Settings, **runtime) -> llama.LlamaConfig:
  """The check's model: the preset with the settings' overrides and dtype, this backend's kernel, then
  `runtime`."""
  return llama.LlamaConfig.from_preset(s.preset, **{**dict(s.model), "dtype": s.dtype,
                                                    "kernel": llama.kernel_for_platform(jax.default_backend()),
                                                    **runtime})


def device_figures(s: Settings) -> tuple[float, float, str]:
  """(HBM bytes/s, bf16 FLOP/s, where they come from) of the first device."""
  chip = chips.for_device_kind(jax.devices()[0].device_kind)
  if s.hbm_bw and s.peak_flops:
    return s.hbm_bw, s.peak_flops, "the settings (nominal)"
  if chip is None:
    raise ValueError(f"no published figures for device {jax.devices()[0].device_kind!r} (tsp_jax.chips)")
  return chip.hbm_bw, chip.peak_flops, chip.name


def decode(s: Settings) -> dict[str, float]:
  """Section 1: cached decode throughput of `decode_slots` x `decode_new_tokens` and its HBM roofline fraction."""
  cfg = model_config(s, param_dtype=s.dtype)
  params = llama.init_params(cfg, jax.random.key(0))
  w = bench_search.Workload("decode", "none", 1, s.prompt_len, s.decode_slots, s.decode_new_tokens)
  sec = bench_search.interleaved_medians({"ours": bench_search.engine_runner(params, cfg, w)}, s.repeats)["ours"]
  hbm_bw, _, source = device_figures(s)
  tokens_per_s = w.tokens / sec
  return {"slots": w.branches, "new_tokens": w.new_tokens, "params": cfg.num_params(), "seconds": sec,
          "tokens_per_s": tokens_per_s, "step_ms": 1e3 * sec / w.new_tokens,
          "roofline_fraction": bench_search.roofline_fraction(cfg, w.branches, w.prompt_len, w.new_tokens,
                                                              tokens_per_s, hbm_bw),
          "hbm_bw": hbm_bw, "figures_from": source}


def tree_search(s: Settings) -> dict[str, float]:
  """Section 2: `root_k` node expansion vs HF `generate` (torch on the same device), new tokens/s."""
  cfg = model_config(s, param_dtype=s.dtype)
  params = llama.init_params(cfg, jax.random.key(0))
  w = bench_search.Workload("node expansion", "root_k", s.nodes, s.node_prefix_len, s.node_branches,
                            s.node_new_tokens)
  runs = {"ours": bench_search.engine_runner(params, cfg, w)}
  import torch  # the peer, imported only here: a machine without it still runs the other sections

  gpu = jax.default_backend() == "gpu"
  if gpu and not torch.cuda.is_available():
    raise RuntimeError(f"torch {torch.__version__} sees no CUDA device: HF generate cannot run on the same GPU")
  runs["hf"] = bench_search.hf_runner(bench_search.load_hf(params, cfg, "cuda" if gpu else "cpu"), cfg, w)
  sec = bench_search.interleaved_medians(runs, s.repeats)
  ours, hf = w.tokens / sec["ours"], w.tokens / sec["hf"]
  return {"prefixes": w.prompts, "prefix_len": w.prompt_len, "branches": w.branches, "new_tokens": w.new_tokens,
          "ours_tokens_per_s": ours, "hf_tokens_per_s": hf, "ratio_vs_hf": ours / hf,
          "torch": torch.__version__}


def train_flops_per_token(cfg: llama.LlamaConfig, row_len: int) -> float:
  """Useful FLOPs per forwarded token of a train step: 6 N (matmuls, forward + backward; the embedding is a
  gather) plus attention over the full row (QK^T and PV: 4 x layers x row_len x dim forward, x 3)."""
  return 6 * (cfg.num_params() - cfg.vocab_size * cfg.dim) + 12 * cfg.n_layers * row_len * cfg.dim


def train(s: Settings) -> dict[str, float]:
  """Section 3: the 7B TSP train step (one-GPU preset: remat, Adafactor), dense vs packed: tokens/s and MFU."""
  cfg = model_config(s, remat=True)
  params = llama.init_params(cfg, jax.random.key(0))
  length = int(1.25 * s.train.prefix_len) + 3 * int(1.25 * s.train.cont_len) + 2
  r = bench_train.compare(cfg, params, bench_train.tsp_pairs(s.train), length, s.train.batch_size, s.train.steps,
                          optimizer="adafactor")
  _, peak, source = device_figures(s)
  out = {"params": cfg.num_params(), "pairs_per_step": s.train.batch_size, "figures_from": source, "peak_flops": peak,
         "max_abs_loss_diff": r["max_abs_loss_diff"]}
  for name in ("dense", "packed"):
    tokens_per_s = r[f"{name}_tokens_per_pair"] * s.train.batch_size / r[f"{name}_step_s"]
    out.update({f"{name}_step_s": r[f"{name}_step_s"], f"{name}_tokens_per_s": tokens_per_s,
                f"{name}_pairs_per_s": s.train.batch_size / r[f"{name}_step_s"],
                f"{name}_temp_gib": r[f"{name}_temp_mib"] / 1024,
                f"{name}_mfu": tokens_per_s * train_flops_per_token(cfg, r[f"{name}_row_len"]) / peak})
  out["packed_speedup_per_pair"] = r["speedup_per_pair"]
  return out


def pretrain_batch(s: Settings, vocab: int) -> objective.SeqBatch:
  """A pre-training micro-batch: rows of two packed programs each, every token scored (fixed seed)."""
  rng = np.random.default_rng(0)
  rows, length = s.pretrain_rows, s.pretrain_len
  half = length // 2
  positions = np.concatenate([np.arange(half), np.arange(length - half)])[None].repeat(rows, 0)  # [R, L]
  segments = np.concatenate([np.full(half, 1), np.full(length - half, 2)])[None].repeat(rows, 0)  # [R, L]
  return objective.SeqBatch(tokens=jnp.asarray(rng.integers(3, vocab, (rows, length)), jnp.int32),
                            mask=jnp.ones((rows, length), jnp.float32), segments=jnp.asarray(segments, jnp.int32),
                            positions=jnp.asarray(positions, jnp.int32))


def pretrain_step_s(s: Settings, device: jax.Device) -> float:
  """Median seconds of the small-model pre-training step (AdamW, fp32, the device's kernel) on `device`."""
  cfg = llama.LlamaConfig(**dict(s.pretrain_model), kernel=llama.kernel_for_platform(device.platform))
  with jax.default_device(device):
    tx = train_step.make_optimizer(train_step.OptimConfig(lr=3e-3, total_steps=100))
    state = train_step.init_state(llama.init_params(cfg, jax.random.key(0)), tx)
    step = train_step.make_train_step(cfg, objective.LossConfig(name="sft"), tx)
    batch = pretrain_batch(s, cfg.vocab_size)
    sec, _ = bench_train.median_step(step, state, [(batch, None)], s.pretrain_steps)
  return sec


def pretrain(s: Settings) -> dict[str, float]:
  """Section 4: the small-model experiment's pre-training step on the accelerator vs this host's CPU."""
  accel, cpu = jax.devices()[0], jax.devices("cpu")[0]
  times = {"accelerator_step_s": pretrain_step_s(s, accel), "cpu_step_s": pretrain_step_s(s, cpu)}
  return {**times, "cpu_over_accelerator": times["cpu_step_s"] / times["accelerator_step_s"],
          "rows": s.pretrain_rows, "row_len": s.pretrain_len, "accelerator": accel.device_kind,
          "cpu_cores": os.cpu_count() or 0}


SECTIONS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "decode": decode, "tree_search": tree_search, "train_step": train, "pretrain": pretrain}


def run_section(fn: Callable[[Settings], dict[str, Any]], s: Settings) -> dict[str, Any]:
  """One section's figures and its wall time, or its error (the check goes on)."""
  t0 = time.perf_counter()
  try:
    out = fn(s)
  except Exception as e:  # pylint: disable=broad-except  (recorded: the other sections still run)
    out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
  out["wall_s"] = time.perf_counter() - t0
  return out


def _cell(key: str, v: Any) -> str:
  """A figure as the table shows it: fractions in percent, other floats to 4 significant digits."""
  if isinstance(v, float):
    return f"{v:.1%}" if key.endswith(("fraction", "mfu")) else f"{v:,.4g}"
  return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def table(report: dict[str, Any]) -> str:
  """The Markdown table of a report: one row per figure, the issue's goal next to the figures that have one."""
  lines = [f"device check: {report['device']} x{report['device_count']} ({report['backend']}), jax "
           f"{report['jax']}, {'smoke (toy sizes)' if report['smoke'] else 'CodeLlama-7B shapes'}", "",
           "| section | figure | value | goal |", "|---|---|---:|---|"]
  for name, figures in report["sections"].items():
    goal_key, goal = GOALS.get(name, (None, None))
    if "error" in figures:
      lines.append(f"| {name} | **error** | {figures['error'].splitlines()[0][:200]} | |")
      continue
    for key, value in figures.items():
      if key == "traceback":
        continue
      met = "" if key != goal_key else f">= {_cell(key, goal)}: {'met' if value >= goal else '**missed**'}"
      lines.append(f"| {name} | {key} | {_cell(key, value)} | {met} |")
  return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: str) -> None:
  """device.json and device.md into `out`."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "device.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, default=str)
  with open(os.path.join(out, "device.md"), "w", encoding="utf-8") as f:
    f.write(table(report))


def run(s: Settings, out: str, smoke: bool, sections: tuple[str, ...] = tuple(SECTIONS)) -> dict[str, Any]:
  """Runs the sections in order, rewriting the report after each; returns it."""
  dev = jax.devices()[0]
  report = {"device": dev.device_kind, "device_count": jax.device_count(), "backend": jax.default_backend(),
            "jax": jax.__version__, "host": platform.node(), "smoke": smoke, "settings": dataclasses.asdict(s),
            "sections": {}}
  for name in sections:
    print(f"[device check] {name} ...", flush=True)
    report["sections"][name] = run_section(SECTIONS[name], s)
    print(f"[device check] {name}: {json.dumps(report['sections'][name], default=str)[:600]}", flush=True)
    write(report, out)
  return report


def finite_figures(report: dict[str, Any]) -> bool:
  """Whether every section ran and every number in it is finite."""
  numbers = [v for f in report["sections"].values() for v in f.values() if isinstance(v, (int, float))]
  return all("error" not in f for f in report["sections"].values()) and all(math.isfinite(v) for v in numbers)


def _cli_main() -> None:
  """Defines the flags here, not at import."""
  out = flags.DEFINE_string("out", None, "Folder for device.md and device.json.", required=True)
  smoke = flags.DEFINE_bool("smoke", False, "Toy sizes (CPU, seconds): the same code, nominal device figures.")
  only = flags.DEFINE_list("sections", list(SECTIONS), f"Sections to run, in order (of {', '.join(SECTIONS)}).")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    unknown = sorted(set(only.value) - set(SECTIONS))
    if unknown:
      raise app.UsageError(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")
    report = run(SMOKE if smoke.value else Settings(), out.value, smoke.value, tuple(only.value))
    print(table(report))

  app.run(main)


if __name__ == "__main__":
  _cli_main()
