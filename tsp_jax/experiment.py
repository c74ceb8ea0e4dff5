r"""The TSP experiment end to end: tasks, pre-training (or a checkpoint), the arms, evaluation; over seeds.

    python -m tsp_jax.experiment --config=configs/experiment.py:synth --workdir=runs/experiment [--seeds=3]

Stages (each resumable: a finished stage is skipped, an interrupted one resumes from its orbax checkpoint):
  0. `tasks` (synth): the generated task splits (`tsp_jax.synth`) in `<workdir>/tasks`, shared by every seed.
  1. `pretrain` (without `init_checkpoint`): a SentencePiece tokenizer and a tiny Llama trained from random init
     on code with both secure and vulnerable solutions (synth: `pretrain.jsonl`, every family; shared data: both
     versions of every training function), which is where a model learns to write the vulnerable one.
  2. the arms (`config.arms`: `sft`, `selfplay`, `tsp` and TSP ablations), each from the same start with the
     same optimizer budget: SFT on the golden functions; sequence-level self-play (golden vs the model's own
     samples, DPO); TSP (node-level pairs from tree search at risk nodes, labelled by the verifier pool).
  3. `eval`: the start and each arm on the test split (greedy, one completion per prompt; synth: per subset and
     family) plus the node-level probe on dev-split risk nodes: `<workdir>/results.md`, `per_cwe.png`.
With `--seeds=N` the experiment runs for seeds seed..seed+N-1 in `<workdir>/seed_<s>/` (the same tasks; with
`shared_pretrain` the first seed's pre-trained model is every seed's start), then `<workdir>/seeds.md` / `seeds.json` / `seeds.png` report mean +- std and per-seed values.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from tsp_jax import config as config_lib
from tsp_jax import data, evaluation, pairs, train
from tsp_jax.evaluation import seeds as seeds_lib
from tsp_jax.synth import generate as synth_generate
from tsp_jax.verify import VerifierPool

PRETRAIN, INIT = "pretrain", "init"  # the start of the arms: the pre-trained model, or `init_checkpoint`
TASKS = "tasks"
EVAL_MEMO_SIZE = 100_000  # verdicts the evaluation pool keeps (all runs of a seed: a few thousand programs)


def start_run(config: ml_collections.ConfigDict) -> str:
  """The run the arms start from: `init` (config.init_checkpoint) or `pretrain`."""
  return INIT if config.init_checkpoint else PRETRAIN


def stage_config(config: ml_collections.ConfigDict, stage: str, workdir: str) -> ml_collections.ConfigDict:
  """The trainer config of one stage (`config.stages[stage]`): the arms start from the start's export."""
  c = config.stages[stage].copy_and_resolve_references()
  c.data_dir = config.data_dir
  c.init_checkpoint = "" if stage == PRETRAIN else export_dir(config, workdir, start_run(config))
  return c


def export_dir(config: ml_collections.ConfigDict, workdir: str, stage: str) -> str:
  """Where a run's HF folder is: the trainer's export of a stage, or `init_checkpoint` for `init`."""
  return config.init_checkpoint if stage == INIT else os.path.join(workdir, stage, "export")


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


def synth_settings(config: ml_collections.ConfigDict) -> synth_generate.Settings:
  """The generator settings of `config.synth`."""
  return synth_generate.Settings(**config.synth.to_dict())


def write_tasks(config: ml_collections.ConfigDict, tasks_dir: str) -> None:
  """Generates the synth task splits into `tasks_dir` once; a folder made with other settings is an error."""
  synth = synth_settings(config)
  settings = dataclasses.asdict(synth)
  marker = os.path.join(tasks_dir, "settings.json")
  if os.path.exists(marker):
    with open(marker, encoding="utf-8") as f:
      found = json.load(f)
    if found != json.loads(json.dumps(settings)):
      raise ValueError(f"{tasks_dir} holds tasks generated with {found}, not {settings}: use another workdir")
    return
  synth_generate.write(synth_generate.generate(synth), tasks_dir)
  with open(marker, "w", encoding="utf-8") as f:
    json.dump(settings, f, indent=1)


