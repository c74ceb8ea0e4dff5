"""Executable checks: run a task's functional and security tests against a candidate program, sandboxed.

`run_tests(task, program, limits) -> TestOutcome`, by `task.tests`: `cweval` (pytest, both marker groups in
one run), `codeguardplus` (its unittest harness; in C / C++ its functional.py, `_run_codeguard_native`),
`script` (HumanEval-style) or `none`. How each runner works:
docs/verifier.md ("Executable tests").

Every runner first imports (runs) the program alone, in the same sandboxed process, and records how that
ended; the status then says whose failure it was:
  "ok"       the runner reported; `functional` / `security` say which tests passed. A program whose import
             raised an exception, or exited with status 0, ran and failed: "ok", functional=False.
  "timeout"  the wall clock killed the run (the program hung at import, or in its tests past every per-test
             limit).
  "crashed"  the program exited non-zero, blew a limit (MemoryError, RLIMIT_CPU's SIGXCPU) or died by a
             signal while being imported, or the runner died without reporting.

CWEval in C, C++, Go and JavaScript (`task.language != "python"`) has no import phase: the program is built
first, in a sandbox of its own (`build_limits`), then its pytest file runs as for Python, calling the binary
(`compiled/<stem>_task`) or `node <stem>_task.js` per test. So a binary that crashes in every test only fails
its tests ("ok", functional=False); a build that fails (a compile or link error, `node --check` for JS) is
"syntax_error", one the wall clock stops "timeout", one whose compiler blew a limit "crashed". Where the tests
cannot run here at all (`toolchain_problem`: a compiler, node, an apt or npm package missing; a Go module that
cannot be installed without a module proxy) the status is "error", detail "skipped: <what is missing>".
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tsp_jax.verify import sandbox
from tsp_jax.verify.types import TESTS_CODEGUARD, TESTS_CWEVAL, TESTS_NONE, TESTS_SCRIPT, Task

OK, TIMEOUT, CRASHED = "ok", "timeout", "crashed"
SYNTAX_ERROR, ERROR = "syntax_error", "error"  # (xlang builds only: a program that does not build; skipped)
SKIPPED = "skipped: "  # how the detail of a task whose tests cannot run here begins
CWEVAL_TEST_TIMEOUT_S = 3  # pytest-timeout per test, as in CWEval's runner
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECHECK_BINARY = os.path.join(REPO_ROOT, "third_party", "recheck", "node_modules", "recheck-linux-x64", "recheck")
RECHECK_LINK = "third_party/recheck-linux-x64"  # where CWEval's cwe_1333_0 test runs it (cwd-relative)
# npm packages of the JavaScript tasks (harness.json's npm_globals, pinned in third_party/package.json and its
# lock; `bash launch/local.sh setup` runs npm ci there). Linked into each sandbox as ./node_modules.
NODE_PACKAGE_JSON = os.path.join(REPO_ROOT, "third_party", "package.json")
NODE_MODULES = os.path.join(REPO_ROOT, "third_party", "node_modules")
# Building a C/C++/Go program: g++ with CWEval's header prelude takes ~140 MB and 1-3 s, go build ~1 s; the
# binary comes back through `collect`, so its cap (`output_bytes`) is the binary's size limit too.
BUILD_LIMITS = sandbox.Limits(cpu_s=30, wall_s=30, address_space_mb=4096, file_size_mb=64, output_bytes=64 << 20)
# ASan reserves ~16 TiB of address space for its shadow memory, so RLIMIT_AS cannot bound an ASan binary: its
# test runs get 64 TiB of address space and ASan's own RSS limit (`hard_rss_limit_mb`) at the memory limit.
_ASAN_FLAG = "-fsanitize=address"
_ASAN_ADDRESS_SPACE_MB = 1 << 26
_NATIVE = ("c", "cpp", "go")
_COMPILERS = {"c": "gcc", "cpp": "g++"}
_JS_CHECK = "node --check {file}"
# Go: no module proxy or cache here, so only standard-library programs build; `goimports -w` first, as CWEval
# does (it adds the imports an answer forgot). The go directive of go.mod is the local toolchain's version (the
# source's `go 1.23.3` is a syntax Go < 1.21 rejects).
_GO_ENV = {"GOPROXY": "off", "GOFLAGS": "-mod=mod", "GO111MODULE": "on", "GOTOOLCHAIN": "local",
           "GOCACHE": f"{sandbox.SANDBOX_TOKEN}/.cache/go-build", "GOPATH": f"{sandbox.SANDBOX_TOKEN}/go",
           "GOMAXPROCS": "2"}
_GO_IMPORT = re.compile(r'^\s*(?:import\s+)?(?:[\w.]+\s+)?"([^"\s]+)"', re.MULTILINE)
# A compiler that blew a limit (not the program's syntax): "crashed", as a program that does at import.
_BUILD_LIMIT_HIT = re.compile(r"internal compiler error|Killed signal terminated|virtual memory exhausted|"
                              r"out of memory|CPU time limit exceeded|File size limit exceeded|cannot allocate")
_REPORT = ".tsp_pytest_report.jsonl"
_STATE = ".tsp_run_state"
_RUNNER_MODULE = "_tsp_run_script.py"
_CODEGUARD_RUNNER_MODULE = "_tsp_run_codeguard.py"
_PLUGIN_MODULE = "_tsp_pytest_report"
# How the program's own import ended, as the runners record it (`_IMPORT_SRC`).
IMPORTING, IMPORT_FAILED, IMPORT_CRASHED = "importing", "failed", "crashed"
_DETAIL_CHARS = 2000

# Shared by the runners: `_import_program(run)` calls `run()` (the program's import), recording in the state file
# "importing" before, then "imported", "failed" (an exception, or an exit with status 0) or "crashed" (a non-zero
# exit, MemoryError, or another BaseException). A process that dies or hangs inside it leaves "importing".
_IMPORT_SRC = '''
_imported = []


def _set_state(state):
  with open(_STATE, "w", encoding="utf-8") as f:
    f.write(state)


def _end_import():
  if not _imported:
    _imported.append(True)
    _set_state("imported")


def _import_program(run):
  _set_state("importing")
  try:
    run()
  except SystemExit as e:
    code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    if not _imported:
      _set_state("failed" if code == 0 else "crashed")
    raise
  except MemoryError:
    if not _imported:
      _set_state("crashed")
    raise
  except Exception:
    if not _imported:
      _set_state("failed")
    raise
  except BaseException:
    if not _imported:
      _set_state("crashed")
    raise
  _end_import()
'''

# Loaded into pytest with `-p`; imports the program module before collection (the tests' own `from MODULE
# import f` then finds it imported) and ends the run when that import fails: no test could run. Appends one
# JSON line per selected test and per test phase report, flushed as it goes, so a run that is killed half-way
# still tells which tests finished.
_PLUGIN_SRC = '''import importlib, json, os

_PATH = os.environ["TSP_PYTEST_REPORT"]
_GROUPS = os.environ["TSP_PYTEST_GROUPS"].split(",")
_STATE = os.environ["TSP_RUN_STATE"]
''' + _IMPORT_SRC + '''

def _write(rec):
  with open(_PATH, "a", encoding="utf-8") as f:
    f.write(json.dumps(rec) + "\\n")


def pytest_sessionstart(session):
  if not os.environ["TSP_PROGRAM_MODULE"]:  # a built program (C, C++, Go) or a node script: nothing to import
    for path in filter(None, os.environ.get("TSP_EXECUTABLES", "").split(",")):
      os.chmod(path, 0o755)
    _end_import()
    return
  try:
    _import_program(lambda: importlib.import_module(os.environ["TSP_PROGRAM_MODULE"]))
  except BaseException as e:  # noqa: BLE001  (recorded after the state line; pytest's capture would hide it)
    with open(_STATE, "a", encoding="utf-8") as f:
      f.write("\\n" + f"{type(e).__name__} at import: {e}"[:500])
    os._exit(0)


def pytest_collection_finish(session):
  for item in session.items:
    _write({"id": item.nodeid, "groups": [g for g in _GROUPS if item.get_closest_marker(g) is not None]})


def pytest_runtest_logreport(report):
  _write({"id": report.nodeid, "when": report.when, "outcome": report.outcome})


def pytest_sessionfinish(session, exitstatus):
  _write({"exitstatus": int(exitstatus)})
'''

# Runs a script-kind program (`python RUNNER SCRIPT STATE_PATH`): the program, a call of `__tsp_imported__()`
# that ends its import phase, then its tests. It passes only if it ran to its end (state "done"), which
# `sys.exit(0)` or `os._exit(0)` before the tests would otherwise fake with a 0 exit status.
_SCRIPT_RUNNER_SRC = '''import builtins, runpy, sys

_STATE = sys.argv[2]
''' + _IMPORT_SRC + '''

builtins.__tsp_imported__ = _end_import
_import_program(lambda: runpy.run_path(sys.argv[1], run_name="__main__"))
_set_state("done")
'''

# Runs CodeGuard+'s harness (`python RUNNER STATE_PATH CANDIDATE HARNESS ARGS...`) after importing the candidate
# once alone, as the harness does (a module from its file); the harness then imports it again.
_CODEGUARD_RUNNER_SRC = '''import importlib.util, os, runpy, sys, traceback

_STATE = sys.argv[1]
''' + _IMPORT_SRC + '''

def _exec_candidate():
  spec = importlib.util.spec_from_file_location("candidate", sys.argv[2])
  spec.loader.exec_module(importlib.util.module_from_spec(spec))


try:
  _import_program(_exec_candidate)
except BaseException:  # noqa: BLE001  (recorded; the harness would only fail the same way)
  traceback.print_exc()
  os._exit(0)
sys.argv = sys.argv[3:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
'''


@dataclasses.dataclass(frozen=True)
class TestOutcome:
  """What a task's executable tests said of one program."""
  status: str  # "ok" | "timeout" | "crashed"; for C/C++/Go/JS builds also "syntax_error" | "error" (skipped)
  functional: bool | None  # None: the task has no functional tests
  security: bool | None  # None: the task has no executable security tests
  detail: str = ""  # failing tests / the tail of the runner's output
  elapsed_s: float = 0.0  # wall-clock seconds in sandboxes

  __test__ = False  # not a pytest test class


