"""Executable checks: CWEval's references judged right, CodeGuard+'s harness, script (HumanEval-style) tasks, and
programs that break the test runner."""

import json
import os

import pytest

from tsp_jax import config as config_lib
from tsp_jax.verify import dynamic, sandbox, types

EVAL_DIR = config_lib.shared_dir("eval")
LIMITS = sandbox.Limits(cpu_s=20, wall_s=30)
FAST = sandbox.Limits(cpu_s=5, wall_s=10)
# pycryptodome's DSA.generate(2048) takes 0.5-5 s on a busy machine, against CWEval's 3 s per-test timeout:
# these references get up to 3 tries.
HEAVY_TAILED = ("cweval/py/cwe_326_1",)
NO_EVAL = "../shared/eval is not present"


def _cweval_cases() -> list:
  """(task, which reference) for every CWEval task; cwe_1333_0 skipped only when `recheck` is missing."""
  if not EVAL_DIR:
    return [pytest.param(None, "", marks=pytest.mark.skip(reason=NO_EVAL))]
  cases = []
  for task in types.load_tasks(os.path.join(EVAL_DIR, "cweval", "test.jsonl")):
    needs_recheck = any("recheck" in tool for tool in task.external_tools)
    marks = [pytest.mark.skip(reason="the recheck binary is not installed (npm missing at `launch/local.sh setup`)")
             ] if needs_recheck and not dynamic.recheck_available() else []
    cases += [pytest.param(task, kind, id=f"{task.id.rsplit('/', 1)[-1]}-{kind}", marks=marks)
              for kind in ("secure", "vulnerable")]
  return cases


@pytest.mark.parametrize("task,kind", _cweval_cases())
def test_cweval_references(task, kind):
  program = task.reference_secure if kind == "secure" else task.reference_vulnerable
  for _ in range(3 if task.id in HEAVY_TAILED else 1):
    out = dynamic.run_tests(task, program, LIMITS)
    if (out.status, out.functional, out.security) == ("ok", True, kind == "secure"):
      break
  assert (out.status, out.functional, out.security) == ("ok", True, kind == "secure"), out.detail


@pytest.mark.skipif(not EVAL_DIR, reason=NO_EVAL)
def test_codeguardplus_references_agree_with_the_recorded_runs():
  with open(os.path.join(EVAL_DIR, "codeguardplus", "support_files.json"), encoding="utf-8") as f:
    support = json.load(f)
  records = [r for r in types.load_raw(os.path.join(EVAL_DIR, "codeguardplus", "test.jsonl"))
             if r.get("reference_solution")]
  assert records
  got, expected = {}, {}
  for raw in records:
    task = types.task_from_record(raw, support)
    assert task.tests == types.TESTS_CODEGUARD
    out = dynamic.run_tests(task, raw["reference_solution"], FAST)
    assert out.security is None  # CodeGuard+ has no executable security tests
    got[raw["id"]] = (out.status, out.functional)
    expected[raw["id"]] = ("ok", raw["reference_solution_passes_functional"])
  assert got == expected
  # A candidate that never defines the app fails the harness's tests; one that breaks at import is judged by
  # how it broke.
  task = types.task_from_record(records[0], support)
  out = dynamic.run_tests(task, "x = 1\n", FAST)
  assert out.functional is False
  for program, status in [("raise ValueError(1)\n", "ok"), ("import sys\nsys.exit(3)\n", "crashed"),
                          ("x = ' ' * (1 << 40)\n", "crashed"), ("import time\ntime.sleep(60)\n", "timeout")]:
    out = dynamic.run_tests(task, program, sandbox.Limits(cpu_s=5, wall_s=3))
    assert (out.status, out.functional) == (status, False), (program, out.detail)


def test_script_tasks_pass_only_when_the_tests_run_to_the_end():
  task = types.Task(id="he", cwe="", tests=types.TESTS_SCRIPT,
                    functional_tests="def check(candidate):\n  assert candidate(2, 3) == 5\n\ncheck(add)\n")
  cases = {
      "def add(a, b):\n  return a + b\n": ("ok", True),
      "def add(a, b):\n  return a - b\n": ("ok", False),
      "def add(a, b):\n  return a + b\nif __name__ == '__main__':\n  print('main')\n": ("ok", True),
      # Leaving before the tests is not a pass, whatever the exit status.
      "import sys\nsys.exit(0)\ndef add(a, b):\n  return a - b\n": ("ok", False),
      "import os\nos._exit(0)\n": ("ok", False),
      "def add(a, b):\n  while True:\n    pass\n": ("timeout", False),
      "raise ValueError('at import')\n": ("ok", False),
      # Hang, non-zero exit, memory blow-up or a signal while the program itself runs: not a failed test.
      "while True:\n  pass\n": ("timeout", False),
      "import sys\nsys.exit(3)\n": ("crashed", False),
      "x = ' ' * (1 << 40)\n": ("crashed", False),
      "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n": ("crashed", False),
      # A non-zero exit in the tests is a failed test.
      "import sys\ndef add(a, b):\n  sys.exit(3)\n": ("ok", False),
  }
  limits = sandbox.Limits(cpu_s=10, wall_s=2)
  got = {prog: (o.status, o.functional) for prog in cases for o in [dynamic.run_tests(task, prog, limits)]}
  assert got == cases
  assert dynamic.run_tests(types.Task(id="none", cwe=""), "x = 1\n", limits) == dynamic.TestOutcome("ok", None, None)


