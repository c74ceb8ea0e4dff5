r"""How well the static verifier tells vulnerable from fixed code, per CWE.

    python -m tsp_jax.verify.detection --data_dir=../shared/data --split=both [--results_md=PATH]

On the SVEN/SafeCoder vulnerable/fixed pairs (functions normalised as training sees them) it prints, per CWE,
how many vulnerable and fixed versions each analyzer flags and how many pairs it discriminates (vulnerable
flagged, fixed not), all CWE-aware: bandit alone (its raw alerts), semgrep alone (the project's rule pack) and
the composite (`static.static_verdict` on both, which counts bandit's B608 only where a value is interpolated).
Then, on CWEval's references, the agreement of the static verdict with CWEval's executable security tests:
`reference_secure` should be static-secure, each `reference_vulnerable_variants` entry static-insecure.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Sequence

from absl import app, flags

from tsp_jax.verify import static
from tsp_jax.verify.program import normalize_code
from tsp_jax.verify.types import Finding, Task, load_raw

ANALYZERS = ("bandit", "flawfinder", "semgrep", "composite")
PYTHON_ANALYZERS = ("bandit", "semgrep", "composite")  # the columns of a table, by the languages it covers
XLANG_ANALYZERS = ("flawfinder", "semgrep", "composite")


@dataclasses.dataclass(frozen=True)
class Pair:
  """One vulnerable/fixed function pair of a CWE."""
  id: str
  cwe: str
  vulnerable: str
  fixed: str
  language: str = "python"


@dataclasses.dataclass
class Row:
  """Detection counts of one analyzer on the pairs of one CWE."""
  pairs: int = 0
  vulnerable_flagged: int = 0
  fixed_flagged: int = 0
  discriminated: int = 0

  def add(self, vulnerable_flagged: bool, fixed_flagged: bool) -> None:
    self.pairs += 1
    self.vulnerable_flagged += vulnerable_flagged
    self.fixed_flagged += fixed_flagged
    self.discriminated += vulnerable_flagged and not fixed_flagged


def load_pairs(path: str) -> list[Pair]:
  """The vulnerable/fixed pairs of a SVEN/SafeCoder JSONL file (any language), normalised as training sees them."""
  raws = load_raw(path)
  return [Pair(r["id"], r["cwe"], normalize_code(r["reference_vulnerable"]), normalize_code(r["reference_secure"]),
               r.get("language") or "python")
          for r in raws if r.get("reference_vulnerable") and r.get("reference_secure")]


def analyze(codes: Sequence[str], scanner: static.SemgrepScanner, languages: Sequence[str] | None = None,
            flawfinder: static.FlawfinderScanner | None = None) -> list[dict[str, list[Finding]]]:
  """Findings per program and analyzer (bandit, flawfinder, semgrep, composite), one process per tool."""
  languages = list(languages) if languages is not None else ["python"] * len(codes)
  out = static.analyzer_findings(codes, languages, scanner, flawfinder)
  return [{**d, "composite": static.merged(d)} for d in out]


def flagged(cwe: str, code: str, findings: Sequence[Finding], analyzer: str = "composite") -> bool:
  """Whether a program of a `cwe` task is called insecure: by the CWE-aware static verdict, or for "bandit" and
  "flawfinder" by any CWE-relevant raw alert (the tool as it is, without the verdict's refinements)."""
  if analyzer in ("bandit", "flawfinder"):
    return any(static.cwe_relevant(f.cwe, cwe) for f in findings)
  return not static.static_verdict(Task(id="detection", cwe=cwe), code, findings)[0]


def detection_tables(pairs: Sequence[Pair], scanner: static.SemgrepScanner,
                     flawfinder: static.FlawfinderScanner | None = None
                     ) -> tuple[dict[str, dict[str, Row]], list[str]]:
  """(analyzer -> CWE (and "all") -> Row, CWE-aware, over `pairs`; one markdown row per pair the composite does
  not discriminate, with the findings it counted on each version). Rows of languages other than Python are keyed
  "<language> <CWE>", with a "<language> all" row each."""
  results = analyze([c for p in pairs for c in (p.vulnerable, p.fixed)], scanner,
                    [p.language for p in pairs for _ in (0, 1)], flawfinder)
  tables: dict[str, dict[str, Row]] = {a: collections.defaultdict(Row) for a in ANALYZERS}
  missed = []
  for k, pair in enumerate(pairs):
    vulnerable, fixed = results[2 * k], results[2 * k + 1]
    discriminated = {}
    for a in ANALYZERS:
      v, f = flagged(pair.cwe, pair.vulnerable, vulnerable[a], a), flagged(pair.cwe, pair.fixed, fixed[a], a)
      keys = [pair.cwe, "all"] if pair.language == "python" else [f"{pair.language} {pair.cwe}",
                                                                  f"{pair.language} all", "all"]
      for key in keys:
        tables[a][key].add(v, f)
      discriminated[a] = v and not f
    if not discriminated["composite"]:
      missed.append(f"| {pair.id} | {pair.cwe} ({pair.language}) | {_counted_ids(pair.cwe, pair.vulnerable, vulnerable['composite'])} | "
                    f"{_counted_ids(pair.cwe, pair.fixed, fixed['composite'])} |")
  return tables, missed


def _pct(n: int, d: int) -> str:
  return f"{n} ({100 * n / d:.0f}%)" if d else "0"


def format_table(title: str, tables: dict[str, dict[str, Row]], analyzers: Sequence[str] = PYTHON_ANALYZERS
                 ) -> str:
  """A markdown table: one row per CWE (and all), per analyzer: vulnerable flagged / fixed flagged / discriminated."""
  cwes = sorted(c for c in tables["composite"] if c != "all") + ["all"]
  head = "| CWE | pairs | " + " | ".join(f"{a} vuln / fixed / discr" for a in analyzers) + " |"
  lines = [f"### {title}", "", head, "|---|---|" + "---|" * len(analyzers)]
  for cwe in cwes:
    cells = []
    for a in analyzers:
      r = tables[a][cwe]
      cells.append(f"{r.vulnerable_flagged} / {r.fixed_flagged} / {r.discriminated}")
    lines.append(f"| {cwe} | {tables['composite'][cwe].pairs} | " + " | ".join(cells) + " |")
  lines.append("")
  for a in analyzers:
    r = tables[a]["all"]
    lines.append(f"- {a}: discriminates {_pct(r.discriminated, r.pairs)}, vulnerable flagged "
                 f"{_pct(r.vulnerable_flagged, r.pairs)}, fixed flagged {_pct(r.fixed_flagged, r.pairs)}")
  return "\n".join(lines) + "\n"


def _counted_ids(cwe: str, code: str, findings: Sequence[Finding]) -> str:
  """The tool:rule ids of the findings the CWE-aware verdict counts ("-" when none)."""
  _, counted, _, _ = static.static_verdict(Task(id="detection", cwe=cwe), code, findings)
  return ", ".join(sorted({f"{findings[i].tool}:{findings[i].test_id}" for i in counted})) or "-"


def cweval_agreement(path: str, scanner: static.SemgrepScanner) -> str:
  """Agreement of the composite CWE-aware static verdict with CWEval's security tests on its references.

  One row per program (with the findings that made it insecure), then one row per CWE.
  """
  raws = load_raw(path)
  programs = []  # (task id, cwe, expected secure, variant name, code)
  for r in raws:
    programs.append((r["id"], r["cwe"], True, "reference_secure", r["reference_secure"]))
    for v in r.get("reference_vulnerable_variants") or []:
      programs.append((r["id"], r["cwe"], False, v["name"], v["code"]))
  results = analyze([p[-1] for p in programs], scanner)
  lines = ["### CWEval references: static verdict (composite, CWE-aware) vs executable security tests", "",
           "| task | CWE | program | tests say | static says | agree | counted findings |",
           "|---|---|---|---|---|---|---|"]
  agree = collections.Counter()
  per_cwe: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for (task_id, cwe, expected, name, code), res in zip(programs, results):
    static_secure = not flagged(cwe, code, res["composite"])
    ok = static_secure == expected
    agree[expected, ok] += 1
    per_cwe[cwe][expected, ok] += 1
    lines.append(f"| {task_id.rsplit('/', 1)[-1]} | {cwe} | {name} | {'secure' if expected else 'insecure'} | "
                 f"{'secure' if static_secure else 'insecure'} | {'yes' if ok else 'no'} | "
                 f"{_counted_ids(cwe, code, res['composite'])} |")
  n_secure, n_vuln = agree[True, True] + agree[True, False], agree[False, True] + agree[False, False]
  total_ok = agree[True, True] + agree[False, True]
  lines += ["", "| CWE | programs | agree | secure refs static-secure | vulnerable variants static-insecure |",
            "|---|---|---|---|---|"]
  for cwe in sorted(per_cwe):
    c = per_cwe[cwe]
    lines.append(f"| {cwe} | {sum(c.values())} | {c[True, True] + c[False, True]} | "
                 f"{c[True, True]}/{c[True, True] + c[True, False]} | {c[False, True]}/{c[False, True] + c[False, False]} |")
  lines += ["", f"- agreement: {_pct(total_ok, n_secure + n_vuln)} of {n_secure + n_vuln} programs; secure references "
            f"static-secure {agree[True, True]}/{n_secure}; vulnerable variants static-insecure "
            f"{agree[False, True]}/{n_vuln}"]
  return "\n".join(lines) + "\n"


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)), check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def _pair_tables(title: str, pairs: Sequence[Pair], scanner: static.SemgrepScanner,
                 flawfinder: static.FlawfinderScanner | None, analyzers: Sequence[str]) -> list[str]:
  """The detection table of `pairs` and the list of the pairs the composite misses, as markdown."""
  tables, missed = detection_tables(pairs, scanner, flawfinder)
  return [format_table(f"{title} ({len(pairs)} pairs): vulnerable flagged / fixed flagged / discriminated, "
                       "CWE-aware, severity >= MEDIUM", tables, analyzers),
          "\n".join([f"Pairs of {title} the composite does not discriminate ({len(missed)}), with the findings it "
                     "counted:", "", "| pair | CWE | vulnerable version | fixed version |", "|---|---|---|---|",
                     *missed]) + "\n"]


