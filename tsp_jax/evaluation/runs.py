"""Runs: completions -> programs -> verdicts -> results (a dict written as JSON, with the run's metadata).

Every program is labelled by the verifier pool in one batch per run; a benchmark of `SECOND_JUDGES`
(SecurityEval) is also summarised under its second static mode, from the same findings (no second batch). A
task without the reference program that `evaluate_reference` asks for is a counted skip (`no_reference`), and so
is a prompt that does not fit the model's context with room to generate (`prompt_too_long`), never a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from tsp_jax import data
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.evaluation.benchmarks import REFERENCE_KINDS, SECOND_JUDGES, SECURITY_JUDGES, EvalItem, program_of
from tsp_jax.evaluation.decoding import Decoding, encode_prompts, generate, load_model, resolve_checkpoint, run_name
from tsp_jax.evaluation.metrics import by_group, by_language, per_cwe, seen_unseen, summarize
from tsp_jax.evaluation.probe import node_probe
from tsp_jax.model import llama
from tsp_jax.verify import static
from tsp_jax.verify.types import TESTS_NONE, Task, Verdict

SKIP_TOO_LONG, SKIP_NO_REFERENCE = "prompt_too_long", "no_reference"


def _item_record(item: EvalItem, program: str | None, verdict: Verdict | None, skipped: str | None
                 ) -> dict[str, Any]:
  return {"id": item.task.id, "cwe": item.task.cwe, "language": item.language,
          "cwe_seen_in_train": item.task.cwe_seen_in_train,
          **item.groups, "skipped": skipped, "program": program,
          "verdict": None if verdict is None else verdict.to_json()}


def judged_as(task: Task, program: str, verdict: Verdict, mode: str) -> Verdict:
  """The verdict of a statically judged program (`task.tests` none) had its task been in `mode` (cwe | strict):
  its findings recounted. A verdict without static analysis (syntax error, crash) stays as it is."""
  if task.tests != TESTS_NONE:
    raise ValueError(f"task {task.id}: a second static judge needs a task without executable tests")
  if verdict.static_secure is None:
    return verdict
  rejudged = dataclasses.replace(task, mode=mode)
  secure, counted, first, _ = static.static_verdict(rejudged, program, verdict.findings)
  return dataclasses.replace(verdict, secure=secure, counted=counted, first_finding_offset=first,
                             static_secure=secure)


def _add_second_judge(bench: dict[str, Any], name: str, done: Sequence[int], tasks: Sequence[Task],
                      programs: Sequence[str], verdicts: Sequence[Verdict]) -> None:
  """Adds a benchmark's second static judge (`SECOND_JUDGES[name]`) to its results: the headline's label under
  "headline_judge", the second judge's summary under groups["judge"][label] and per-CWE counts under
  judge_per_cwe[label], and its verdict as "secure_<mode>" on each verified item."""
  judge = SECOND_JUDGES[name]
  vs = [judged_as(t, p, v, judge.mode) for t, p, v in zip(tasks, programs, verdicts, strict=True)]
  bench["headline_judge"] = judge.headline
  bench["groups"]["judge"] = {judge.label: summarize(vs)}
  bench["judge_per_cwe"] = {judge.label: per_cwe(tasks, vs)}
  for i, v in zip(done, vs):
    bench["items"][i][f"secure_{judge.mode}"] = v.secure


def score(items_by_benchmark: Mapping[str, Sequence[EvalItem]], programs: Mapping[str, Sequence[str | None]],
          skips: Mapping[str, Sequence[str | None]], pool) -> dict[str, Any]:
  """Verifies every non-skipped program in one pool batch and summarises each benchmark.

  Args:
    items_by_benchmark: the items of each benchmark.
    programs: per benchmark, one program per item (None where skipped).
    skips: per benchmark, one skip reason per item (None where evaluated).
    pool: a `VerifierPool` (anything with `verify(tasks, programs) -> verdicts`).
  Returns:
    {benchmark: {"metrics", "seen", "unseen", "per_cwe", "by_language" (`by_language`: per language, its
    metrics, seen / unseen and per-CWE counts), "groups" (`by_group`), "skipped": {reason: count},
    "items": [...]}}; a benchmark of `SECOND_JUDGES` also has groups["judge"] and "judge_per_cwe".
  """
  flat = [(name, i) for name, items in items_by_benchmark.items() for i in range(len(items))
          if skips[name][i] is None]
  verdicts = pool.verify([items_by_benchmark[n][i].task for n, i in flat], [programs[n][i] for n, i in flat])
  by_item = dict(zip(flat, verdicts, strict=True))
  out = {}
  for name, items in items_by_benchmark.items():
    done = [i for i in range(len(items)) if (name, i) in by_item]
    tasks, vs = [items[i].task for i in done], [by_item[(name, i)] for i in done]
    reasons = [r for r in skips[name] if r is not None]
    out[name] = {"security_judge": SECURITY_JUDGES.get(name), "metrics": summarize(vs), **seen_unseen(tasks, vs),
                 "per_cwe": per_cwe(tasks, vs), "by_language": by_language(tasks, vs),
                 "groups": by_group([items[i].groups for i in done], vs),
                 "skipped": {r: reasons.count(r) for r in sorted(set(reasons))},
                 "items": [_item_record(it, programs[name][i], by_item.get((name, i)), skips[name][i])
                           for i, it in enumerate(items)]}
    if name in SECOND_JUDGES:
      _add_second_judge(out[name], name, done, tasks, [programs[name][i] for i in done], vs)
  return out


def _commit() -> str | None:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def _run_meta(run: str, **fields) -> dict[str, Any]:
  return {"run": run, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "commit": _commit(), **fields}


def evaluate_reference(items_by_benchmark: Mapping[str, Sequence[EvalItem]], kind: str, pool) -> dict[str, Any]:
  """Results of the dataset's reference programs of `kind` (secure | vulnerable | solution) as they are."""
  if kind not in REFERENCE_KINDS:
    raise ValueError(f"unknown reference kind {kind!r}; expected one of {REFERENCE_KINDS}")
  programs = {n: [it.references.get(kind) for it in items] for n, items in items_by_benchmark.items()}
  skips = {n: [None if p is not None else SKIP_NO_REFERENCE for p in ps] for n, ps in programs.items()}
  return {**_run_meta(f"reference_{kind}", reference=kind, checkpoint=None),
          "benchmarks": score(items_by_benchmark, programs, skips, pool)}