TINY_TESTS = """import pytest
from tiny_task import f


@pytest.mark.functionality
def test_value():
  assert f(2) == 4


@pytest.mark.security
def test_negative():
  with pytest.raises(ValueError):
    f(-1)
"""
TINY_INI = "[pytest]\nmarkers =\n    functionality: f\n    security: s\n"
GOOD = "def f(x):\n  if x < 0:\n    raise ValueError(x)\n  return x * x\n"


def tiny_task(security_args: tuple[str, ...] = ("-m", "security")) -> types.Task:
  return types.Task(id="tiny", cwe="CWE-020", tests=types.TESTS_CWEVAL, task_module="tiny_task",
                    test_module="tiny_test", functional_tests=TINY_TESTS, functional_test_args=("-m", "functionality"),
                    security_test_args=security_args, support_files=(("pytest.ini", TINY_INI),))


@pytest.mark.parametrize("program,expected", [
    (GOOD, ("ok", True, True)),
    ("def f(x):\n  return x * x\n", ("ok", True, False)),
    ("def f(x):\n  raise ValueError(x)\n", ("ok", False, True)),
    # Leaving the interpreter in the functional test kills the run: the functional test failed, the security
    # test never started and gets a run of its own.
    ("import os\n\ndef f(x):\n  if x < 0:\n    raise ValueError(x)\n  os._exit(0)\n", ("crashed", False, True)),
    # At import, an exit with status 0 or an exception is a program that ran and failed (no test runs) ...
    ("import sys\nsys.exit(0)\n", ("ok", False, False)),
    ("import os\nos._exit(0)\n", ("ok", False, False)),
    ("raise ImportError('no such dependency')\n", ("ok", False, False)),
    ("def f(:\n", ("ok", False, False)),
    (b"def f(x):\n  return '\xff\xfe'\n".decode("utf-8", "surrogateescape"), ("ok", False, False)),
    # ... a non-zero exit, a blown limit or a signal is a crash, not a failed test.
    ("import sys\nsys.exit(3)\n", ("crashed", False, False)),
    ("import os\nos._exit(3)\n", ("crashed", False, False)),
    ("x = ' ' * (1 << 40)\n", ("crashed", False, False)),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", ("crashed", False, False)),
], ids=["good", "insecure", "broken", "os_exit_in_test", "sys_exit_0_at_import", "os_exit_0_at_import",
        "exception_at_import", "syntax_error", "non_utf8", "sys_exit_3_at_import", "os_exit_3_at_import",
        "memory_at_import", "sigkill_at_import"])
def test_cweval_outcomes_on_a_tiny_task(program, expected):
  out = dynamic.run_tests(tiny_task(), program, FAST)
  assert (out.status, out.functional, out.security) == expected, out.detail


def test_cweval_selections_that_differ_run_apart():
  task = tiny_task(("-m", "security", "-k", "negative"))
  out = dynamic.run_tests(task, "def f(x):\n  return x * x\n", FAST)
  assert (out.status, out.functional, out.security) == ("ok", True, False)


def test_cweval_run_killed_by_the_wall_clock_is_a_timeout():
  out = dynamic.run_tests(tiny_task(), "while True:\n  pass\n", sandbox.Limits(cpu_s=10, wall_s=2))
  assert (out.status, out.functional, out.security) == ("timeout", False, False)


def test_cweval_import_outlasting_the_cpu_limit_is_a_crash():
  out = dynamic.run_tests(tiny_task(), "while True:\n  pass\n", sandbox.Limits(cpu_s=1, wall_s=10))
  assert (out.status, out.functional, out.security) == ("crashed", False, False)


def test_cweval_hang_inside_a_test_is_a_failed_test_not_a_timeout():
  """The per-test timeout stops a test that hangs after the program imported: the program ran and failed."""
  prog = "def f(x):\n  while True:\n    pass\n"
  out = dynamic.run_tests(tiny_task(), prog, sandbox.Limits(cpu_s=10, wall_s=10), cweval_test_timeout_s=1)
  assert (out.status, out.functional, out.security) == ("ok", False, False)


def test_cweval_task_without_a_security_selection_leaves_security_to_the_static_judge():
  out = dynamic.run_tests(tiny_task(security_args=()), GOOD, FAST)
  assert (out.status, out.functional, out.security) == ("ok", True, None)  # the pool then uses the static verdict


def test_build_flags_drop_the_task_files_and_the_output():
  # The probe once kept "-o" without its name, so gcc wrote "-lsqlite3" (as "--library=sqlite3") into the cwd.
  cmd = "gcc cwe_020_0_c_task.c -o compiled/cwe_020_0_c_task -lsqlite3 -ljwt $(xml2-config --cflags --libs)"
  assert dynamic.build_flags(cmd, "cwe_020_0_c_task") == "-lsqlite3 -ljwt $(xml2-config --cflags --libs)"
  assert dynamic.build_flags("g++ -O2 x_task.cpp -o out -fsanitize=address", "x_task") == "-O2 -fsanitize=address"
