"""The pool's workers start from any caller (standard input, a script without a `__main__` guard), a pool whose
workers cannot start raises at once instead of labelling programs, and restarts leak no descriptors."""

import os
import subprocess
import sys
import time

import pytest

from tsp_jax.verify import pool as pool_lib
from tsp_jax.verify import types
from tsp_jax.verify.pool import VerifierPool, WorkerStartError

SHELL = "import subprocess\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Builds a pool at module level (no guard) and prints the verdicts of an insecure and a secure program.
UNGUARDED = """
from tsp_jax.verify import types
from tsp_jax.verify.pool import VerifierPool

SHELL = "import subprocess\\n\\ndef run(cmd):\\n    return subprocess.call(cmd, shell=True)\\n"
SAFE = "import subprocess\\n\\ndef run(args):\\n    return subprocess.call(['ls', '--', args])\\n"
task = types.Task(id="c", cwe="CWE-078")
with VerifierPool(num_workers=2, semgrep=False) as pool:
  verdicts = pool.verify([task, task], [SHELL, SAFE])
print("VERDICTS", [(v.status, v.secure) for v in verdicts])
"""
EXPECTED = "VERDICTS [('ok', False), ('ok', True)]"

# The same, with workers that die at start (as a spawn child of an unguarded script did before).
BROKEN_START = """
import sys, time
from tsp_jax.verify import pool as pool_lib
from tsp_jax.verify import worker

worker.command = lambda fd, settings: [sys.executable, "-c", "import sys; sys.exit('no worker here')"]
t0 = time.monotonic()
try:
  pool_lib.VerifierPool(num_workers=2, semgrep=False)
except pool_lib.WorkerStartError as e:
  print("RAISED after %.1f s:" % (time.monotonic() - t0), e)
"""


def _python(args: list[str], cwd: str, stdin: str | None = None) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env,
                        timeout=120, check=False)


def test_pool_started_from_standard_input(tmp_path):
  res = _python(["-"], str(tmp_path), UNGUARDED)
  assert EXPECTED in res.stdout, res.stderr


def test_pool_started_from_a_script_without_main_guard(tmp_path):
  script = tmp_path / "unguarded.py"
  script.write_text(UNGUARDED)
  res = _python([str(script)], str(tmp_path))
  assert EXPECTED in res.stdout, res.stderr


@pytest.mark.parametrize("how", ["stdin", "script"])
def test_workers_that_cannot_start_raise_at_once_naming_the_cause(tmp_path, how):
  script = tmp_path / "broken.py"
  script.write_text(BROKEN_START)
  res = _python(["-"], str(tmp_path), BROKEN_START) if how == "stdin" else _python([str(script)], str(tmp_path))
  assert "RAISED after" in res.stdout, res.stderr
  assert "3 verifier worker starts in a row failed" in res.stdout and "no worker here" in res.stdout
  assert float(res.stdout.split("RAISED after ")[1].split(" s")[0]) < 10


def test_worker_error_at_start_is_raised_with_its_traceback(monkeypatch):
  """A worker that runs but fails its start (here: settings it cannot read) reports why."""
  real = pool_lib.worker.command
  monkeypatch.setattr(pool_lib.worker, "command", lambda fd, s: real(fd, s)[:-1] + ['{"bogus": 1}'])
  with pytest.raises(WorkerStartError, match=r"(?s)failed at start:.*TypeError.*bogus"):
    VerifierPool(num_workers=1, semgrep=False)


def test_silent_worker_fails_the_start_deadline(monkeypatch):
  monkeypatch.setattr(pool_lib.worker, "command", lambda fd, s: [sys.executable, "-c", "import time; time.sleep(60)"])
  t0 = time.monotonic()
  with pytest.raises(WorkerStartError, match="did not report ready within 0.5 s"):
    VerifierPool(num_workers=1, semgrep=False, start_timeout_s=0.5, max_start_failures=2)
  assert time.monotonic() - t0 < 10


def test_a_worker_failing_at_a_restart_mid_batch_raises_and_gives_no_verdicts(monkeypatch):
  with VerifierPool(num_workers=1, semgrep=False, recycle_after=1) as pool:
    task = types.Task(id="c", cwe="CWE-078")
    assert len(pool.verify([task], ["x = 1\n"])) == 1
    monkeypatch.setattr(pool_lib.worker, "command", lambda fd, s: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(WorkerStartError, match=r"exit code 3"):
      pool.verify([task] * 3, ["x = 1\n"] * 3)  # the 2nd job needs a recycled worker, which cannot start
    with pytest.raises(RuntimeError, match="closed"):
      pool.verify([task], ["x = 1\n"])


def _open_fds() -> int:
  return len(os.listdir("/proc/self/fd"))


def test_no_descriptor_leak_over_1000_worker_restarts():
  task = types.Task(id="c", cwe="CWE-078")
  with VerifierPool(num_workers=2, semgrep=False, recycle_after=1) as pool:
    pool.verify([task] * 2, ["x = 1\n"] * 2)
    before = _open_fds()
    for k in range(1000):  # the restart path itself: kill a worker (mid-start) and start its replacement
      pool._replace(k % 2, "workers_killed")  # pylint: disable=protected-access
    assert _open_fds() == before
    # Whole restarts through the pool (recycled after each job, handshakes included), then the pool still works.
    v = pool.verify([task] * 20, [SHELL, "x = 1\n"] * 10)
    assert [x.secure for x in v] == [False, True] * 10
    assert pool.stats["workers_recycled"] >= 18
    assert _open_fds() == before
  assert _open_fds() < before
