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

from configs import base
from tsp_jax import data, evaluate, train

PRETRAIN = "pretrain"


def stage_config(config: ml_collections.ConfigDict, mode: str, init_checkpoint: str) -> ml_collections.ConfigDict:
  """The trainer config of one stage: the tiny `mode` config with the experiment's shared settings.

  `init_checkpoint` empty: the pre-training stage (random init, tokenizer trained, both versions of each pair).
  """
  c = base.base_config(mode, "tiny")
  pre = not init_checkpoint
  c.seed = config.seed
  c.data_dir = config.data_dir
  c.init_checkpoint = init_checkpoint
  c.tokenizer_vocab_size = config.tokenizer_vocab_size
  c.model.overrides = ml_collections.ConfigDict(config.model_dims.to_dict())
  c.batch_size = config.batch_size
  c.search.max_prefix = config.max_prefix
  c.search.max_new_tokens = config.max_new_tokens
  c.verify.num_workers = config.num_workers
  c.rounds = 1
  c.sft_include_vulnerable = pre
  c.optim.steps = config.pretrain.steps if pre else config.arm.steps
  c.optim.lr = config.pretrain.lr if pre else config.arm.lr
  c.optim.warmup_ratio = config.pretrain.warmup_ratio if pre else c.optim.warmup_ratio
  c.nodes_per_round = config.arm.nodes_per_round
  c.dev_nodes = config.arm.dev_nodes
  c.checkpoint_every = max(1, c.optim.steps // 4)
  c.export = True
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


def _train_stage(config, workdir: str, stage: str, mode: str, init: str) -> dict[str, Any]:
  summary = train.run(stage_config(config, mode, init), os.path.join(workdir, stage))
  _mark_done(workdir, stage, {"mode": mode, "init_checkpoint": init, "rounds": summary["rounds"]})
  return summary


def _eval_stage(config, workdir: str, stage: str, items, probe_nodes, pool) -> dict[str, Any]:
  cfg, params, tok = evaluate.load_model(export_dir(workdir, stage))
  decoding = evaluate.Decoding(max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size,
                               seed=config.seed)
  result = evaluate.evaluate_model(params, cfg, tok, items, pool, decoding, run=stage, probe_nodes=probe_nodes)
  result["checkpoint"] = os.path.abspath(export_dir(workdir, stage))
  evaluate.write_json(result, os.path.join(workdir, "eval", f"{stage}.json"))
  return result


def results_markdown(config, results: list[dict[str, Any]], seconds: dict[str, float]) -> str:
  """The comparison table with when, where and how it was made."""
  meta = results[0]
  lines = [f"# Small-model TSP experiment ({config.variant})", "",
           f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}, commit "
           f"`{meta.get('commit')}`, machine: {platform.machine()} {os.cpu_count()} cores, "
           f"{jax.devices()[0].platform} ({jax.device_count()} devices)",
           f"- model {config.model_dims.to_dict()}, vocab {config.tokenizer_vocab_size}; pre-train "
           f"{config.pretrain.steps} micro-batches of {config.batch_size}; each arm {config.arm.steps} "
           f"micro-batches from the pre-trained checkpoint",
           f"- eval split `{config.eval_split}`, greedy, {config.eval.max_new_tokens} new tokens; probe on "
           f"{config.eval.probe_nodes} dev risk nodes (T 0.2, top-p 0.9)",
           "- stage seconds (this invocation): " + (", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) or "-"),
           "", evaluate.compare_table(results), ""]
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) every stage; returns {"results": [per-run eval dicts], "table": markdown}."""
  for key in ("data_dir", "eval_dir"):
    if not config[key] or not os.path.isdir(config[key]):
      raise ValueError(f"config.{key}={config[key]!r} is not a directory (pass --config.{key}=...)")
  if not config.arms or any(a not in train.MODES for a in config.arms):
    raise ValueError(f"config.arms={tuple(config.arms)} must be a non-empty subset of {train.MODES}")
  os.makedirs(workdir, exist_ok=True)
  runs = [PRETRAIN, *config.arms]
  progress = Progress(runs + [f"eval_{r}" for r in runs])
  init = export_dir(workdir, PRETRAIN)
  progress.run(PRETRAIN, lambda: _train_stage(config, workdir, PRETRAIN, "sft", ""), _done(workdir, PRETRAIN))
  for arm in config.arms:
    progress.run(arm, lambda arm=arm: _train_stage(config, workdir, arm, arm, init), _done(workdir, arm))

  items = evaluate.load_benchmarks(config.eval_dir, config.eval_split, list(config.eval.benchmarks),
                                   config.eval.limit)
  _, dev_nodes = data.load_nodes(data.split_files(config.data_dir, "dev"))
  probe_nodes = dev_nodes[:config.eval.probe_nodes]
  from tsp_jax.verify import VerifierPool  # pylint: disable=import-outside-toplevel
  results = []
  with VerifierPool(num_workers=config.num_workers) as pool:
    for stage in runs:
      path = os.path.join(workdir, "eval", f"{stage}.json")
      result = progress.run(f"eval_{stage}", lambda stage=stage: _eval_stage(config, workdir, stage, items,
                                                                             probe_nodes, pool),
                            os.path.exists(path))
      results.append(result if result is not None else evaluate.read_json(path))
  table = results_markdown(config, results, progress.seconds)
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(table)
  evaluate.plot_per_cwe(results, os.path.join(workdir, "per_cwe.png"))
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