def _with_dirs(config: ml_collections.ConfigDict, tasks_dir: str) -> ml_collections.ConfigDict:
  """The config with its data and eval folders: the generated tasks (synth), else the shared ones. Synth's
  `eval_split` "dev" evaluates on the dev tasks (seen families) of the data folder: where settings are tuned."""
  if config.tasks == "synth":
    write_tasks(config, tasks_dir)
    config = config.copy_and_resolve_references()
    config.data_dir = os.path.join(tasks_dir, "data")
    config.eval_dir = config.data_dir if config.eval_split == "dev" else os.path.join(tasks_dir, "eval")
    return config
  if config.tasks != "shared":
    raise ValueError(f"config.tasks must be 'synth' or 'shared', got {config.tasks!r}")
  return config_lib.resolve_dirs(config, data_dir="data", eval_dir="eval")


def _train_stage(config, workdir: str, stage: str) -> dict[str, Any]:
  c = stage_config(config, stage, workdir)
  summary = train.run(c, os.path.join(workdir, stage))
  _mark_done(workdir, stage, {"mode": c.mode, "init_checkpoint": c.init_checkpoint, "rounds": summary["rounds"]})
  return summary


def _eval_stage(config, workdir: str, stage: str, items, probe_nodes, pool) -> dict[str, Any]:
  cfg, params, tok = evaluation.load_model(export_dir(config, workdir, stage))
  decoding = evaluation.Decoding(max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size,
                                 seed=config.seed)
  result = evaluation.evaluate_model(params, cfg, tok, items, pool, decoding, run=stage, probe_nodes=probe_nodes)
  result["checkpoint"] = os.path.abspath(export_dir(config, workdir, stage))
  evaluation.write_json(result, os.path.join(workdir, "eval", f"{stage}.json"))
  return result


def round_stats(workdir: str, arms: Sequence[str]) -> list[dict[str, Any]]:
  """Per arm and round, what its pair source logged (`round_data` events of `<arm>/metrics.jsonl`)."""
  out = []
  for arm in arms:
    path = os.path.join(workdir, arm, "metrics.jsonl")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        out += [{"arm": arm, **r} for r in map(json.loads, f) if r.get("event") == "round_data"]
  return out


def rounds_table(stats: Sequence[dict[str, Any]]) -> str:
  """TSP rounds: branches, their labels (% broken) and the nodes whose tree holds a secure and a vulnerable
  branch (a decision the pairs can teach); "" when no arm built trees."""
  rows = [r for r in stats if r.get("branches")]
  if not rows:
    return ""
  lines = ["| arm | round | nodes | branches | secure | vulnerable | broken % | dropped | nodes secure+vulnerable % "
           "| pairs |", "|" + "---|" * 10]
  for r in rows:
    verified = r["branches"] - r.get("unverified", 0)
    broken = f"{100 * r['label_broken'] / verified:.1f}" if verified else "- (unverified)"
    both = f"{100 * r['nodes_secure_and_vulnerable'] / r['nodes']:.1f}" if verified and r["nodes"] else "-"
    lines.append(f"| {r['arm']} | {r['round']} | {r['nodes']} | {r['branches']} | {r['label_secure']} | "
                 f"{r['label_vulnerable']} | {broken} | {r['label_drop']} | {both} | "
                 f"{sum(v for k, v in r.items() if k.startswith('pairs_') and k[6:] in pairs.KIND_NAMES)} |")
  return "\n".join(lines)


def _set_fields(section: ml_collections.ConfigDict) -> dict[str, Any]:
  return {k: v for k, v in sorted(section.items()) if v is not None}


