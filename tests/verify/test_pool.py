"""The verifier pool: verdicts in order, static composite + oracle, tests in the sandbox, deadlines, crashes,
recycling, and hostile programs that must not hang, crash or corrupt it."""

import os
import signal
import threading
import time

import psutil
import pytest

from tsp_jax import pairs
from tsp_jax.sources import labels
from tsp_jax.verify import types
from tsp_jax.verify.pool import VerifierError, VerifierPool, WorkerResult, WorkerSettings, merge

SHELL = "import subprocess\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"
SAFE = "import subprocess\n\ndef run(args):\n    return subprocess.call(['ls', '--', args])\n"
TRAVERSAL = ("import os\nfrom flask import request, send_file\n\ndef get():\n"
             "    name = request.args.get('name')\n    return send_file(os.path.join('/srv/files', name))\n")

FAST = WorkerSettings(test_wall_s=5.0, test_cpu_s=5.0)


def script_task(check: str = "") -> types.Task:
  """A task whose 'functional test' is a script appended to the program (exit 0 = pass)."""
  return types.Task(id="script", cwe="CWE-078", tests=types.TESTS_SCRIPT, functional_tests=check or "pass\n")


@pytest.fixture(scope="module")
def pool():
  with VerifierPool(num_workers=2, semgrep=True, program_timeout_s=30.0, settings=FAST) as p:
    yield p


def test_verdicts_in_order_static_composite(pool):
  cmd = types.Task(id="cmd", cwe="CWE-078")
  path = types.Task(id="path", cwe="CWE-022")
  strict = types.Task(id="strict", cwe="CWE-022", mode=types.MODE_STRICT)
  tasks = [cmd, cmd, path, cmd, strict, path]
  programs = [SHELL, SAFE, TRAVERSAL, "def f(:\n", SHELL, "def f():\n    return 1\n"]
  v = pool.verify(tasks, programs)
  assert [x.status for x in v] == ["ok", "ok", "ok", "syntax_error", "ok", "ok"]
  assert [x.secure for x in v] == [False, True, False, False, False, True]
  # bandit's B602 at the call, located by line, column and character offset.
  b602 = [f for f in v[0].findings if f.test_id == "B602"]
  assert b602 and b602[0].cwe == "CWE-078" and b602[0].line == 4
  assert SHELL[v[0].first_finding_offset:].startswith("subprocess.call")
  # Path traversal is invisible to bandit: semgrep's rule pack catches it.
  assert all(f.tool == "semgrep" for i, f in enumerate(v[2].findings) if i in v[2].counted) and v[2].counted
  # A shell=True finding does not concern a CWE-022 task in CWE-aware mode, but does in strict mode.
  assert all(x.functional is None for x in v if x.status == "ok")


def test_cwe_aware_mode_ignores_unrelated_findings(pool):
  v = pool.verify([types.Task(id="p", cwe="CWE-022")], [SHELL])[0]
  assert v.findings and not v.counted and v.secure and v.static_secure


def test_patch_oracle_overrides_static_verdict(pool):
  prefix = "import sqlite3\n\ndef get(db, name):\n"
  task = types.Task(id="node", cwe="CWE-089", node_offset=len(prefix),
                    vulnerable_lines=("    return db.execute('SELECT * FROM t WHERE n = %s' % name)",),
                    fixed_lines=("    return db.execute('SELECT * FROM t WHERE n = ?', (name,))",))
  vuln = prefix + "  return db.execute('SELECT * FROM t WHERE n = %s'   %  name)\n"
  fixed = prefix + "    return db.execute('SELECT * FROM t WHERE n = ?', (name,))\n"
  other = prefix + "    return None\n"
  v = pool.verify([task] * 3, [vuln, fixed, other])
  assert (v[0].oracle, v[0].secure) == ("vulnerable", False)
  assert (v[1].oracle, v[1].secure) == ("secure", True)
  assert (v[2].oracle, v[2].secure) == (None, True)


