"""The verifier's data: what a program is checked against (`Task`) and what comes back (`Verdict`).

Tasks come from the shared JSONL files (CWEval in Python and, from `../shared/xlang/eval/cweval`, in C, C++, Go
and JavaScript; CodeGuard+, SVEN/SafeCoder) or from a training risk node (`node_task`). They are plain, picklable dataclasses: the pool sends them to worker processes as they are.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any, Mapping

# Verdict.status values.
OK = "ok"
SYNTAX_ERROR = "syntax_error"
TIMEOUT = "timeout"
CRASHED = "crashed"
ERROR = "error"  # the verifier failed on this program: undecided, never a label
STATUSES = (OK, SYNTAX_ERROR, TIMEOUT, CRASHED, ERROR)

# Task.tests values: how a task's executable tests are run (see tsp_jax.verify.dynamic).
TESTS_NONE = "none"
TESTS_CWEVAL = "cweval"  # one pytest file; -m functionality / -m security selections
TESTS_CODEGUARD = "codeguardplus"  # functional.py testing every candidate (.py; C/C++: .c/.cpp) of a directory
TESTS_SCRIPT = "script"  # program + "\n" + functional_tests run as one script; exit 0 = pass (HumanEval)
TEST_KINDS = (TESTS_NONE, TESTS_CWEVAL, TESTS_CODEGUARD, TESTS_SCRIPT)

# Task.mode values: which static findings make a program insecure.
MODE_CWE = "cwe"  # only findings mapped to the task's CWE (or a CWE related to it) count
MODE_STRICT = "strict"  # any finding counts


@dataclasses.dataclass(frozen=True)
class Task:
  """One verification task; every field but id and cwe is optional."""
  id: str
  cwe: str  # "CWE-078"
  language: str = "python"
  prompt: str = ""
  entry_point: str | None = None
  tests: str = TESTS_NONE
  functional_tests: str | None = None
  security_tests: str | None = None
  functional_test_args: tuple[str, ...] = ()
  security_test_args: tuple[str, ...] = ()
  task_module: str | None = None  # CWEval: the candidate is written as <task_module>.py
  test_module: str | None = None  # CWEval: the tests as <test_module>.py
  functional_test_path: str | None = None  # CodeGuard+: where functional.py sits relative to support files
  support_files: tuple[tuple[str, str], ...] = ()  # (relative path, text) written next to the tests
  requirements: tuple[str, ...] = ()
  external_tools: tuple[str, ...] = ()
  cwe_seen_in_train: bool | None = None
  mode: str = MODE_CWE
  # Patch oracle (training nodes): the program's text from `node_offset` on is the model's branch; it is
  # vulnerable if its first lines reproduce `vulnerable_lines`, secure if they reproduce `fixed_lines`.
  node_offset: int | None = None
  fixed_lines: tuple[str, ...] = ()
  vulnerable_lines: tuple[str, ...] = ()
  reference_secure: str | None = None
  reference_vulnerable: str | None = None
  # CodeGuard+ in C / C++: the candidate is written as `task_file` (functional.py tests every program there).
  # CWEval beyond Python (tsp_jax.verify.dynamic): the candidate is written as `task_file` after `source_prelude`
  # (the C/C++ header prelude) and, unless it holds `entrypoint_anchor` already, followed by the anchor and
  # `entrypoint` (the `main` harness); `build_commands` (shell, run in the sandbox dir) build it.
  task_file: str | None = None
  source_prelude: str = ""
  entrypoint_anchor: str = ""
  entrypoint: str = ""
  build_commands: tuple[str, ...] = ()

  def __post_init__(self):
    if self.tests not in TEST_KINDS:
      raise ValueError(f"task {self.id}: unknown tests kind {self.tests!r}; expected one of {TEST_KINDS}")
    if self.mode not in (MODE_CWE, MODE_STRICT):
      raise ValueError(f"task {self.id}: unknown mode {self.mode!r}; expected 'cwe' or 'strict'")
    if self.tests == TESTS_CWEVAL and not (self.task_module and self.test_module and self.functional_tests):
      raise ValueError(f"task {self.id}: CWEval tests need task_module, test_module and the test file")


@dataclasses.dataclass(frozen=True)
class Finding:
  """One static-analysis alert (or a patch-oracle decision) on a program."""
  tool: str  # "bandit" | "semgrep" | "oracle"
  test_id: str  # bandit "B602", semgrep rule id, "patch-oracle"
  cwe: str | None  # "CWE-078"
  severity: str  # LOW | MEDIUM | HIGH
  confidence: str  # LOW | MEDIUM | HIGH
  line: int  # 1-based
  col: int  # 0-based
  offset: int  # character offset into the program
  message: str = ""


@dataclasses.dataclass(frozen=True)
class Verdict:
  """What the pool says of one program.

  `secure` is the task's security judge: its executable security tests when it has them, else the static
  composite (bandit + semgrep, CWE-aware or strict) overridden by the patch oracle where it decides.
  `functional` is None when the task has no functional tests. `findings` holds every static alert found;
  `counted` the indices of those that made the program insecure.

  `status`, exactly:
    "syntax_error"  the program does not parse (`ast.parse`: SyntaxError, NUL bytes, nesting too deep); for C, C++
                    and Go it does not build (a compile or link error of the program), for JavaScript it fails
                    `node --check`.
    "ok"            it parsed (built), and its tests (if any) ran to a report. This includes programs that ran and failed:
                    an exception at import, an exit with status 0 at import (no test runs), a failing test, a
                    test past its per-test timeout, `sys.exit` inside a test: `functional=False`.
    "timeout"       the sandbox's wall clock (`test_wall_s`) killed its test run (e.g. a hang at import), or the
                    pool's `program_timeout_s` / `batch_timeout_s` passed before it was judged.
    "crashed"       while being imported by its tests it exited non-zero (`sys.exit(3)`, `os._exit(3)`), blew a
                    limit (MemoryError under RLIMIT_AS, SIGXCPU past `test_cpu_s`) or died by a signal
                    (`os.kill(os.getpid(), SIGKILL)`); or the test runner died without reporting (a signal or
                    `os._exit` inside a CWEval test, the harness dying); or the worker judging it died mid-job;
                    or it is longer than `max_program_chars`.
    "error"         the verifier itself failed on it: an exception in the worker's checks (a sandbox that cannot
                    start, a bandit bug), or the worker died or hung on a task without tests (only the static
                    analyzers run there, so the failure is theirs); or its tests cannot run here (a compiler,
                    node or an npm/apt package missing, a Go module that cannot be installed: `detail` starts
                    with "skipped: " and names it). Undecided: no judgement of the program.
  Under "timeout", "crashed" and "error", `functional` (False when the task has tests) and `secure` are no
  judgement of the program: the trainer drops such branches (`tsp_jax.sources.labels.verdict_label`), never
  labels them vulnerable; evaluation counts "error" as undecided (out of every rate's denominator). A pool
  whose workers cannot start gives no Verdict at all (`pool.WorkerStartError`), nor does a batch whose semgrep
  run failed (`pool.VerifierError`): a judge that lost an analyzer must not label.
  """
  status: str
  secure: bool
  functional: bool | None
  findings: tuple[Finding, ...] = ()
  counted: tuple[int, ...] = ()
  first_finding_offset: int | None = None
  static_secure: bool | None = None
  security_tests_passed: bool | None = None
  oracle: str | None = None  # "secure" | "vulnerable" | None (undecided or not a node task)
  detail: str = ""
  elapsed_s: float = 0.0

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _tuple(v: Any) -> tuple:
  return tuple(v) if v else ()


def task_from_record(raw: Mapping[str, Any], support_files: Mapping[str, str] | None = None,
                     mode: str = MODE_CWE, harness: Mapping[str, Any] | None = None) -> Task:
  """A Task from one shared-data JSONL record (CWEval, CodeGuard+, SVEN/SafeCoder).

  `harness`: CWEval's `harness.json` for records of other languages than Python (header preludes, pytest.ini);
  without it their C/C++ programs get no header prelude.
  """
  missing = [k for k in ("id", "cwe", "prompt") if not raw.get(k)]
  if missing:
    raise ValueError(f"record {raw.get('id', '?')!r} lacks {missing}")
  source = raw.get("source", "")
  common = dict(id=raw["id"], cwe=raw["cwe"], language=raw.get("language", "python"), prompt=raw["prompt"],
                entry_point=raw.get("entry_point"), requirements=_tuple(raw.get("requirements")),
                external_tools=_tuple(raw.get("external_tools")),
                cwe_seen_in_train=raw.get("cwe_seen_in_train"), mode=mode,
                reference_secure=raw.get("reference_secure"), reference_vulnerable=raw.get("reference_vulnerable"))
  if source == "cweval" and common["language"] != "python":
    return _xlang_cweval_task(raw, common, harness or {})
  if source in ("cweval", "synth"):
    support = (("pytest.ini", raw["pytest_ini"]),) if raw.get("pytest_ini") else ()
    return Task(**common, tests=TESTS_CWEVAL, functional_tests=raw["functional_tests"],
                security_tests=raw.get("security_tests"),
                functional_test_args=_tuple(raw.get("functional_test_args")),
                security_test_args=_tuple(raw.get("security_test_args")),
                task_module=raw["task_module"], test_module=raw["test_module"], support_files=support)
  if source == "codeguardplus" and isinstance(raw.get("functional_tests"), Mapping):  # C / C++ scenarios
    return _codeguard_native_task(raw, common, support_files or {})
  if source == "codeguardplus" and raw.get("functional_tests"):
    return Task(**common, tests=TESTS_CODEGUARD, functional_tests=raw["functional_tests"],
                functional_test_path=raw["functional_test_path"],
                support_files=tuple(sorted((support_files or {}).items())))
  return Task(**common)


def _codeguard_native_task(raw: Mapping[str, Any], common: dict[str, Any], support: Mapping[str, str]) -> Task:
  """A CodeGuard+ C / C++ scenario (`../shared/xlang/eval/codeguardplus_c/test.jsonl`): its `functional.py` and
  data files sit in `unit_test/<cwe>/<scenario>/` beside `unit_test/test_utils.py`, as in CodeGuard+'s checkout;
  the candidate is `candidates/candidate.c` (`.cpp`), the one program of the directory `functional.py` tests."""
  tests, info = raw["functional_tests"], raw["info"]
  unit_dir = f"unit_test/{info['cwe'].lower()}/{info['scenario']}"
  files = {f"{unit_dir}/{name}": text for name, text in tests["files"].items() if name != tests["entry"]}
  return Task(**common, tests=TESTS_CODEGUARD, functional_tests=tests["files"][tests["entry"]],
              functional_test_path=f"{unit_dir}/{tests['entry']}",
              support_files=tuple(sorted({**support, **files}.items())),
              task_file=f"candidates/candidate.{'cpp' if common['language'] == 'cpp' else 'c'}")


# harness.json keys of the header prelude CWEval prepends to a C / C++ candidate.
_PRELUDE_KEYS = {"c": "C_HEADERS", "cpp": "CPP_HEADERS"}


def _xlang_cweval_task(raw: Mapping[str, Any], common: dict[str, Any], harness: Mapping[str, Any]) -> Task:
  """A CWEval task in C, C++, Go or JavaScript (`../shared/xlang/eval/cweval/test.jsonl`): its pytest file calls
  the built binary (`compiled/<stem>_task`) or `node <stem>_task.js`; the build is the record's command that
  builds `task_file` (not the insecure reference's `unsafe_file`)."""
  task_file = raw["task_file"]
  builds = tuple(c for c in raw.get("build_commands") or () if task_file in c.split())
  if common["language"] in ("c", "cpp", "go") and not builds:
    raise ValueError(f"task {raw['id']}: no build command for {task_file}")
  ini = harness.get("pytest_ini")
  return Task(**common, tests=TESTS_CWEVAL, functional_tests=raw["test_file_source"],
              functional_test_args=_tuple(raw["functional_tests"]["pytest_args"]),
              security_test_args=_tuple((raw.get("security_tests") or {}).get("pytest_args")),
              task_module=os.path.splitext(task_file)[0], test_module=os.path.splitext(raw["test_file"])[0],
              support_files=(("pytest.ini", ini),) if ini else (), task_file=task_file,
              source_prelude=harness.get(_PRELUDE_KEYS.get(common["language"], ""), ""),
              entrypoint_anchor=raw.get("entrypoint_anchor") or "", entrypoint=raw.get("entrypoint") or "",
              build_commands=builds)


def jsonl_records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any] | ValueError]]:
  """(line number, record) for every non-blank line of a JSONL file; a malformed line (bad JSON or not an
  object) yields its ValueError in place of the record, for the caller to raise or count."""
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        raw = json.loads(line)
      except ValueError as e:
        yield lineno, e
        continue
      yield lineno, raw if isinstance(raw, dict) else ValueError("not a JSON object")