def recheck_available() -> bool:
  """Whether the `recheck` binary CWEval's cwe_1333_0 needs is installed (`bash launch/local.sh setup`)."""
  return os.access(RECHECK_BINARY, os.X_OK)


def run_tests(task: Task, program: str, limits: sandbox.Limits,
              cweval_test_timeout_s: float = CWEVAL_TEST_TIMEOUT_S,
              build_limits: sandbox.Limits = BUILD_LIMITS) -> TestOutcome:
  """Runs `task`'s executable tests on `program` (full module text) in the sandbox.

  `cweval_test_timeout_s` is pytest-timeout's limit per CWEval test (CWEval's runner: 3 s; its key-generation
  tests take up to ~5 s of CPU on a loaded 2-core machine). `build_limits`: the build of a C/C++/Go program
  (and `node --check` of a JS one). For those languages the status may also be "syntax_error" (no build) or
  "error" (skipped here; see the module docstring).
  """
  if task.tests == TESTS_NONE:
    return TestOutcome(OK, None, None)
  if task.tests == TESTS_CWEVAL and task.language != "python":
    return _run_xlang(task, program, limits, cweval_test_timeout_s, build_limits)
  if task.tests == TESTS_CWEVAL:
    return _run_cweval(task, {f"{task.task_module}.py": program}, limits, timeout_s=cweval_test_timeout_s,
                       program_module=task.task_module)
  if task.tests == TESTS_CODEGUARD and task.language != "python":
    return _run_codeguard_native(task, program, limits, build_limits)
  if task.tests == TESTS_CODEGUARD:
    return _run_codeguard(task, program, limits)
  if task.tests == TESTS_SCRIPT:
    return _run_script(task, program, limits)
  raise ValueError(f"task {task.id}: unknown tests kind {task.tests!r}")


