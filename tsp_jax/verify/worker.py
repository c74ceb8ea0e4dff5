"""A verifier worker process: `python -m tsp_jax.verify.worker FD SETTINGS_JSON`, started by `VerifierPool`.

Decision: workers are fresh interpreters started with `subprocess.Popen([sys.executable, "-m",
"tsp_jax.verify.worker", ...])`, not `multiprocessing` children. A `spawn` child re-imports the caller's
`__main__` module, which fails for code read from standard input (`python - <<EOF`), notebooks and scripts
without an `if __name__ == "__main__":` guard (the script builds a pool again, and the child dies at start);
`fork` would copy a host process that may hold jax, threads and accelerator handles. This entry point imports
only `tsp_jax.verify`, whatever the caller is.

Protocol, over one end of a `socket.socketpair` (file descriptor FD, pickled messages through
`multiprocessing.connection.Connection`):
  worker -> host, once: ("ready", pid) after the worker imported bandit, the sandbox and the test runners,
    or ("error", traceback) when it could not (the host raises `WorkerStartError` with that text);
  host -> worker: (job id, Task, program), answered by (job id, WorkerResult); None (or EOF) ends the worker.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import os
import sys
import time
import traceback
import warnings
from multiprocessing import connection as mp_connection

from tsp_jax.verify import types
from tsp_jax.verify.types import Finding, Task

# The directory holding the `tsp_jax` package: the worker's cwd and the head of its PYTHONPATH, so it imports
# the very package its host runs, from any working directory.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ERROR_CHARS = 4000


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
  """What a worker needs to check one program (plain values: sent once, as JSON, at worker start)."""
  severity_floor: str = "MEDIUM"
  confidence_floor: str = "LOW"
  test_wall_s: float = 20.0  # wall-clock limit of one sandboxed test run
  test_cpu_s: float = 10.0
  test_memory_mb: int = 2048
  # pytest-timeout per CWEval test. CWEval's runner uses 3 s; its RSA/DSA key-generation tests take 0.1-5 s of
  # CPU by chance on a loaded 2-core machine, so 3 s makes secure programs fail at random there.
  cweval_test_timeout_s: float = 10.0
  # Building a C/C++/Go program (or `node --check` of a JS one) before its CWEval tests: its own sandbox run.
  build_wall_s: float = 30.0
  build_cpu_s: float = 30.0
  build_memory_mb: int = 4096
  max_program_chars: int = 1_000_000


@dataclasses.dataclass(frozen=True)
class WorkerResult:
  """A worker's findings on one program, before the host merges semgrep's."""
  status: str
  bandit: tuple[Finding, ...] = ()
  functional: bool | None = None
  security: bool | None = None
  detail: str = ""
  elapsed_s: float = 0.0


def command(fd: int, settings: WorkerSettings) -> list[str]:
  """The argv that starts a worker talking over file descriptor `fd`."""
  return [sys.executable, "-m", "tsp_jax.verify.worker", str(fd), json.dumps(dataclasses.asdict(settings))]


def environment() -> dict[str, str]:
  """The worker's environment: the host's, with `PACKAGE_ROOT` first on PYTHONPATH and jax kept off devices."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
  env["JAX_PLATFORMS"] = "cpu"  # workers never import jax; should a test harness, it stays off accelerators
  return env


def check_program(task: Task, program: str, settings: WorkerSettings) -> WorkerResult:
  """Parse, bandit and the task's sandboxed tests for one program (runs in a worker)."""
  from tsp_jax.verify import dynamic, sandbox, static  # heavy imports: workers only

  t0 = time.perf_counter()
  if len(program) > settings.max_program_chars:
    return WorkerResult(types.CRASHED, detail=f"rejected: {len(program)} chars > {settings.max_program_chars}")
  limits = sandbox.Limits(cpu_s=settings.test_cpu_s, wall_s=settings.test_wall_s,
                          address_space_mb=settings.test_memory_mb)
  if task.language != "python":  # statically judged by the host's analyzers (semgrep, flawfinder); no bandit
    if task.tests == types.TESTS_NONE:
      return WorkerResult(types.OK, elapsed_s=time.perf_counter() - t0)
    if task.tests not in (types.TESTS_CWEVAL, types.TESTS_CODEGUARD):
      return WorkerResult(types.ERROR, detail=f"executable {task.tests} tests of {task.language} programs are "
                          "not supported (only CWEval's and CodeGuard+'s)")
    build = dataclasses.replace(dynamic.BUILD_LIMITS, cpu_s=settings.build_cpu_s, wall_s=settings.build_wall_s,
                                address_space_mb=settings.build_memory_mb)
    outcome = dynamic.run_tests(task, program, limits, settings.cweval_test_timeout_s, build)
    return WorkerResult(outcome.status, (), outcome.functional, outcome.security, outcome.detail,
                        time.perf_counter() - t0)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # SyntaxWarnings of generated code
      ast.parse(program)
  except (SyntaxError, ValueError, RecursionError, MemoryError) as e:  # ValueError: NUL bytes
    return WorkerResult(types.SYNTAX_ERROR, detail=f"{type(e).__name__}: {e}"[:500],
                        elapsed_s=time.perf_counter() - t0)
  found = tuple(static.bandit_findings(program, settings.severity_floor, settings.confidence_floor))
  if task.tests == types.TESTS_NONE:
    return WorkerResult(types.OK, found, elapsed_s=time.perf_counter() - t0)
  outcome = dynamic.run_tests(task, program, limits, settings.cweval_test_timeout_s)
  return WorkerResult(outcome.status, found, outcome.functional, outcome.security, outcome.detail,
                      time.perf_counter() - t0)


def _warm_up(settings: WorkerSettings) -> None:
  """Imports and loads everything a job needs, so that a broken install fails the handshake, not every job."""
  importlib.import_module("tsp_jax.verify.dynamic")  # the test runners and the sandbox
  from tsp_jax.verify import sandbox, static  # pylint: disable=import-outside-toplevel

  sandbox.check_interpreter()

  static.bandit_findings("x = 1\n", settings.severity_floor, settings.confidence_floor)


def serve(conn: mp_connection.Connection, settings: WorkerSettings) -> None:
  """Job loop: receive (job id, task, program), send (job id, WorkerResult); None or EOF ends it."""
  while True:
    try:
      job = conn.recv()
    except EOFError:
      return
    if job is None:
      return
    job_id, task, program = job
    try:
      result = check_program(task, program, settings)
    except Exception as e:  # a verifier bug on one program must not take the worker down  # pylint: disable=broad-except
      result = WorkerResult(types.ERROR, detail=f"verifier error: {type(e).__name__}: {e}"[:500])
    conn.send((job_id, result))


def main(argv: list[str]) -> int:
  """Handshake, then serve jobs until the host says stop (exit status 0), or 1 when the start failed."""
  fd = int(argv[1])
  os.set_inheritable(fd, False)  # (pass_fds made it inheritable: sandboxed tests never get it)
  conn = mp_connection.Connection(fd)
  try:
    settings = WorkerSettings(**json.loads(argv[2]))
    _warm_up(settings)
  except BaseException:  # noqa: BLE001  (whatever stops the start is reported to the host)
    conn.send(("error", traceback.format_exc()[-_ERROR_CHARS:]))
    return 1
  conn.send(("ready", os.getpid()))
  serve(conn, settings)
  return 0


if __name__ == "__main__":
  # Run by its package name, so that what it pickles (WorkerResult) unpickles in the host.
  from tsp_jax.verify import worker as _worker  # pylint: disable=import-self

  sys.exit(_worker.main(sys.argv))
