"""The verifier pool: persistent `spawn` worker processes that label programs, and the host loop driving them.

Per program a worker parses it, runs bandit in-process, and runs the task's executable tests in the sandbox
(`tsp_jax.verify.dynamic`). Semgrep, whose start costs ~2 s, runs once per batch in a thread of the host
process while the workers work (it only parses the programs). The host merges both into a `Verdict`.

Robustness contract: `verify` never raises because of a program. Each job has a deadline (`program_timeout_s`)
and the batch has one (`batch_timeout_s`); a worker past its deadline is killed with its process tree (SIGTERM,
then SIGKILL) and replaced, its program gets status `timeout`; a worker that dies mid-job is replaced and its
program gets status `crashed`. Workers are recycled after `recycle_after` jobs (bandit and test harnesses leak
a little memory per program). Workers never import jax (`JAX_PLATFORMS=cpu` is forced anyway).
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import threading
import time
import warnings
from typing import Sequence

import psutil

from tsp_jax.verify import types
from tsp_jax.verify.types import Finding, Task, Verdict


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
  """What a worker needs to check one program (picklable: sent once at worker start)."""
  severity_floor: str = "MEDIUM"
  confidence_floor: str = "LOW"
  test_wall_s: float = 20.0  # wall-clock limit of one sandboxed test run
  test_cpu_s: float = 10.0
  test_memory_mb: int = 2048
  # pytest-timeout per CWEval test. CWEval's runner uses 3 s; its RSA/DSA key-generation tests take 0.1-5 s of
  # CPU by chance on a loaded 2-core machine, so 3 s makes secure programs fail at random there.
  cweval_test_timeout_s: float = 10.0
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


def check_program(task: Task, program: str, settings: WorkerSettings) -> WorkerResult:
  """Parse, bandit and the task's sandboxed tests for one program (runs in a worker)."""
  from tsp_jax.verify import dynamic, sandbox, static  # heavy imports: workers only

  t0 = time.perf_counter()
  if len(program) > settings.max_program_chars:
    return WorkerResult(types.CRASHED, detail=f"rejected: {len(program)} chars > {settings.max_program_chars}")
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
  limits = sandbox.Limits(cpu_s=settings.test_cpu_s, wall_s=settings.test_wall_s,
                          address_space_mb=settings.test_memory_mb)
  outcome = dynamic.run_tests(task, program, limits, settings.cweval_test_timeout_s)
  return WorkerResult(outcome.status, found, outcome.functional, outcome.security, outcome.detail,
                      time.perf_counter() - t0)


def _worker_main(conn: mp_connection.Connection, settings: WorkerSettings) -> None:
  """Worker loop: receive (job id, task, program), send (job id, WorkerResult); None ends the loop."""
  os.environ["JAX_PLATFORMS"] = "cpu"
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
      result = WorkerResult(types.CRASHED, detail=f"verifier error: {type(e).__name__}: {e}"[:500])
    conn.send((job_id, result))


class _Worker:
  """One worker process, its pipe, and the job it is running."""

  def __init__(self, ctx, settings: WorkerSettings):
    self.conn, child = ctx.Pipe()
    self.process = ctx.Process(target=_worker_main, args=(child, settings), daemon=True)
    self.process.start()
    child.close()
    self.job: int | None = None
    self.deadline = 0.0
    self.done = 0

  def kill(self) -> None:
    """SIGTERM then SIGKILL to the worker and every process below it (sandboxed tests included)."""
    try:
      procs = psutil.Process(self.process.pid).children(recursive=True) + [psutil.Process(self.process.pid)]
    except psutil.NoSuchProcess:
      procs = []
    for p in procs:
      try:
        p.terminate()
      except psutil.NoSuchProcess:
        pass
    _, alive = psutil.wait_procs(procs, timeout=1.0)
    for p in alive:
      try:
        p.kill()
      except psutil.NoSuchProcess:
        pass
    self.process.join(timeout=5)
    self.conn.close()

  def stop(self) -> None:
    """Ask an idle worker to exit; kill it if it does not."""
    try:
      self.conn.send(None)
    except (BrokenPipeError, OSError):
      pass
    self.process.join(timeout=5)
    if self.process.is_alive():
      self.kill()
    else:
      self.conn.close()