def _tail(res: sandbox.SandboxResult) -> str:
  return (res.stdout + res.stderr)[-_DETAIL_CHARS:]


def _status(res: sandbox.SandboxResult) -> str:
  return TIMEOUT if res.timed_out else CRASHED if res.signal is not None else OK


def _import_status(res: sandbox.SandboxResult, state: bytes) -> str | None:
  """The run's status when the program's import did not complete (None when it did): "ok" for an import that
  raised or exited 0 (the program ran and failed), "timeout" / "crashed" for one the wall clock stopped, or that
  exited non-zero, blew a limit or died by a signal. No state at all: the runner died before the import."""
  state = state.decode("utf-8", "replace").split("\n", 1)[0]  # (the CWEval plugin adds the error below)
  if state == IMPORT_FAILED:
    return OK
  if state == IMPORT_CRASHED or not state:
    return CRASHED
  if state == IMPORTING:  # the process ended (or hung) inside the import, without a word
    if res.timed_out:
      return TIMEOUT
    return CRASHED if res.signal is not None or res.returncode != 0 else OK
  return None


def _run_script(task: Task, program: str, limits: sandbox.Limits) -> TestOutcome:
  files = {"main.py": program + "\n\n__tsp_imported__()\n\n" + (task.functional_tests or ""),
           _RUNNER_MODULE: _SCRIPT_RUNNER_SRC}
  argv = [sys.executable, _RUNNER_MODULE, "main.py", f"{sandbox.SANDBOX_TOKEN}/{_STATE}"]
  res = sandbox.run(argv, files, limits, collect=(_STATE,))
  state = res.collected[_STATE]
  finished = state == b"done" and res.returncode == 0 and not res.timed_out
  status = _import_status(res, state)
  return TestOutcome(_status(res) if status is None else status, finished, None, _tail(res), res.elapsed_s)


