r"""Benchmark of the verifier pool against the bandit CLI, in one run, on the shared training functions.

    python -m tsp_jax.bench.verify --data_dir=../shared/data --eval_dir=../shared/eval

Prints two tables:
  1. static verification throughput (programs/s): the pool with `--workers` workers (bandit in-process; with
     and without the batch's semgrep scan) vs `bandit` run once per program as a CLI process (the way a
     script would shell out to it), on the vulnerable and fixed versions of every training pair;
  2. CWEval's executable tests: programs (reference secure + vulnerable) per second through the pool.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from tsp_jax.verify import program, types
from tsp_jax.verify.pool import VerifierPool


def training_programs(data_dir: str) -> list[tuple[types.Task, str]]:
  """(task, program) for the vulnerable and the fixed function of every SVEN/SafeCoder training pair."""
  out = []
  for raw in types.load_raw(os.path.join(data_dir, "sven_safecoder", "train.jsonl")):
    task = types.Task(id=raw["id"], cwe=raw["cwe"])
    for key in ("reference_vulnerable", "reference_secure"):
      if raw.get(key):
        out.append((task, program.normalize_code(raw[key])))
  return out


def bandit_cli_seconds(programs: list[str]) -> float:
  """Mean seconds per program of `bandit -f json FILE`, one process per program."""
  bandit = os.path.join(os.path.dirname(sys.executable), "bandit")
  with tempfile.TemporaryDirectory() as tmp:
    paths = []
    for i, p in enumerate(programs):
      paths.append(os.path.join(tmp, f"{i}.py"))
      with open(paths[-1], "w", encoding="utf-8") as f:
        f.write(p)
    t0 = time.perf_counter()
    for path in paths:
      subprocess.run([bandit, "-q", "-f", "json", "-ll", path], capture_output=True, check=False)
    return (time.perf_counter() - t0) / len(paths)


def pool_rate(tasks, programs, workers: int, semgrep: bool) -> tuple[float, int]:
  """Programs/s of one `verify` call on a warm pool (workers started and warmed up before timing)."""
  with VerifierPool(num_workers=workers, semgrep=semgrep) as pool:
    pool.verify(tasks[:workers * 4], programs[:workers * 4])  # imports bandit in every worker
    t0 = time.perf_counter()
    verdicts = pool.verify(tasks, programs)
    dt = time.perf_counter() - t0
  return len(programs) / dt, sum(not v.secure for v in verdicts)


def cweval_rate(eval_dir: str, workers: int) -> tuple[float, int, int]:
  """(programs/s, programs, verdicts agreeing with the references' labels) for CWEval's test suite."""
  path = os.path.join(eval_dir, "cweval", "test.jsonl")
  tasks, programs, expect = [], [], []
  for task in types.load_tasks(path):
    for code, secure in ((task.reference_secure, True), (task.reference_vulnerable, False)):
      tasks.append(task)
      programs.append(code)
      expect.append(secure)
  with VerifierPool(num_workers=workers, semgrep=False) as pool:
    t0 = time.perf_counter()
    verdicts = pool.verify(tasks, programs)
    dt = time.perf_counter() - t0
  agree = sum(v.functional is True and v.secure == e for v, e in zip(verdicts, expect))
  return len(programs) / dt, len(programs), agree


def run(data_dir: str, eval_dir: str, workers: int, cli_sample: int, limit: int) -> None:
  """Measures and prints both tables (`limit`: first N training programs for the pool, 0: all)."""
  pairs = training_programs(data_dir)
  if limit:
    pairs = pairs[:limit]
  tasks, programs = [t for t, _ in pairs], [p for _, p in pairs]
  cli_s = bandit_cli_seconds(programs[:cli_sample])
  rows = [("bandit CLI, one process per program", 1.0 / cli_s, None)]
  for semgrep in (False, True):
    rate, flagged = pool_rate(tasks, programs, workers, semgrep)
    name = f"VerifierPool({workers} workers), bandit in-process" + (" + semgrep batch" if semgrep else "")
    rows.append((name, rate, flagged))
  print(f"\nStatic verification of {len(programs)} training functions (vulnerable + fixed), "
        f"{os.cpu_count()} CPUs")
  print("| verifier | programs/s | vs bandit CLI | flagged (CWE-aware) |")
  print("|---|---:|---:|---:|")
  for name, rate, flagged in rows:
    print(f"| {name} | {rate:,.1f} | {rate * cli_s:,.1f}x | {'' if flagged is None else flagged} |")
  rate, n, agree = cweval_rate(eval_dir, workers)
  print(f"\nCWEval executable tests ({n} reference programs, {workers} workers, sandboxed)")
  print("| programs/s | s/program | verdicts matching the reference labels |")
  print("|---:|---:|---:|")
  print(f"| {rate:.2f} | {1 / rate:.2f} | {agree}/{n} |")


def _cli_main() -> None:
  """Defines the flags here, not at import (importing this module registers no flags)."""
  data_dir = flags.DEFINE_string("data_dir", "../shared/data", "Shared train/dev data.")
  eval_dir = flags.DEFINE_string("eval_dir", "../shared/eval", "Shared eval data (CWEval tests are timed).")
  workers = flags.DEFINE_integer("workers", 2, "Pool workers.")
  cli_sample = flags.DEFINE_integer("cli_sample", 40, "Programs timed through the bandit CLI (time/program).")
  limit = flags.DEFINE_integer("limit", 0, "Programs for the pool (0: every training function).")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    run(data_dir.value, eval_dir.value, workers.value, cli_sample.value, limit.value)

  app.run(main)


if __name__ == "__main__":
  _cli_main()