def evaluate_model(params: llama.Params, cfg: llama.LlamaConfig, tok: tokenizer_lib.Tokenizer,
                   items_by_benchmark: Mapping[str, Sequence[EvalItem]], pool, decoding: Decoding = Decoding(),
                   run: str = "model", probe_nodes: Sequence[data.Node] = ()) -> dict[str, Any]:
  """Results of one completion per prompt from the model (all benchmarks decoded together, then verified),
  and the node probe's figures (`node_probe`, sampled at T 0.2 / top-p 0.9) under "probe" when nodes are given."""
  budget = cfg.max_seq_len - decoding.max_new_tokens
  if budget < 1:
    raise ValueError(f"max_new_tokens {decoding.max_new_tokens} leaves no room for a prompt in the model's "
                     f"context of {cfg.max_seq_len}")
  keys = [(n, i) for n, items in items_by_benchmark.items() for i in range(len(items))]
  ids = encode_prompts(tok, [items_by_benchmark[n][i].prompt for n, i in keys], budget)
  kept = [k for k, x in zip(keys, ids) if x is not None]
  completions = dict(zip(kept, generate(params, cfg, tok, [x for x in ids if x is not None], decoding)))
  programs = {n: [program_of(it, completions[(n, i)]) if (n, i) in completions else None
                  for i, it in enumerate(items)] for n, items in items_by_benchmark.items()}
  skips = {n: [None if p is not None else SKIP_TOO_LONG for p in ps] for n, ps in programs.items()}
  result = {**_run_meta(run, reference=None, decoding=dataclasses.asdict(decoding), context=cfg.max_seq_len),
            "benchmarks": score(items_by_benchmark, programs, skips, pool)}
  if probe_nodes:
    probe_decoding = Decoding.named("sample", seed=decoding.seed, max_new_tokens=decoding.max_new_tokens,
                                    batch_size=decoding.batch_size)
    result["probe"] = node_probe(params, cfg, tok, probe_nodes, pool, probe_decoding)
  return result


def evaluate_checkpoint(checkpoint_dir: str | os.PathLike, items_by_benchmark: Mapping[str, Sequence[EvalItem]],
                        pool=None, decoding: Decoding = Decoding(), run: str | None = None, dtype: str = "float32",
                        probe_nodes: Sequence[data.Node] = (), num_workers: int = 2) -> dict[str, Any]:
  """`evaluate_model` on an exported HF folder or a trainer workdir holding one in `export/` (the run is named
  after it unless `run` is given). Without a pool, one with `num_workers` workers is started for the call,
  after the model has loaded (a bad checkpoint fails before any worker starts)."""
  checkpoint_dir = resolve_checkpoint(checkpoint_dir)
  cfg, params, tok = load_model(checkpoint_dir, dtype)
  with _pool(pool, num_workers) as p:
    result = evaluate_model(params, cfg, tok, items_by_benchmark, p, decoding, run or run_name(checkpoint_dir),
                            probe_nodes)
  return {**result, "checkpoint": os.path.abspath(checkpoint_dir)}


def _pool(pool, num_workers: int):
  """`pool` as a no-op context, or a new VerifierPool that closes on exit."""
  if pool is not None:
    return contextlib.nullcontext(pool)
  from tsp_jax.verify.pool import VerifierPool  # pylint: disable=import-outside-toplevel
  return VerifierPool(num_workers=num_workers)