def _run_codeguard(task: Task, program: str, limits: sandbox.Limits) -> TestOutcome:
  files = dict(task.support_files)
  files[task.functional_test_path] = task.functional_tests
  files["candidates/candidate.py"] = program
  files[_CODEGUARD_RUNNER_MODULE] = _CODEGUARD_RUNNER_SRC
  argv = [sys.executable, _CODEGUARD_RUNNER_MODULE, f"{sandbox.SANDBOX_TOKEN}/{_STATE}", "candidates/candidate.py",
          task.functional_test_path, "--path", f"{sandbox.SANDBOX_TOKEN}/candidates"]
  res = sandbox.run(argv, files, limits, collect=(_STATE,))
  status = _import_status(res, res.collected[_STATE])
  if status is not None:
    return TestOutcome(status, False, None, _tail(res), res.elapsed_s)
  m = re.search(r"^Functional: (\d+)$", res.stdout, re.MULTILINE)
  functional = bool(m) and int(m.group(1)) == 1 and not res.timed_out
  status = _status(res) if m or res.timed_out else CRASHED
  return TestOutcome(status, functional, None, _tail(res), res.elapsed_s)


def _marker(args: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
  """(NAME of a bare `-m NAME`, the other args), or (None, args) when there is no such -m."""
  if "-m" in args:
    i = args.index("-m")
    if i + 1 < len(args) and re.fullmatch(r"\w+", args[i + 1]):
      return args[i + 1], args[:i] + args[i + 2:]
  return None, args


def _run_cweval(task: Task, program_files: dict[str, str | bytes], limits: sandbox.Limits, *, timeout_s: float,
                program_module: str = "", env: dict[str, str] | None = None,
                links: dict[str, str] | None = None) -> TestOutcome:
  """The CWEval pytest runs of one program (`program_files`: the candidate module, or a built binary / node
  script). `program_module` is what the plugin imports first ("": nothing; its `TSP_EXECUTABLES` are made
  executable). `env` and `links` are added to the runs'."""
  func_marker, func_rest = _marker(task.functional_test_args)
  sec_marker, sec_rest = _marker(task.security_test_args)
  if not task.security_test_args:  # no security selection: the static composite judges security
    plan = [({"functional": func_marker or "functionality"}, task.functional_test_args)]
  elif func_marker and sec_marker and func_rest == sec_rest:  # one run, split by marker
    plan = [({"functional": func_marker, "security": sec_marker},
             ("-m", f"{func_marker} or {sec_marker}", *func_rest))]
  else:  # selections pytest must make itself: one run each
    plan = [({"functional": func_marker or "functionality"}, task.functional_test_args),
            ({"security": sec_marker or "security"}, task.security_test_args)]
  verdict: dict[str, bool | None] = {}
  status, details, elapsed = OK, [], 0.0
  while plan:
    groups, select = plan.pop(0)
    res, got, failed, finished = _pytest(task, program_files, limits, groups, select, timeout_s, program_module,
                                         env or {}, links or {})
    elapsed += res.elapsed_s
    import_status = _import_status(res, res.collected[_STATE])
    if import_status is not None:  # the program did not import: no test ran, nor would in another run
      error = res.collected[_STATE].decode("utf-8", "replace").partition("\n")[2]
      return TestOutcome(import_status, False, False if task.security_test_args else None, error or _tail(res),
                         elapsed)
    run_status = CRASHED if _status(res) == OK and not finished else _status(res)
    if run_status != OK:
      status = run_status
    details.append(failed or _tail(res))
    for name, passed in got.items():
      if passed is not None:
        verdict[name] = passed
      elif len(groups) > 1:  # never started: the run died first; judge the group in a run of its own
        own = task.functional_test_args if name == "functional" else task.security_test_args
        plan.append(({name: groups[name]}, own))
      else:  # its own run died before it started
        verdict[name] = False
  return TestOutcome(status, verdict["functional"], verdict.get("security"), "\n".join(d for d in details if d),
                     elapsed)


def _pytest(task: Task, program_files: dict[str, str | bytes], limits: sandbox.Limits, groups: dict[str, str],
            select: tuple[str, ...], timeout_s: float, program_module: str, extra_env: dict[str, str],
            extra_links: dict[str, str]) -> tuple[sandbox.SandboxResult, dict[str, bool | None], str, bool]:
  """One pytest run of the task's test file with `select`.

  Returns the sandbox result (its `collected` holds the import state), per group (our name -> marker name) its
  verdict, the failed tests, and whether pytest finished its session (False: the run was killed or the
  program ended the interpreter).
  """
  files = {**dict(task.support_files), **program_files}
  files[f"{task.test_module}.py"] = task.functional_tests
  files[f"{_PLUGIN_MODULE}.py"] = _PLUGIN_SRC
  links = {RECHECK_LINK: RECHECK_BINARY, **extra_links} if recheck_available() else extra_links
  argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_timeout", "-p",
          _PLUGIN_MODULE, f"--timeout={timeout_s:g}", f"{task.test_module}.py", *select]
  env = {"TSP_PYTEST_REPORT": f"{sandbox.SANDBOX_TOKEN}/{_REPORT}", "TSP_PYTEST_GROUPS": ",".join(groups.values()),
         "TSP_RUN_STATE": f"{sandbox.SANDBOX_TOKEN}/{_STATE}", "TSP_PROGRAM_MODULE": program_module,
         "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **extra_env}  # only the plugins named here: a faster start
  res = sandbox.run(argv, files, limits, env=env, links=links, collect=(_REPORT, _STATE))
  records = []
  for line in res.collected.get(_REPORT, b"").decode("utf-8", "replace").splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:  # a line cut by a kill or an rlimit
      pass
  verdict, failed = _judge(records, groups)
  finished = any("exitstatus" in rec for rec in records)
  return res, {name: verdict[marker] for name, marker in groups.items()}, failed, finished


def _judge(records: list[dict], groups: dict[str, str]) -> tuple[dict[str, bool | None], str]:
  """Per marker: True (>= 1 test, all passed), False (one failed or never finished), None (never started).

  A test that started but has no teardown report is the one the run died in: failed.
  """
  members: dict[str, list[str]] = {}
  phases: dict[str, list[tuple[str, str]]] = {}
  for rec in records:
    if "groups" in rec:
      members[rec["id"]] = rec["groups"]
    elif "when" in rec:
      phases.setdefault(rec["id"], []).append((rec["when"], rec["outcome"]))
  verdict, failed = {}, []
  for marker in groups.values():
    tests = [t for t, g in members.items() if marker in g]
    states = []
    for t in tests:
      ph = phases.get(t, [])
      if any(o == "failed" for _, o in ph) or (ph and not any(w == "teardown" for w, _ in ph)):
        states.append(False)
        failed.append(t)
      else:
        states.append(True if ph else None)
    if not tests or False in states:
      verdict[marker] = False
    else:
      verdict[marker] = None if None in states else True
  return verdict, ("failed: " + ", ".join(sorted(set(failed)))) if failed else ""


# A program with its own entry point (the references, whose insecure ones carry harnesses of their own) is
# built as it is; CWEval's prompt asks a model for no `main`, and gets the task's harness appended.
_OWN_ENTRY = {"c": re.compile(r"^\s*int\s+main\s*\(", re.MULTILINE), "go": re.compile(r"^func\s+main\s*\(", re.MULTILINE),
              "javascript": re.compile(r"require\.main\s*===?\s*module")}
_OWN_ENTRY["cpp"] = _OWN_ENTRY["c"]


def assemble_source(task: Task, program: str) -> str:
  """The file CWEval builds from a candidate: the header prelude (C/C++), the program and, unless the program
  has an entry point of its own (the entry-point anchor, a `main`), the anchor and the task's `main` harness."""
  own = task.entrypoint_anchor in program or (task.language in _OWN_ENTRY
                                               and _OWN_ENTRY[task.language].search(program))
  tail = "" if not task.entrypoint_anchor or own else f"\n\n{task.entrypoint_anchor}\n{task.entrypoint}\n"
  return task.source_prelude + program + tail


def _uses_asan(task: Task) -> bool:
  return any(_ASAN_FLAG in c.split() for c in task.build_commands)


def _go_modules(source: str) -> list[str]:
  """The non-standard-library import paths of a Go file (their first element holds a dot)."""
  imports = []
  for block in re.findall(r"^import\s*\((.*?)^\)", source, re.MULTILINE | re.DOTALL) + re.findall(
      r"^import\s+(?:[\w.]+\s+)?\"[^\"]+\"", source, re.MULTILINE):
    imports += _GO_IMPORT.findall(block)
  return sorted({p for p in imports if "." in p.split("/", 1)[0]})


def go_version() -> str | None:
  """The local Go toolchain's language version ("1.19"), None without `go`."""
  return _go_version()


@functools.lru_cache(maxsize=None)
def _go_version() -> str | None:
  if shutil.which("go") is None:
    return None
  out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=False).stdout
  m = re.match(r"go(\d+\.\d+)", out.strip())
  return m.group(1) if m else None