def test_script_tests_run_in_the_sandbox(pool):
  prog = "def add(a, b):\n    return a + b\n"
  v = pool.verify([script_task("assert add(2, 3) == 5\n"), script_task("assert add(2, 3) == 6\n")], [prog, prog])
  assert [x.functional for x in v] == [True, False]
  assert all(x.status == "ok" for x in v)


def test_worker_killed_mid_job_gives_crashed_and_pool_recovers():
  with VerifierPool(num_workers=1, semgrep=False, settings=FAST) as p:
    pid = p.worker_pids[0]
    killer = threading.Timer(1.5, os.kill, (pid, signal.SIGKILL))
    killer.start()
    v = p.verify([script_task("import time\ntime.sleep(4)\n")], ["x = 1\n"])[0]
    killer.join()
    assert v.status == types.CRASHED and not v.secure
    assert p.stats["workers_crashed"] == 1 and p.worker_pids[0] != pid
    assert p.verify([types.Task(id="c", cwe="CWE-078")], [SHELL])[0].secure is False


def test_straggler_killed_at_program_deadline_with_its_process_tree():
  with VerifierPool(num_workers=1, semgrep=False, program_timeout_s=2.0,
                    settings=WorkerSettings(test_wall_s=60.0, test_cpu_s=60.0)) as p:
    t0 = time.monotonic()
    v = p.verify([script_task("import time\ntime.sleep(50)\n"), script_task()], ["x = 1\n", "y = 2\n"])
    assert time.monotonic() - t0 < 20
    assert v[0].status == types.TIMEOUT and v[1].status == types.OK and v[1].functional is True
    assert p.stats["workers_killed"] == 1
    time.sleep(0.5)
    me = psutil.Process()
    sleepers = [c for c in me.children(recursive=True) if "sleep" in " ".join(c.cmdline() or [])]
    assert not sleepers


def test_batch_deadline_marks_unstarted_programs_timeout():
  with VerifierPool(num_workers=1, semgrep=False, program_timeout_s=30.0, batch_timeout_s=3.0,
                    settings=WorkerSettings(test_wall_s=30.0, test_cpu_s=30.0)) as p:
    v = p.verify([script_task("import time\ntime.sleep(20)\n")] + [script_task()] * 3, ["x = 1\n"] * 4)
    assert all(x.status == types.TIMEOUT for x in v)


def test_workers_recycled_after_n_jobs():
  with VerifierPool(num_workers=2, semgrep=False, recycle_after=2) as p:
    task = types.Task(id="c", cwe="CWE-078")
    v = p.verify([task] * 9, [SHELL, SAFE] * 4 + [SHELL])
    assert [x.secure for x in v] == [False, True] * 4 + [False]
    assert p.stats["workers_recycled"] >= 2 and p.stats["jobs"] == 9


def _judgement(v: types.Verdict) -> tuple:
  return v.status, v.secure, v.functional, v.counted


def test_memo_judges_each_pair_once_and_never_keeps_undecided_verdicts():
  static, other = types.Task(id="c", cwe="CWE-078"), types.Task(id="d", cwe="CWE-078")
  programs = [SHELL, SAFE, SHELL, SAFE, "def f(:\n"]
  with VerifierPool(num_workers=1, semgrep=False) as p:
    want = [_judgement(v) for v in p.verify([static] * 5, programs)]
  with VerifierPool(num_workers=1, semgrep=False, memo_size=3, program_timeout_s=1.5,
                    settings=WorkerSettings(test_wall_s=30.0, test_cpu_s=30.0)) as p:
    assert [_judgement(v) for v in p.verify([static] * 5, programs)] == want  # repeats in a batch: judged once
    assert (p.stats["jobs"], p.stats["memo_hits"]) == (3, 2) and want[4][0] == types.SYNTAX_ERROR
    assert [_judgement(v) for v in p.verify([static, static, other], [SAFE, SHELL, SHELL])] == [want[1], want[0],
                                                                                             want[0]]
    assert (p.stats["jobs"], p.stats["memo_hits"]) == (4, 4)  # the same program for another task: judged anew
    # memo_size 3: (static, SAFE), (static, SHELL), (other, SHELL) were used last; the syntax error was evicted
    assert _judgement(p.verify([static], ["def f(:\n"])[0]) == want[4] and p.stats["jobs"] == 5
    hang = script_task("import time\ntime.sleep(50)\n")
    for _ in range(2):  # a timeout is no judgement of the program: it is run again
      assert p.verify([hang], ["x = 1\n"])[0].status == types.TIMEOUT
    assert p.stats["workers_killed"] == 2 and len(p._memo) == 3  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="memo_size"):
    VerifierPool(num_workers=1, semgrep=False, memo_size=-1)