def results_markdown(config, results: list[dict[str, Any]], seconds: dict[str, float],
                     stats: Sequence[dict[str, Any]] = ()) -> str:
  """The comparison table with when, where and how it was made."""
  meta = results[0]
  start = (f"from `{config.init_checkpoint}`" if config.init_checkpoint else
           f"pre-train {config.pretrain_steps} micro-batches of {config.pretrain_batch_size}")
  lines = [f"# TSP experiment ({config.variant}, seed {config.seed})", "",
           f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}, commit "
           f"`{meta.get('commit')}`, machine: {platform.machine()} {os.cpu_count()} cores, "
           f"{jax.devices()[0].platform} ({jax.device_count()} devices)",
           f"- tasks: {config.tasks}" + (f" {synth_settings(config)}" if config.tasks == "synth" else ""),
           f"- model {_set_fields(config.model_dims)}, vocab {config.tokenizer_vocab_size}; {start}; each arm "
           f"{config.rounds} round(s) of {config.arm_steps} micro-batches from the start",
           f"- eval split `{config.eval_split}`, greedy, {config.eval.max_new_tokens} new tokens; probe on "
           f"{config.eval.probe_nodes} dev risk nodes (T 0.2, top-p 0.9)",
           "- stage seconds (this invocation): " + (", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) or "-"),
           "", evaluation.compare_table(results), ""]
  for key in ("spr_at_1", "secure_pass_at_1"):
    table = evaluation.family_table(results, "synth", key)
    if table:
      lines += [table, ""]
  table = rounds_table(stats)
  if table:
    lines += ["Tree-search rounds (labels of the sampled branches):", "", table, ""]
  return "\n".join(lines)


def split_arms(arms: Sequence[str]) -> tuple[str, ...]:
  """`--config.arms=sft,tsp` arrives as one string: the arm names of every comma-separated entry."""
  return tuple(a.strip() for entry in arms for a in entry.split(",") if a.strip())


def run(config: ml_collections.ConfigDict, workdir: str, tasks_dir: str | None = None) -> dict[str, Any]:
  """Runs (or resumes) every stage; returns {"results": [per-run eval dicts], "table": markdown}.

  `tasks_dir`: where the synth tasks are (default `<workdir>/tasks`; the seeds of `run_seeds` share one).
  """
  names = [k for k in config.stages if k != PRETRAIN]
  if not config.arms or any(a not in names for a in config.arms):
    raise ValueError(f"config.arms={tuple(config.arms)} must be a non-empty subset of {sorted(names)}")
  os.makedirs(workdir, exist_ok=True)
  config = _with_dirs(config, tasks_dir or os.path.join(workdir, TASKS))
  start = start_run(config)
  runs = [start, *config.arms]
  trained = runs if start == PRETRAIN else list(config.arms)
  progress = Progress(trained + [f"eval_{r}" for r in runs])
  for stage in trained:
    progress.run(stage, lambda stage=stage: _train_stage(config, workdir, stage), _done(workdir, stage))

  languages = list(config.eval.languages)
  items = evaluation.load_benchmarks(config.eval_dir, config.eval_split, list(config.eval.benchmarks),
                                     config.eval.limit, languages=languages,
                                     seen_cwes=data.training_cwes(config.data_dir))
  _, dev_nodes = data.load_nodes(data.split_files(config.data_dir, "dev"), languages=languages)
  probe_nodes = dev_nodes[:config.eval.probe_nodes]
  results = []
  # one pool for every run's evaluation: a program two runs wrote alike is judged once
  with VerifierPool(num_workers=config.num_workers, memo_size=EVAL_MEMO_SIZE) as pool:
    for stage in runs:
      path = os.path.join(workdir, "eval", f"{stage}.json")
      result = progress.run(f"eval_{stage}", lambda stage=stage: _eval_stage(config, workdir, stage, items,
                                                                             probe_nodes, pool),
                            os.path.exists(path))
      results.append(result if result is not None else evaluation.read_json(path))
  table = results_markdown(config, results, progress.seconds, round_stats(workdir, config.arms))
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(table)
  evaluation.plot_per_cwe(results, os.path.join(workdir, "per_cwe.png"))
  print(table, flush=True)
  print(f"results: {os.path.join(workdir, 'results.md')}\nplot: {os.path.join(workdir, 'per_cwe.png')}")
  return {"results": results, "table": table}


def seeds_markdown(config, agg: dict[str, Any], baseline: str) -> str:
  """The seeds table and, per subset, which differences from `baseline` in SPR@1 exceed the spread."""
  lines = [f"# TSP experiment ({config.variant}) over seeds", "", seeds_lib.seeds_table(agg), "",
           f"SPR@1 minus {baseline}, paired by seed (mean +- std of the differences; * = |mean| > std):", ""]
  for subset in agg["subsets"]:
    diffs = seeds_lib.differences(agg, "spr_at_1", baseline, subset)
    cells = [f"{d['run']} {100 * d['mean']:+.1f} +- {100 * (d['std'] or 0):.1f}{' *' if d['exceeds_spread'] else ''}"
             for d in diffs if d["mean"] is not None]
    lines.append(f"- {subset}: " + ("; ".join(cells) or "-"))
  return "\n".join(lines) + "\n"