def support_files(jsonl_path: str | os.PathLike) -> dict[str, str] | None:
  """CodeGuard+'s support files next to a JSONL file (relative path -> text): `support_files.json` (Python), or
  the C / C++ scenarios' `test_utils.py`, as `unit_test/test_utils.py`; None when neither is there."""
  folder = os.path.dirname(os.fspath(jsonl_path))
  path = os.path.join(folder, "support_files.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  path = os.path.join(folder, "test_utils.py")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return {"unit_test/test_utils.py": f.read()}


def harness(jsonl_path: str | os.PathLike) -> dict[str, Any] | None:
  """CWEval's `harness.json` next to a JSONL file (the xlang tasks' preludes, pytest.ini, ...); None when absent."""
  path = os.path.join(os.path.dirname(os.fspath(jsonl_path)), "harness.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_tasks(path: str | os.PathLike, mode: str = MODE_CWE, strict: bool = True) -> list[Task]:
  """Tasks of a shared JSONL file; CodeGuard+'s `support_files.json` and CWEval's `harness.json` next to it are
  attached when present.

  A malformed line or record is a ValueError naming the line, or (`strict=False`) skipped: the trainer's data
  loader reports those lines itself.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"task file {str(path)!r} does not exist")
  support, pieces = support_files(path), harness(path)
  tasks = []
  for lineno, raw in jsonl_records(path):
    try:
      if isinstance(raw, ValueError):
        raise raw
      tasks.append(task_from_record(raw, support, mode, pieces))
    except (ValueError, KeyError) as e:
      if strict:
        raise ValueError(f"{path}:{lineno}: bad record ({e})") from e
  return tasks


def load_raw(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The raw JSON records of a shared JSONL file (references and variants included); a malformed line is a
  ValueError naming the file and line."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"JSONL file {os.fspath(path)!r} does not exist")
  out = []
  for lineno, raw in jsonl_records(path):
    if isinstance(raw, ValueError):
      raise ValueError(f"{os.fspath(path)}:{lineno}: malformed JSONL line ({raw})")
    out.append(raw)
  return out