def test_hostile_programs_then_the_pool_keeps_serving(tmp_path):
  canary = tmp_path / "canary.txt"
  canary.write_text("intact")
  hostile = {
      "infinite loop": ("while True:\n    pass\n", types.TIMEOUT),
      "fork bomb": ("import os\nwhile True:\n    os.fork()\n", None),
      "memory bomb": ("x = ' ' * (1 << 40)\n", types.CRASHED),
      "kill parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", None),
      "huge output": ("import sys\nsys.stdout.write('x' * (50 << 20))\n", types.OK),
      "delete outside": (f"import os\nos.remove({str(canary)!r})\n", types.OK),
      "exit in import": ("import sys\nsys.exit(3)\n", types.CRASHED),
      "non-utf8 output": ("import sys\nsys.stdout.buffer.write(bytes(range(256)))\n", types.OK),
      "10 MB program": ("x = 1\n" * ((10 << 20) // 6), types.CRASHED),
      "syntax error": ("def f(:\n", types.SYNTAX_ERROR),
  }
  with VerifierPool(num_workers=2, semgrep=False, program_timeout_s=30.0, settings=FAST) as p:
    names = list(hostile)
    v = p.verify([script_task()] * len(names), [hostile[n][0] for n in names])
    for name, verdict in zip(names, v):
      expected = hostile[name][1]
      if expected is not None:
        assert verdict.status == expected, (name, verdict)
      assert verdict.functional is not True or name in ("huge output", "non-utf8 output"), (name, verdict)
    assert canary.read_text() == "intact"
    after = p.verify([types.Task(id="c", cwe="CWE-078")] * 2, [SHELL, SAFE])
    assert [x.secure for x in after] == [False, True]


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_workers"):
    VerifierPool(num_workers=0, semgrep=False)
  with VerifierPool(num_workers=1, semgrep=False) as p:
    with pytest.raises(ValueError, match="2 tasks but 1 programs"):
      p.verify([types.Task(id="a", cwe="CWE-078")] * 2, ["x = 1\n"])
    assert p.verify([], []) == []


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
TINY = types.Task(id="tiny", cwe="CWE-020", tests=types.TESTS_CWEVAL, task_module="tiny_task", test_module="tiny_test",
                  functional_tests=TINY_TESTS, functional_test_args=("-m", "functionality"),
                  security_test_args=("-m", "security"),
                  support_files=(("pytest.ini", "[pytest]\nmarkers =\n    functionality: f\n    security: s\n"),))
HOSTILE_AT_IMPORT = {
    "hang": ("import time\ntime.sleep(600)\n", types.TIMEOUT),
    "memory": ("x = bytearray(1 << 40)\n", types.CRASHED),
    "exit 3": ("import sys\nsys.exit(3)\n", types.CRASHED),
    "sigkill": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", types.CRASHED),
}


def test_programs_that_hang_or_die_at_import_are_never_labelled_vulnerable():
  """Through the real pool and sandbox, for pytest (CWEval) and script tasks: such a program gets `timeout` /
  `crashed`, and the trainer's label (`verdict_label`) drops it; a program that imports and fails its security
  test is what `vulnerable` is for."""

  names = list(HOSTILE_AT_IMPORT)
  tasks = [TINY] * len(names) + [script_task()] * len(names) + [TINY]
  programs = [HOSTILE_AT_IMPORT[n][0] for n in names] * 2 + ["def f(x):\n  return x * x\n"]
  with VerifierPool(num_workers=2, semgrep=False, program_timeout_s=60.0,
                    settings=WorkerSettings(test_wall_s=4.0, test_cpu_s=10.0, test_memory_mb=1024)) as p:
    v = p.verify(tasks, programs)
  for name, verdict in zip(names * 2, v[:-1]):
    assert verdict.status == HOSTILE_AT_IMPORT[name][1], (name, verdict)
    assert labels.verdict_label(verdict) == pairs.DROP and not verdict.functional, (name, verdict)
  insecure = v[-1]  # imports, passes its functional test, fails its security test
  assert (insecure.status, insecure.functional, insecure.secure) == (types.OK, True, False)
  assert labels.verdict_label(insecure) == pairs.VULNERABLE


def test_a_failed_semgrep_run_gives_no_verdicts(tmp_path):
  """A judge that lost an analyzer must not label: a rule pack semgrep cannot load fails the batch."""
  (tmp_path / "broken.yaml").write_text(
      "rules:\n  - id: broken\n    languages: [python]\n    severity: ERROR\n    message: x\n    patterns:\n"
      "      - pattern: eval($X)\n      - metavariable-regex:\n          metavariable: $X\n          regex: '^[('\n")
  with VerifierPool(num_workers=1, semgrep=True, rules_dir=str(tmp_path), settings=FAST) as p:
    with pytest.raises(VerifierError, match="no verdicts"):
      p.verify([types.Task(id="s", cwe="CWE-078")], [SAFE])


def test_analyzer_failures_on_static_tasks_are_undecided():
  """On a task without tests only the analyzers run: a worker that hung or died there failed as a judge."""
  task = types.Task(id="s", cwe="CWE-078")
  for status in (types.TIMEOUT, types.CRASHED, types.ERROR):
    v = merge(task, SHELL, WorkerResult(status, detail="x"), [])
    assert v.status == types.ERROR and not v.secure
    assert labels.verdict_label(v) == pairs.DROP
  tested = script_task()  # with tests, a timeout is the program's: it stays a timeout
  assert merge(tested, SHELL, WorkerResult(types.TIMEOUT), []).status == types.TIMEOUT
  ok = merge(task, SHELL, WorkerResult(types.OK, functional=None), [])
  assert ok.status == types.OK and ok.secure  # no findings given


def test_other_languages_judged_by_the_host_analyzers(pool):
  """C and JavaScript programs: semgrep and flawfinder on the host, no Python parse or bandit in the workers."""
  c_task = types.Task(id="c", cwe="CWE-787", language="c")
  js_task = types.Task(id="js", cwe="CWE-078", language="javascript")
  unsafe_c = "#include <string.h>\nvoid set(char d[8], const char *s) { strcpy(d, s); }\n"
  safe_c = "#include <stdio.h>\nvoid set(char d[8], const char *s) { snprintf(d, 8, \"%s\", s); }\n"
  unsafe_js = "const cp = require('child_process');\nfunction ls(d) { return cp.execSync('ls ' + d); }\n"
  v = pool.verify([c_task, c_task, js_task], [unsafe_c, safe_c, unsafe_js])
  assert [x.status for x in v] == [types.OK] * 3
  assert [x.secure for x in v] == [False, True, False]
  assert {f.tool for f in v[0].findings} == {"flawfinder", "semgrep"}
  tested = types.Task(id="ct", cwe="CWE-787", language="c", tests=types.TESTS_SCRIPT, functional_tests="x")
  (untestable,) = pool.verify([tested], [safe_c])
  assert untestable.status == types.ERROR and "not supported" in untestable.detail


def test_other_languages_without_semgrep_are_undecided():
  with VerifierPool(num_workers=1, semgrep=False, settings=FAST) as p:
    (v,) = p.verify([types.Task(id="c", cwe="CWE-787", language="c")], ["void f(void) {}\n"])
  assert v.status == types.ERROR