class VerifierPool:
  """Labels programs secure / vulnerable and functional / not, in parallel host processes.

  Usage:
    with VerifierPool(num_workers=2) as pool:
      verdicts = pool.verify(tasks, programs)  # one Verdict per program, same order
  """

  def __init__(self, num_workers: int = 2, *, semgrep: bool = True, rules_dir: str | None = None,
               program_timeout_s: float = 60.0, batch_timeout_s: float = 3600.0, recycle_after: int = 500,
               settings: WorkerSettings | None = None):
    if num_workers < 1:
      raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if program_timeout_s <= 0 or batch_timeout_s <= 0:
      raise ValueError("program_timeout_s and batch_timeout_s must be > 0")
    if recycle_after < 1:
      raise ValueError(f"recycle_after must be >= 1, got {recycle_after}")
    self.settings = settings or WorkerSettings()
    self.program_timeout_s = program_timeout_s
    self.batch_timeout_s = batch_timeout_s
    self.recycle_after = recycle_after
    self._ctx = mp.get_context("spawn")
    self._scanner = None
    if semgrep:
      from tsp_jax.verify import static  # pylint: disable=import-outside-toplevel
      self._scanner = static.SemgrepScanner(rules_dir)
    self.stats = collections.Counter()  # workers started / killed / crashed / recycled, jobs
    self._workers = [self._start() for _ in range(num_workers)]

  def _start(self) -> _Worker:
    self.stats["workers_started"] += 1
    return _Worker(self._ctx, self.settings)

  def __enter__(self) -> "VerifierPool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Stop every worker."""
    for w in self._workers:
      w.stop()
    self._workers = []

  @property
  def worker_pids(self) -> list[int]:
    return [w.process.pid for w in self._workers]

  def _semgrep(self, programs: Sequence[str], out: list) -> None:
    """Semgrep findings of every program into out[0] (None and a logged error when semgrep fails)."""
    try:
      small = [p if len(p) <= self.settings.max_program_chars else "" for p in programs]
      out.append(self._scanner.scan(small))
    except Exception as e:  # pylint: disable=broad-except
      logging.error("semgrep failed on a batch of %d programs: %s", len(programs), e)
      out.append(None)

  def verify(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Verdict]:
    """One Verdict per program (same order); never raises because of a program."""
    if len(tasks) != len(programs):
      raise ValueError(f"{len(tasks)} tasks but {len(programs)} programs")
    if not programs:
      return []
    if not self._workers:
      raise RuntimeError("the pool is closed")
    t_batch = time.monotonic()
    semgrep_out: list = []
    thread = None
    if self._scanner is not None:
      thread = threading.Thread(target=self._semgrep, args=(programs, semgrep_out), daemon=True)
      thread.start()
    results = self._run_jobs(tasks, programs, t_batch + self.batch_timeout_s)
    semgrep = None
    if thread is not None:
      thread.join(max(0.0, t_batch + self.batch_timeout_s - time.monotonic()))
      semgrep = semgrep_out[0] if semgrep_out else None
    return [merge(task, program, result, None if semgrep is None else semgrep[i], self._scanner is not None)
            for i, (task, program, result) in enumerate(zip(tasks, programs, results))]

  def _replace(self, i: int, reason: str) -> None:
    self.stats[reason] += 1
    self._workers[i].kill()
    self._workers[i] = self._start()

  def _run_jobs(self, tasks: Sequence[Task], programs: Sequence[str], batch_deadline: float
                ) -> list[WorkerResult]:
    """Every program through the workers, with deadlines, crash detection and recycling."""
    results: list[WorkerResult | None] = [None] * len(programs)
    queue = collections.deque(range(len(programs)))
    while queue or any(w.job is not None for w in self._workers):
      now = time.monotonic()
      for i, w in enumerate(self._workers):  # hand out jobs
        if w.job is None and queue:
          if w.done >= self.recycle_after:
            w.stop()
            self.stats["workers_recycled"] += 1
            w = self._workers[i] = self._start()
          job = queue.popleft()
          try:
            w.conn.send((job, tasks[job], programs[job]))
          except (BrokenPipeError, OSError):  # the worker died while idle
            queue.appendleft(job)
            self._replace(i, "workers_crashed")
            continue
          w.job, w.deadline = job, min(now + self.program_timeout_s, batch_deadline)
      busy = [w for w in self._workers if w.job is not None]
      if not busy:
        continue
      timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
      ready = set(mp_connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
      for i, w in enumerate(self._workers):
        if w.job is None:
          continue
        if w.conn in ready:
          try:
            job, result = w.conn.recv()
          except (EOFError, OSError):
            job, result = w.job, WorkerResult(types.CRASHED, detail="worker died mid-job")
            results[job] = result
            self._replace(i, "workers_crashed")
            continue
          results[job] = result
          w.job, w.done = None, w.done + 1
          self.stats["jobs"] += 1
        elif w.process.sentinel in ready:
          results[w.job] = WorkerResult(types.CRASHED, detail=f"worker died (exit code {w.process.exitcode})")
          self._replace(i, "workers_crashed")
        elif time.monotonic() >= w.deadline:
          results[w.job] = WorkerResult(types.TIMEOUT, detail=f"killed after {self.program_timeout_s:.0f} s")
          self._replace(i, "workers_killed")
      if time.monotonic() >= batch_deadline and queue:
        for job in queue:
          results[job] = WorkerResult(types.TIMEOUT, detail="batch deadline passed before it started")
        queue.clear()
    return results  # type: ignore[return-value]


def merge(task: Task, program: str, result: WorkerResult, semgrep: Sequence[Finding] | None,
          semgrep_expected: bool) -> Verdict:
  """The Verdict of one program from its worker result and its semgrep findings."""
  from tsp_jax.verify import static  # pylint: disable=import-outside-toplevel

  if result.status == types.SYNTAX_ERROR or (result.status == types.CRASHED and not result.bandit):
    return Verdict(status=result.status, secure=False, functional=False if task.tests != types.TESTS_NONE
                   else None, detail=result.detail, elapsed_s=result.elapsed_s)
  findings = tuple(sorted(result.bandit + tuple(semgrep or ()), key=lambda f: (f.offset, f.tool, f.test_id)))
  static_secure, counted, first, oracle = static.static_verdict(task, program, findings)
  detail = result.detail
  if semgrep is None and semgrep_expected:
    detail = (detail + "; " if detail else "") + "semgrep unavailable: bandit only"
  secure = static_secure if result.security is None else result.security
  if result.status != types.OK and result.security is None and task.tests != types.TESTS_NONE:
    secure = False  # the security tests did not run to completion
  return Verdict(status=result.status, secure=bool(secure), functional=result.functional, findings=findings,
                 counted=tuple(counted), first_finding_offset=first, static_secure=static_secure,
                 security_tests_passed=result.security, oracle=oracle, detail=detail, elapsed_s=result.elapsed_s)