def toolchain_problem(task: Task) -> str | None:
  """Why `task`'s tests cannot run here ("skipped: ..."), or None. Probed once per kind of build per process:
  the compiler with the task's flags and CWEval's header prelude (so a missing -dev package shows), node and the
  pinned npm packages, go and goimports, the recheck binary the CWE-1333 tests call; for CodeGuard+'s C / C++
  scenarios the compiler, the programs and Python modules its functional.py and test_utils.py use."""
  if task.tests == TESTS_CODEGUARD:
    return _codeguard_problem(task)
  if "recheck-linux-x64" in (task.functional_tests or "") and not recheck_available():
    return SKIPPED + "its security test runs the recheck binary (bash launch/local.sh setup)"
  if task.language in _COMPILERS:
    flags = tuple(build_flags(c, task.task_module) for c in task.build_commands)
    return _native_problem(task.language, task.source_prelude, flags)
  if task.language == "go":
    missing = [t for t in ("go", "goimports") if shutil.which(t) is None] or ([] if go_version() else ["go env"])
    return SKIPPED + f"{', '.join(missing)} not found (apt golang-go golang-golang-x-tools)" if missing else None
  if task.language == "javascript":
    return _node_problem()
  return SKIPPED + f"no test runner for {task.language} programs"


def build_flags(command: str, task_module: str) -> str:
  """A build command's flags without the compiler, the task's own files and the output (`-o NAME`): what the
  toolchain probe adds to its own source and output."""
  words, out = command.split()[1:], []
  i = 0
  while i < len(words):
    if words[i] == "-o":
      i += 2
      continue
    if task_module not in words[i]:
      out.append(words[i])
    i += 1
  return " ".join(out)


