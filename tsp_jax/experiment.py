r"""The small-model TSP experiment, end to end on a CPU: pre-train, SFT / self-play / TSP arms, evaluation.

    python -m tsp_jax.experiment --config=configs/experiment.py:tiny --workdir=runs/experiment

Stages (each resumable: a finished stage is skipped, an interrupted one resumes from its orbax checkpoint):
  1. `pretrain`: a SentencePiece tokenizer trained on the training split's code and a tiny Llama trained from
     random init on both versions of every training function (real pre-training corpora hold both sides of a
     security fix; that is where a model learns to write the vulnerable one).
  2. `sft`, `selfplay`, `tsp`: three arms from the same pre-trained checkpoint with the same number of
     optimizer micro-batches: SFT on the golden (fixed) functions; unstructured sequence-level self-play
     (golden vs the model's own whole-function samples, DPO); TSP (node-level pairs from tree search at risk
     nodes, labelled by the verifier pool).
  3. `eval`: the pre-trained model and each arm on the eval split (CWEval, CodeGuard+, HumanEval; greedy, one
     completion per prompt) plus the node-level probe on dev-split risk nodes; a comparison table
     (`<workdir>/results.md`) and a per-CWE plot (`<workdir>/per_cwe.png`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from tsp_jax import config as config_lib
from tsp_jax import data, evaluation, train
from tsp_jax.verify import VerifierPool

PRETRAIN = "pretrain"


def stage_config(config: ml_collections.ConfigDict, stage: str, workdir: str) -> ml_collections.ConfigDict:
  """The trainer config of one stage (`config.stages[stage]`): the arms start from the pre-trained export."""
  c = config.stages[stage].copy_and_resolve_references()
  c.data_dir = config.data_dir
  c.init_checkpoint = "" if stage == PRETRAIN else export_dir(workdir, PRETRAIN)
  return c


def export_dir(workdir: str, stage: str) -> str:
  """Where a stage's trainer exports its HF folder."""
  return os.path.join(workdir, stage, "export")


def _done(workdir: str, stage: str) -> bool:
  return os.path.exists(os.path.join(workdir, stage, "done.json"))


def _mark_done(workdir: str, stage: str, record: dict[str, Any]) -> None:
  with open(os.path.join(workdir, stage, "done.json"), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)


class Progress:
  """Stage-level progress on stdout: which stage of how many, elapsed time, and the stages' durations."""

  def __init__(self, stages: list[str]):
    self.stages = stages
    self.start = time.time()
    self.seconds: dict[str, float] = {}

  def run(self, stage: str, fn: Callable[[], Any], skip: bool) -> Any:
    """Runs `fn` for `stage` (or reports it as already done) and records its duration."""
    i = self.stages.index(stage) + 1
    elapsed = time.time() - self.start
    if skip:
      print(f"[{i}/{len(self.stages)}] {stage}: done earlier, skipped ({elapsed:.0f}s elapsed)", flush=True)
      return None
    print(f"[{i}/{len(self.stages)}] {stage}: running ({elapsed:.0f}s elapsed)", flush=True)
    t0 = time.time()
    out = fn()
    self.seconds[stage] = time.time() - t0
    print(f"[{i}/{len(self.stages)}] {stage}: finished in {self.seconds[stage]:.0f}s", flush=True)
    return out


def _train_stage(config, workdir: str, stage: str) -> dict[str, Any]:
  c = stage_config(config, stage, workdir)
  summary = train.run(c, os.path.join(workdir, stage))
  _mark_done(workdir, stage, {"mode": c.mode, "init_checkpoint": c.init_checkpoint, "rounds": summary["rounds"]})
  return summary


def _eval_stage(config, workdir: str, stage: str, items, probe_nodes, pool) -> dict[str, Any]:
  cfg, params, tok = evaluation.load_model(export_dir(workdir, stage))
  decoding = evaluation.Decoding(max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size,
                               seed=config.seed)
  result = evaluation.evaluate_model(params, cfg, tok, items, pool, decoding, run=stage, probe_nodes=probe_nodes)
  result["checkpoint"] = os.path.abspath(export_dir(workdir, stage))
  evaluation.write_json(result, os.path.join(workdir, "eval", f"{stage}.json"))
  return result


def _set_fields(section: ml_collections.ConfigDict) -> dict[str, Any]:
  return {k: v for k, v in sorted(section.items()) if v is not None}


def results_markdown(config, results: list[dict[str, Any]], seconds: dict[str, float]) -> str:
  """The comparison table with when, where and how it was made."""
  meta = results[0]
  lines = [f"# Small-model TSP experiment ({config.variant})", "",
           f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}, commit "
           f"`{meta.get('commit')}`, machine: {platform.machine()} {os.cpu_count()} cores, "
           f"{jax.devices()[0].platform} ({jax.device_count()} devices)",
           f"- model {_set_fields(config.model_dims)}, vocab {config.tokenizer_vocab_size}; pre-train "
           f"{config.pretrain_steps} micro-batches of {config.batch_size}; each arm {config.arm_steps} "
           f"micro-batches from the pre-trained checkpoint",
           f"- eval split `{config.eval_split}`, greedy, {config.eval.max_new_tokens} new tokens; probe on "
           f"{config.eval.probe_nodes} dev risk nodes (T 0.2, top-p 0.9)",
           "- stage seconds (this invocation): " + (", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) or "-"),
           "", evaluation.compare_table(results), ""]
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) every stage; returns {"results": [per-run eval dicts], "table": markdown}."""
  config = config_lib.resolve_dirs(config, data_dir="data", eval_dir="eval")
  if not config.arms or any(a not in config.stages or a == PRETRAIN for a in config.arms):
    raise ValueError(f"config.arms={tuple(config.arms)} must be a non-empty subset of "
                     f"{sorted(k for k in config.stages if k != PRETRAIN)}")
  os.makedirs(workdir, exist_ok=True)
  runs = [PRETRAIN, *config.arms]
  progress = Progress(runs + [f"eval_{r}" for r in runs])
  for stage in runs:
    progress.run(stage, lambda stage=stage: _train_stage(config, workdir, stage), _done(workdir, stage))

  items = evaluation.load_benchmarks(config.eval_dir, config.eval_split, list(config.eval.benchmarks),
                                     config.eval.limit)
  _, dev_nodes = data.load_nodes(data.split_files(config.data_dir, "dev"))
  probe_nodes = dev_nodes[:config.eval.probe_nodes]
  results = []
  with VerifierPool(num_workers=config.num_workers) as pool:
    for stage in runs:
      path = os.path.join(workdir, "eval", f"{stage}.json")
      result = progress.run(f"eval_{stage}", lambda stage=stage: _eval_stage(config, workdir, stage, items,
                                                                             probe_nodes, pool),
                            os.path.exists(path))
      results.append(result if result is not None else evaluation.read_json(path))
  table = results_markdown(config, results, progress.seconds)
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(table)
  evaluation.plot_per_cwe(results, os.path.join(workdir, "per_cwe.png"))
  print(table, flush=True)
  print(f"results: {os.path.join(workdir, 'results.md')}\nplot: {os.path.join(workdir, 'per_cwe.png')}")
  return {"results": results, "table": table}


def _cli_main() -> None:
  """Defines the flags here, not at import (the library modules define none at import)."""
  config = config_flags.DEFINE_config_file("config", "configs/experiment.py:tiny",
                                           "Experiment config file[:variant].")
  workdir = flags.DEFINE_string("workdir", "runs/experiment", "Output directory (a folder per stage).")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    run(config.value, workdir.value)

  app.run(main)


if __name__ == "__main__":
  _cli_main()
