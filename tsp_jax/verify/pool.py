"""The verifier pool: persistent worker processes that label programs, and the host loop driving them.

Per program a worker parses it, runs bandit in-process, and runs the task's executable tests in the sandbox
(`tsp_jax.verify.dynamic`). Semgrep, whose start costs ~2 s, runs once per batch in a thread of the host
process while the workers work (it only parses the programs). The host merges both into a `Verdict`.

Workers are fresh interpreters (`python -m tsp_jax.verify.worker`, see that module for why not
`multiprocessing`): a pool works the same from a guarded script, an unguarded one, standard input or a notebook.

Start contract: each worker must say it is ready (it imported bandit, the sandbox and the test runners) within
`start_timeout_s`; until then it gets no job. A worker that dies or stays silent at start is killed (its
descriptors closed) and started again; after `max_start_failures` such failures in a row the pool closes itself
and raises `WorkerStartError` with the worker's own error. A worker that cannot start never yields a verdict.

Robustness contract: `verify` never raises because of a program. Each job has a deadline (`program_timeout_s`)
and the batch has one (`batch_timeout_s`); a worker past its deadline is killed with its process tree (SIGTERM,
then SIGKILL) and replaced, its program gets status `timeout`; a worker that dies mid-job is replaced and its
program gets status `crashed`. Workers are recycled after `recycle_after` jobs (bandit and test harnesses leak
a little memory per program). Workers never import jax (`JAX_PLATFORMS=cpu` is forced anyway).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing.connection as mp_connection
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Sequence

import psutil

from tsp_jax.verify import types, worker
from tsp_jax.verify.types import Finding, Task, Verdict
from tsp_jax.verify.worker import WorkerResult, WorkerSettings

_LOG_TAIL_BYTES = 2000


class VerifierError(RuntimeError):
  """A batch the verifier could not judge (an analyzer failed on it): it returns no verdicts."""


class WorkerStartError(RuntimeError):
  """Verifier workers could not start: the pool cannot run, and returns no verdicts."""


class _Worker:
  """One worker process, its connection, its output log (a temp file), and the job it is running."""

  def __init__(self, settings: WorkerSettings, start_timeout_s: float):
    host, child = socket.socketpair()
    self.log = tempfile.TemporaryFile()
    try:
      self.process = subprocess.Popen(worker.command(child.fileno(), settings), stdin=subprocess.DEVNULL,
                                      stdout=self.log, stderr=self.log, pass_fds=(child.fileno(),),
                                      cwd=worker.PACKAGE_ROOT, env=worker.environment())
    except OSError as e:
      host.close()
      self.log.close()
      raise WorkerStartError(f"cannot launch a verifier worker ({sys.executable}): {e}") from e
    finally:
      child.close()
    self.conn = mp_connection.Connection(host.detach())
    self.start_timeout_s = start_timeout_s
    self.start_deadline = time.monotonic() + start_timeout_s
    self.ready = False
    self.job: int | None = None
    self.deadline = 0.0
    self.done = 0

  def poll_start(self, readable: bool) -> None:
    """Reads the handshake once the connection is `readable`; raises WorkerStartError when the worker failed
    to start (died, reported an error, or said nothing before its start deadline)."""
    if readable:
      try:
        msg = self.conn.recv()
      except (EOFError, OSError):
        try:
          code = self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
          code = None
        raise WorkerStartError(f"a verifier worker died at start (exit code {code}); its output:\n"
                               f"{self.log_tail()}") from None
      if msg[0] == "ready":
        self.ready = True
        return
      raise WorkerStartError(f"a verifier worker failed at start:\n{msg[1]}")
    if time.monotonic() >= self.start_deadline:
      raise WorkerStartError(f"a verifier worker did not report ready within {self.start_timeout_s:g} s "
                             f"(raise start_timeout_s on a loaded machine); its output:\n{self.log_tail()}")

  def log_tail(self) -> str:
    """The last bytes the worker wrote to stdout / stderr."""
    try:
      self.log.seek(0, 2)
      self.log.seek(max(0, self.log.tell() - _LOG_TAIL_BYTES))
      return self.log.read().decode("utf-8", "replace") or "(nothing)"
    except (OSError, ValueError):
      return "(unreadable)"

  def kill(self) -> None:
    """SIGTERM then SIGKILL to the worker and every process below it (sandboxed tests included); reaps it and
    closes its descriptors."""
    procs = []
    if self.process.poll() is None:  # (once reaped, its pid may belong to another process)
      try:
        procs = psutil.Process(self.process.pid).children(recursive=True) + [psutil.Process(self.process.pid)]
      except psutil.NoSuchProcess:
        pass
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
    self._reap()

  def stop(self) -> None:
    """Asks an idle worker to exit; kills it if it does not."""
    try:
      self.conn.send(None)
    except OSError:
      pass
    try:
      self.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
      self.kill()
      return
    self._reap()

  def _reap(self) -> None:
    try:
      self.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
    self.conn.close()
    self.log.close()


class VerifierPool:
  """Labels programs secure / vulnerable and functional / not, in parallel host processes.

  Usage (no `__main__` guard needed):
    with VerifierPool(num_workers=2) as pool:
      verdicts = pool.verify(tasks, programs)  # one Verdict per program, same order

  Raises WorkerStartError (at construction or from `verify`) when workers cannot start; see the module
  docstring.
  """

  def __init__(self, num_workers: int = 2, *, semgrep: bool = True, rules_dir: str | None = None,
               program_timeout_s: float = 60.0, batch_timeout_s: float = 3600.0, recycle_after: int = 500,
               start_timeout_s: float = 60.0, max_start_failures: int = 3, settings: WorkerSettings | None = None,
               memo_size: int = 0):
    if num_workers < 1:
      raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if program_timeout_s <= 0 or batch_timeout_s <= 0 or start_timeout_s <= 0:
      raise ValueError("program_timeout_s, batch_timeout_s and start_timeout_s must be > 0")
    if memo_size < 0:
      raise ValueError(f"memo_size must be >= 0, got {memo_size}")
    if recycle_after < 1 or max_start_failures < 1:
      raise ValueError(f"recycle_after and max_start_failures must be >= 1, got {recycle_after}, "
                       f"{max_start_failures}")
    self.settings = settings or WorkerSettings()
    self.program_timeout_s = program_timeout_s
    self.batch_timeout_s = batch_timeout_s
    self.recycle_after = recycle_after
    self.start_timeout_s = start_timeout_s
    self.max_start_failures = max_start_failures
    self._start_failures = 0  # in a row, over every worker slot
    self.memo_size = memo_size
    self._memo: collections.OrderedDict[tuple[Task, str], Verdict] = collections.OrderedDict()  # LRU order
    self._scanner = self._flawfinder = None
    if semgrep:  # the host-side analyzers: semgrep (every language) and flawfinder (C/C++, started on first use)
      from tsp_jax.verify import static  # pylint: disable=import-outside-toplevel
      self._scanner = static.SemgrepScanner(rules_dir)
    self.stats = collections.Counter()  # workers started / killed / crashed / recycled / failed at start, jobs
    self._workers: list[_Worker] = []
    try:
      for _ in range(num_workers):
        self._workers.append(self._start())
      self._await_ready()
    except BaseException:
      self.close()
      raise

  def _start(self) -> _Worker:
    self.stats["workers_started"] += 1
    return _Worker(self.settings, self.start_timeout_s)

  def __enter__(self) -> "VerifierPool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Stops every worker (kills those not ready yet)."""
    workers, self._workers = self._workers, []
    for w in workers:
      if w.ready and w.job is None:
        w.stop()
      else:
        w.kill()

  @property
  def worker_pids(self) -> list[int]:
    return [w.process.pid for w in self._workers]

  def _await_ready(self) -> None:
    """Waits until every worker has said it is ready (restarting those that fail, within the bound)."""
    while not all(w.ready for w in self._workers):
      starting = [w for w in self._workers if not w.ready]
      timeout = max(0.0, min(w.start_deadline for w in starting) - time.monotonic())
      readable = set(mp_connection.wait([w.conn for w in starting], timeout))
      for i, w in enumerate(self._workers):
        if not w.ready:
          self._poll_start(i, w.conn in readable)

  def _poll_start(self, i: int, readable: bool) -> None:
    """Advances worker i's handshake; a failed start is restarted, or closes the pool and raises once
    `max_start_failures` starts in a row failed."""
    w = self._workers[i]
    try:
      w.poll_start(readable)
    except WorkerStartError as e:
      self._start_failures += 1
      self.stats["workers_failed_at_start"] += 1
      w.kill()
      if self._start_failures >= self.max_start_failures:
        self._workers.pop(i)
        self.close()
        raise WorkerStartError(f"{self._start_failures} verifier worker starts in a row failed; the pool is "
                               f"closed and returns no verdicts. Last failure: {e}") from None
      self._workers[i] = self._start()
      return
    if w.ready:
      self._start_failures = 0

  def _semgrep(self, programs: Sequence[str], languages: Sequence[str], out: list) -> None:
    """The host-side analyzers' findings of every program (semgrep; flawfinder on C/C++) into out[0], or the
    exception that stopped one of them."""
    from tsp_jax.verify import static  # pylint: disable=import-outside-toplevel
    try:
      small = [p if len(p) <= self.settings.max_program_chars else "" for p in programs]
      if self._flawfinder is None and static.C_LANGUAGES & set(languages):
        self._flawfinder = static.FlawfinderScanner()
      found = static.analyzer_findings(small, languages, self._scanner, self._flawfinder,
                                       self.settings.severity_floor, self.settings.confidence_floor, bandit=False)
      out.append([static.merged(d) for d in found])
    except Exception as e:  # pylint: disable=broad-except  (re-raised by verify as a VerifierError)
      out.append(e)

  def verify(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Verdict]:
    """One Verdict per program (same order); never raises because of a program (WorkerStartError when the
    workers cannot start).

    With `memo_size` > 0 a (task, program) pair is judged once: repeats within the batch share its verdict, and
    the last `memo_size` verdicts of status "ok" or "syntax_error" (the judge decided, and decides the same
    again) answer later batches; "timeout", "crashed" and "error" are judged again when they come back.
    """
    if len(tasks) != len(programs):
      raise ValueError(f"{len(tasks)} tasks but {len(programs)} programs")
    if not programs:
      return []
    if not self._workers:
      raise RuntimeError("the pool is closed")
    if not self.memo_size:
      return self._verify_batch(tasks, programs)
    keys = list(zip(tasks, programs))
    todo = list(dict.fromkeys(k for k in keys if k not in self._memo))  # first occurrences, in order
    got = dict(zip(todo, self._verify_batch([t for t, _ in todo], [p for _, p in todo]) if todo else []))
    self.stats["memo_hits"] += len(keys) - len(todo)
    out = [got[k] if k in got else self._memo[k] for k in keys]
    for key in keys:
      if key in self._memo:
        self._memo.move_to_end(key)
    self._memo.update((k, v) for k, v in got.items() if v.status in (types.OK, types.SYNTAX_ERROR))
    while len(self._memo) > self.memo_size:
      self._memo.popitem(last=False)
    return out

  def _verify_batch(self, tasks: Sequence[Task], programs: Sequence[str]) -> list[Verdict]:
    """One Verdict per program: every program judged (the workers' jobs and the host's semgrep batch)."""
    t_batch = time.monotonic()
    semgrep_out: list = []
    thread = None
    if self._scanner is not None:
      thread = threading.Thread(target=self._semgrep, args=(programs, [t.language for t in tasks], semgrep_out),
                                daemon=True)
      thread.start()
    results = self._run_jobs(tasks, programs, t_batch + self.batch_timeout_s)
    semgrep = None
    if thread is not None:
      thread.join(max(0.0, t_batch + self.batch_timeout_s - time.monotonic()))
      if not semgrep_out:
        raise VerifierError(f"semgrep did not finish {len(programs)} programs within the batch deadline "
                            f"({self.batch_timeout_s:.0f} s): no verdicts for this batch")
      if isinstance(semgrep_out[0], Exception):
        raise VerifierError(f"a static analyzer failed on a batch of {len(programs)} programs, so the batch has no "
                            f"verdicts: {semgrep_out[0]}") from semgrep_out[0]
      semgrep = semgrep_out[0]
    return [merge(task, program, result, None if semgrep is None else semgrep[i])
            for i, (task, program, result) in enumerate(zip(tasks, programs, results))]

  def _replace(self, i: int, reason: str) -> None:
    """Kills worker i (closing its descriptors) and starts a new one in its slot (ready after its handshake)."""
    self.stats[reason] += 1
    self._workers[i].kill()
    self._workers[i] = self._start()

  def _run_jobs(self, tasks: Sequence[Task], programs: Sequence[str], batch_deadline: float
                ) -> list[WorkerResult]:
    """Every program through the workers, with handshakes, deadlines, crash detection and recycling."""
    results: list[WorkerResult | None] = [None] * len(programs)
    queue = collections.deque(range(len(programs)))
    while queue or any(w.job is not None for w in self._workers):
      now = time.monotonic()
      for i, w in enumerate(self._workers):  # hand out jobs to ready, idle workers
        if not (w.ready and w.job is None and queue):
          continue
        if w.done >= self.recycle_after:
          w.stop()
          self.stats["workers_recycled"] += 1
          self._workers[i] = self._start()
          continue
        job = queue.popleft()
        try:
          w.conn.send((job, tasks[job], programs[job]))
        except OSError:  # the worker died while idle: the job never started
          queue.appendleft(job)
          self._replace(i, "workers_crashed")
          continue
        w.job, w.deadline = job, min(now + self.program_timeout_s, batch_deadline)
      waiting = [w for w in self._workers if w.job is not None or not w.ready]
      if not waiting:
        continue
      timeout = max(0.0, min(w.deadline if w.ready else w.start_deadline for w in waiting) - time.monotonic())
      readable = set(mp_connection.wait([w.conn for w in waiting], timeout))
      for i, w in enumerate(self._workers):
        if not w.ready:
          self._poll_start(i, w.conn in readable)
        elif w.job is None:
          continue
        elif w.conn in readable:
          try:
            job, result = w.conn.recv()
          except (EOFError, OSError):  # (a dead worker's socket reads as end of file)
            logging.warning("verifier worker %d died mid-job; its output:\n%s", w.process.pid, w.log_tail())
            self._replace(i, "workers_crashed")
            results[w.job] = WorkerResult(types.CRASHED, detail=f"worker died mid-job (exit code "
                                          f"{w.process.returncode})")
            continue
          results[job] = result
          w.job, w.done = None, w.done + 1
          self.stats["jobs"] += 1
        elif time.monotonic() >= w.deadline:
          results[w.job] = WorkerResult(types.TIMEOUT, detail=f"killed after {self.program_timeout_s:.0f} s")
          self._replace(i, "workers_killed")
      if time.monotonic() >= batch_deadline and queue:
        for job in queue:
          results[job] = WorkerResult(types.TIMEOUT, detail="batch deadline passed before it started")
        queue.clear()
    return results  # type: ignore[return-value]