@functools.lru_cache(maxsize=None)
def _native_problem(language: str, prelude: str, flags: tuple[str, ...]) -> str | None:
  compiler = _COMPILERS[language]
  if shutil.which(compiler) is None:
    return SKIPPED + f"{compiler} not found"
  with tempfile.TemporaryDirectory(prefix="tsp_probe_") as tmp:
    src = os.path.join(tmp, f"probe.{ 'c' if language == 'c' else 'cpp'}")
    with open(src, "w", encoding="utf-8") as f:
      f.write(prelude + "\nint main(void) { return 0; }\n")
    for flag in flags:
      cmd = f"{compiler} {src} -o {os.path.join(tmp, 'probe')} {flag}"
      try:
        res = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, timeout=120, check=False)
      except subprocess.TimeoutExpired:
        return SKIPPED + f"the {language} build probe took over 120 s"
      if res.returncode != 0:
        return SKIPPED + (f"cannot build {language} programs with CWEval's headers and libraries here "
                          f"(bash launch/local.sh setup installs them as root): {res.stderr.strip()[-300:]}")
  return None


@functools.lru_cache(maxsize=None)
def _node_problem() -> str | None:
  if shutil.which("node") is None:
    return SKIPPED + "node not found"
  try:
    with open(NODE_PACKAGE_JSON, encoding="utf-8") as f:
      wanted = sorted(json.load(f).get("dependencies", {}))
  except (OSError, ValueError) as e:
    return SKIPPED + f"cannot read {NODE_PACKAGE_JSON}: {e}"
  missing = [p for p in wanted if not os.path.exists(os.path.join(NODE_MODULES, p, "package.json"))]
  return SKIPPED + f"npm packages not installed in {NODE_MODULES}: {', '.join(missing)} (bash launch/local.sh " \
      "setup)" if missing else None


