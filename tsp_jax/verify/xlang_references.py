r"""CWEval's C, C++, Go and JavaScript references judged by the project's own verifier, per language.

    python -m tsp_jax.verify.xlang_references --cweval=../shared/xlang/eval/cweval/test.jsonl [--num_workers=2]

Every task's secure reference should be functional and secure, its vulnerable one not both (CWEval's func-sec:
insecure, or not functional where that is how its tests see it). Tasks with `known_issues` (defective source
tests) are reported apart; tasks that cannot run here (status "error", "skipped: ...") are counted with their
reasons, never as failures.
"""

from __future__ import annotations

import collections
import time

from absl import app, flags

from tsp_jax.verify.pool import VerifierPool
from tsp_jax.verify.types import ERROR, OK, load_raw, load_tasks
from tsp_jax.verify.worker import WorkerSettings


def judge(path: str, num_workers: int) -> tuple[str, float]:
  """(the per-language table in markdown, wall seconds) of every reference of the xlang CWEval file."""
  tasks = [t for t in load_tasks(path) if t.language != "python"]
  known = {r["id"] for r in load_raw(path) if r.get("known_issues")}
  t0 = time.monotonic()
  with VerifierPool(num_workers, settings=WorkerSettings(), program_timeout_s=120) as pool:
    secure = pool.verify(tasks, [t.reference_secure for t in tasks])
    vulnerable = pool.verify(tasks, [t.reference_vulnerable for t in tasks])
  wall = time.monotonic() - t0
  rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  notes = []
  for task, s, v in zip(tasks, secure, vulnerable):
    row = rows[task.language]
    row["tasks"] += 1
    if task.id in known:
      row["defective"] += 1
      continue
    if ERROR in (s.status, v.status):
      row["skipped"] += 1
      notes.append(f"{task.id}: {(s.detail if s.status == ERROR else v.detail)[:160]}")
      continue
    row["judged"] += 1
    sec_ok = s.status == OK and s.functional and s.secure
    vul_ok = not (v.status == OK and v.functional and v.secure)
    row["secure_ok"] += bool(sec_ok)
    row["vulnerable_ok"] += vul_ok
    if not (sec_ok and vul_ok):
      notes.append(f"{task.id}: secure ref {s.status} functional={s.functional} secure={s.secure}; vulnerable ref "
                   f"{v.status} functional={v.functional} secure={v.secure}: {(s.detail or v.detail)[:160]}")
  lines = ["| language | tasks | judged | secure refs functional+secure | vulnerable refs not func-sec | "
           "skipped here | defective source tests (left out) |", "|---|---|---|---|---|---|---|"]
  for lang in sorted(rows):
    r = rows[lang]
    lines.append(f"| {lang} | {r['tasks']} | {r['judged']} | {r['secure_ok']}/{r['judged']} | "
                 f"{r['vulnerable_ok']}/{r['judged']} | {r['skipped']} | {r['defective']} |")
  lines += ["", *(f"- {n}" for n in notes)]
  return "\n".join(lines), wall


def _cli_main() -> None:
  cweval = flags.DEFINE_string("cweval", "../shared/xlang/eval/cweval/test.jsonl", "The xlang CWEval JSONL.")
  num_workers = flags.DEFINE_integer("num_workers", 2, "Verifier workers.")

  def main(argv):
    del argv
    table, wall = judge(cweval.value, num_workers.value)
    print(table)
    print(f"\n{wall:.0f} s wall with {num_workers.value} workers")

  app.run(main)


if __name__ == "__main__":
  _cli_main()