def share_pretrain(first_dir: str, seed_dir: str) -> None:
  """Makes `seed_dir` use the first seed's pre-trained model and its evaluation (`shared_pretrain`: the base
  model every seed aligns, as CodeLlama is in the paper; greedy decoding evaluates it the same in every seed)."""
  os.makedirs(os.path.join(seed_dir, "eval"), exist_ok=True)
  link = os.path.join(seed_dir, PRETRAIN)
  if not os.path.lexists(link):
    os.symlink(os.path.join(os.path.abspath(first_dir), PRETRAIN), link)
  evaluated = os.path.join(seed_dir, "eval", f"{PRETRAIN}.json")
  if not os.path.exists(evaluated):
    shutil.copyfile(os.path.join(first_dir, "eval", f"{PRETRAIN}.json"), evaluated)


def run_seeds(config: ml_collections.ConfigDict, workdir: str, n: int) -> dict[str, Any]:
  """`run` for seeds config.seed .. config.seed + n - 1 in `<workdir>/seed_<s>` (one task set; with
  `config.shared_pretrain`, one pre-trained model: `share_pretrain`), then the mean +- std over seeds of the first
  evaluated benchmark: `seeds.md`, `seeds.json`, `seeds.png`."""
  if n < 1:
    raise ValueError(f"--seeds must be >= 1, got {n}")
  per_seed, first = [], config.seed
  for i in range(n):
    config.seed = first + i  # the reference: every stage's seed follows (a resolved copy's stages would not)
    try:
      c = config.copy_and_resolve_references()
    finally:
      config.seed = first
    print(f"=== seed {c.seed} ({i + 1}/{n}) ===", flush=True)
    seed_dir = os.path.join(workdir, f"seed_{c.seed}")
    if i and config.shared_pretrain and start_run(config) == PRETRAIN:
      share_pretrain(os.path.join(workdir, f"seed_{first}"), seed_dir)
    per_seed.append(run(c, seed_dir, os.path.join(workdir, TASKS))["results"])
  bench = config.eval.benchmarks[0]
  agg = seeds_lib.aggregate(per_seed, bench)
  text = seeds_markdown(config, agg, "sft" if "sft" in config.arms else start_run(config))
  evaluation.write_json(agg, os.path.join(workdir, "seeds.json"))
  with open(os.path.join(workdir, "seeds.md"), "w", encoding="utf-8") as f:
    f.write(text)
  seeds_lib.plot_seeds(agg, os.path.join(workdir, "seeds.png"))
  print(text, flush=True)
  return {"aggregate": agg, "table": text}


def use_compilation_cache(cache_dir: str, min_compile_s: float = 0.5) -> None:
  """Turns on JAX's persistent compilation cache in `cache_dir` ('' leaves it off) for every compile of this
  process that takes at least `min_compile_s`: the stages and seeds that jit the same programs compile once."""
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)


def _cli_main() -> None:
  """Defines the flags here, not at import (the library modules define none at import)."""
  config = config_flags.DEFINE_config_file("config", "configs/experiment.py:synth",
                                           "Experiment config file[:variant].")
  workdir = flags.DEFINE_string("workdir", "runs/experiment", "Output directory (a folder per stage).")
  n_seeds = flags.DEFINE_integer("seeds", 1, "> 1: the whole experiment per seed, then mean +- std over seeds.")
  cache = flags.DEFINE_string("compilation_cache", None, "JAX's persistent compilation cache (default "
                              "<workdir>/jax_cache: the stages and seeds that jit the same programs compile "
                              "them once); '' turns it off.")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    use_compilation_cache(os.path.join(workdir.value, "jax_cache") if cache.value is None else cache.value)
    config.value.arms = split_arms(config.value.arms)
    if n_seeds.value > 1:
      run_seeds(config.value, workdir.value, n_seeds.value)
    else:
      run(config.value, workdir.value)

  app.run(main)


if __name__ == "__main__":
  _cli_main()