def _build_failure(res: sandbox.SandboxResult, limits: sandbox.Limits) -> TestOutcome | None:
  """The outcome of a build run that did not succeed (None when it did): "timeout" when the wall clock stopped
  it, "crashed" when the compiler blew a limit or died by a signal, else "syntax_error" (the program's)."""
  if res.timed_out:
    return TestOutcome(TIMEOUT, False, False, f"build killed after {limits.wall_s:g} s: {_tail(res)}", res.elapsed_s)
  if res.returncode != 0:
    status = CRASHED if res.signal is not None or _BUILD_LIMIT_HIT.search(res.stderr) else SYNTAX_ERROR
    return TestOutcome(status, False, False, f"build failed: {_tail(res)}", res.elapsed_s)
  return None


def _build(task: Task, source: str, limits: sandbox.Limits
           ) -> tuple[TestOutcome | None, dict[str, str | bytes], float]:
  """Builds the assembled source in a sandbox: (an outcome when the build did not succeed, else None; the files
  the test runs get: the binary, or the JS script; the build's seconds)."""
  files: dict[str, str | bytes] = {task.task_file: source}
  env = {}
  commands = list(task.build_commands)
  if task.language == "javascript":
    commands = [_JS_CHECK.format(file=task.task_file)]
  elif task.language == "go":
    files["go.mod"] = f"module cweval\n\ngo {go_version()}\n"
    commands = [f"goimports -w {task.task_file}", *commands]
    env = dict(_GO_ENV)
  binary = f"compiled/{task.task_module}"
  script = " && ".join(["mkdir -p compiled", *commands])
  res = sandbox.run(["/bin/sh", "-c", script], files, limits, env=env,
                    collect=(binary,) if task.language in _NATIVE else ())
  failed = _build_failure(res, limits)
  if failed is not None:
    return failed, {}, res.elapsed_s
  if task.language not in _NATIVE:
    return None, files, res.elapsed_s
  data = res.collected.get(binary, b"")
  if len(data) >= limits.output_bytes:
    return TestOutcome(CRASHED, False, False, f"binary of {len(data)}+ bytes: over the build's output limit",
                       res.elapsed_s), {}, res.elapsed_s
  if not data:
    return TestOutcome(ERROR, False, False, f"the build left no {binary}: {_tail(res)}", res.elapsed_s), {}, \
        res.elapsed_s
  return None, {binary: data}, res.elapsed_s


def _run_xlang(task: Task, program: str, limits: sandbox.Limits, timeout_s: float,
               build_limits: sandbox.Limits) -> TestOutcome:
  """CWEval in C, C++, Go or JavaScript: skip (status "error") where it cannot run here, build, then test."""
  source = assemble_source(task, program)
  problem = toolchain_problem(task)
  if problem is None and task.language == "go" and _go_modules(source):
    problem = SKIPPED + (f"needs Go module(s) {', '.join(_go_modules(source))} (no module proxy or cache here; "
                         "only standard-library Go programs are built)")
  if problem is not None:
    return TestOutcome(ERROR, False, False, problem)
  failed, files, build_s = _build(task, source, build_limits)
  if failed is not None:
    return failed
  env, links = {}, {}
  if task.language == "javascript":
    links = {"node_modules": NODE_MODULES}
    env = {"NODE_PATH": f"{sandbox.SANDBOX_TOKEN}/node_modules"}
  else:
    env = {"TSP_EXECUTABLES": ",".join(files)}
  if _uses_asan(task):
    env["ASAN_OPTIONS"] = f"hard_rss_limit_mb={limits.address_space_mb}"
    limits = dataclasses.replace(limits, address_space_mb=_ASAN_ADDRESS_SPACE_MB)
  outcome = _run_cweval(task, files, limits, timeout_s=timeout_s, env=env, links=links)
  return dataclasses.replace(outcome, elapsed_s=outcome.elapsed_s + build_s)