def merge(task: Task, program: str, result: WorkerResult, semgrep: Sequence[Finding] | None) -> Verdict:
  """The Verdict of one program from its worker result and its semgrep findings (None: semgrep is off)."""
  from tsp_jax.verify import static  # pylint: disable=import-outside-toplevel

  status = result.status
  if task.tests == types.TESTS_NONE and status in (types.TIMEOUT, types.CRASHED) and not result.bandit:
    status = types.ERROR  # nothing of the program ran: the static analyzers hung or died on it
  if task.language != "python" and semgrep is None and status == types.OK:
    status = types.ERROR  # its only judges are the host's analyzers, and they are off
  if status in (types.SYNTAX_ERROR, types.ERROR) or (status == types.CRASHED and not result.bandit):
    return Verdict(status=status, secure=False, functional=False if task.tests != types.TESTS_NONE
                   else None, detail=result.detail, elapsed_s=result.elapsed_s)
  findings = tuple(sorted(result.bandit + tuple(semgrep or ()), key=lambda f: (f.offset, f.tool, f.test_id)))
  static_secure, counted, first, oracle = static.static_verdict(task, program, findings)
  detail = result.detail
  secure = static_secure if result.security is None else result.security
  if result.status != types.OK and result.security is None and task.tests != types.TESTS_NONE:
    secure = False  # the security tests did not run to completion
  return Verdict(status=status, secure=bool(secure), functional=result.functional, findings=findings,
                 counted=tuple(counted), first_finding_offset=first, static_secure=static_secure,
                 security_tests_passed=result.security, oracle=oracle, detail=detail, elapsed_s=result.elapsed_s)