def run(data_dir: str, eval_dir: str | None, split: str, cweval: bool, results_md: str | None,
        xlang_dir: str | None = None) -> str:
  """Measures the tables (see the module docstring), prints them, writes them to `results_md` if given."""
  scanner = static.SemgrepScanner()
  splits = ["train", "dev"] if split == "both" else [split]
  parts = []
  for name in splits:
    parts += _pair_tables(f"sven_safecoder {name}", load_pairs(os.path.join(data_dir, "sven_safecoder",
                                                                             f"{name}.jsonl")),
                          scanner, None, PYTHON_ANALYZERS)
  if xlang_dir:
    flawfinder = static.FlawfinderScanner()
    for name in splits:
      parts += _pair_tables(f"xlang {name}", load_pairs(os.path.join(xlang_dir, "data", f"{name}.jsonl")),
                            scanner, flawfinder, XLANG_ANALYZERS)
  if cweval:
    eval_dir = eval_dir or os.path.join(os.path.dirname(os.path.abspath(data_dir)), "eval")
    parts.append(cweval_agreement(os.path.join(eval_dir, "cweval", "test.jsonl"), scanner))
  text = "\n".join(parts)
  print(text)
  if results_md:
    header = (f"# Static verifier detection figures\n\nCommand: `python -m tsp_jax.verify.detection "
              f"{' '.join(sys.argv[1:])}`  \nDate: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
              f"  \nCommit: {_commit()} (bandit {_version('bandit')}, semgrep {_version('semgrep')}, flawfinder "
              f"{_version('flawfinder')}, rule pack "
              "tsp_jax/verify/rules)\n\n")
    with open(results_md, "w", encoding="utf-8") as f:
      f.write(header + text)
  return text


def _cli_main() -> None:
  """Defines the flags here, not at import (importing this module registers no flags)."""
  data_dir = flags.DEFINE_string("data_dir", "../shared/data", "Folder with sven_safecoder/{train,dev}.jsonl.")
  eval_dir = flags.DEFINE_string("eval_dir", None, "Folder with cweval/test.jsonl (default: <data_dir>/../eval).")
  split = flags.DEFINE_enum("split", "both", ["train", "dev", "both"], "Which pairs to measure.")
  cweval = flags.DEFINE_bool("cweval", True, "Also measure agreement with CWEval's security tests.")
  results_md = flags.DEFINE_string("results_md", None, "Also write the tables (with command, date, commit) here.")
  xlang_dir = flags.DEFINE_string("xlang_dir", None, "Folder with data/{train,dev}.jsonl of C/C++/Go/JS pairs "
                                  "(../shared/xlang): measured per language and CWE too.")

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    run(data_dir.value, eval_dir.value, split.value, cweval.value, results_md.value, xlang_dir.value)

  app.run(main)


if __name__ == "__main__":
  _cli_main()