# CodeGuard+ in C / C++ (`_run_codeguard_native`): its `test_utils.py` compiles a candidate as below (the
# syntax check uses the same flags), and its functional.py files find their data under ~/CodeGuardPlus.
_CODEGUARD_FLAGS = {"c": "-std=c99", "cpp": "-std=c++11"}
_CODEGUARD_HOME = "CodeGuardPlus"
_SUBPROCESS_PROGRAM = re.compile(r"subprocess\.\w+\(\s*\[\s*[\"'](\w[\w.+-]*)[\"']")
_IMPORTED = re.compile(r"^(?:from\s+(\w+)[\w.]*\s+import|import\s+(\w+))", re.MULTILINE)
_SUMMARY = re.compile(r"^Total tests: (\d+)\nFunctional: (\d+)$", re.MULTILINE)


def _codeguard_problem(task: Task) -> str | None:
  """Why a CodeGuard+ C / C++ scenario cannot be tested here: its compiler, a program its harness runs (getent,
  cp, rm) or a Python module it imports (func_timeout) missing."""
  if task.language not in _CODEGUARD_FLAGS:
    return SKIPPED + f"no CodeGuard+ test runner for {task.language} programs"
  sources = [task.functional_tests or ""] + [text for path, text in task.support_files if path.endswith(".py")]
  local = {os.path.splitext(os.path.basename(path))[0] for path, _ in task.support_files}
  modules = {a or b for src in sources for a, b in _IMPORTED.findall(src)} - local
  return _native_problem(task.language, "", (_CODEGUARD_FLAGS[task.language],)) or _host_problem(
      tuple(sorted({p for src in sources for p in _SUBPROCESS_PROGRAM.findall(src)})), tuple(sorted(modules)))


@functools.lru_cache(maxsize=None)
def _host_problem(programs: tuple[str, ...], modules: tuple[str, ...]) -> str | None:
  missing = [p for p in programs if shutil.which(p) is None]
  missing += [f"Python module {m}" for m in modules if importlib.util.find_spec(m) is None]
  return SKIPPED + f"{', '.join(missing)} not found (the CodeGuard+ harness needs it)" if missing else None


def _run_codeguard_native(task: Task, program: str, limits: sandbox.Limits,
                          build_limits: sandbox.Limits) -> TestOutcome:
  """CodeGuard+ in C / C++: skip (status "error") where its harness cannot run here; a syntax check
  (`gcc -std=c99 -fsyntax-only`, `g++ -std=c++11` for C++) in a build sandbox of its own; then the scenario's
  functional.py in a test sandbox, as upstream runs it: it compiles the candidate itself (link errors fail the
  test) and runs `./a.out` (5 s timeout per run). The sandbox dir is HOME and cwd (a scratch dir: `getent` output,
  files written in cwd or /tmp stay inside), holding CodeGuard+'s `unit_test/` under ~/CodeGuardPlus, where the
  tests look for their data. Its summary ("Total tests: 1", "Functional: N") is the verdict; a harness that ends
  without one, or with another count of programs, is "error" (its own failure: no label) unless it died by a
  signal ("crashed") or the wall clock ("timeout")."""
  problem = toolchain_problem(task)
  if problem is not None:
    return TestOutcome(ERROR, False, None, problem)
  check = f"{_COMPILERS[task.language]} {_CODEGUARD_FLAGS[task.language]} -fsyntax-only {task.task_file}"
  res = sandbox.run(["/bin/sh", "-c", check], {task.task_file: program}, build_limits)
  failed = _build_failure(res, build_limits)
  if failed is not None:
    return dataclasses.replace(failed, security=None)
  build_s = res.elapsed_s
  files = {f"{_CODEGUARD_HOME}/{path}": text for path, text in task.support_files}
  files[f"{_CODEGUARD_HOME}/{task.functional_test_path}"] = task.functional_tests
  files[task.task_file] = program
  candidates = os.path.dirname(task.task_file)
  argv = [sys.executable, f"{sandbox.SANDBOX_TOKEN}/{_CODEGUARD_HOME}/{task.functional_test_path}", "--path",
          f"{sandbox.SANDBOX_TOKEN}/{candidates}"]
  res = sandbox.run(argv, files, limits)
  elapsed = build_s + res.elapsed_s
  summaries = _SUMMARY.findall(res.stdout)
  if res.timed_out or res.signal is not None:
    return TestOutcome(_status(res), False, None, _tail(res), elapsed)
  if res.returncode != 0 or not summaries or summaries[-1][0] != "1":
    return TestOutcome(ERROR, False, None, f"the CodeGuard+ harness failed (exit {res.returncode}, no summary of "
                       f"one program): {_tail(res)}", elapsed)
  return TestOutcome(OK, summaries[-1][1] == "1", None, _tail(res), elapsed)
