"""Reports of results dicts: a Markdown table per run, runs side by side, a per-CWE bar chart, JSON files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tsp_jax.evaluation.benchmarks import SECURITY_BENCHMARKS


def _fmt(x: Any) -> str:
  if x is None:
    return "-"
  return f"{100 * x:.1f}" if isinstance(x, float) else str(x)


def _subsets(bench: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
  """The rows of a benchmark: all, then its test subsets where it has them (synth), or its second judge's
  summary over all programs (SecurityEval: CWE-aware), else seen / unseen CWEs."""
  groups = bench.get("groups", {})
  extra = groups.get("subset") or groups.get("judge")
  if extra:
    return [("all", bench["metrics"]), *extra.items()]
  return [("all", bench["metrics"]), ("seen CWEs", bench["seen"]), ("unseen CWEs", bench["unseen"])]


def judge_table(name: str, bench: Mapping[str, Any]) -> list[str]:
  """Lines of a benchmark judged in two static modes (SecurityEval): per CWE and over all prompts, the prompts,
  the parseable programs, the programs flagged and SPR@1 under the headline judge and the second one."""
  headline = bench["headline_judge"]
  label, per_cwe2 = next(iter(bench["judge_per_cwe"].items()))
  head = ["benchmark", "CWE", "prompts", "parseable", f"flagged {headline}", f"flagged {label}",
          f"SPR@1 {headline} % (headline)", f"SPR@1 {label} %"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  total, total2 = bench["metrics"], bench["groups"]["judge"][label]
  rows = [("all", total["n"], total["parseable"], total["flagged"], total2["flagged"], total["spr_at_1"],
           total2["spr_at_1"])]
  rows += [(cwe, row["n"], row["parseable"], row["vulnerable"], per_cwe2[cwe]["vulnerable"], row["spr_at_1"],
            per_cwe2[cwe]["spr_at_1"]) for cwe, row in bench["per_cwe"].items()]
  lines += ["| " + " | ".join(_fmt(c) for c in (name, *r)) + " |" for r in rows]
  return lines


def language_tables(result: Mapping[str, Any]) -> list[str]:
  """Lines of the per-language tables of the security benchmarks that hold a language besides Python: per
  language, all / seen / unseen CWEs (rates in %, undecided counted apart), then per language x CWE; [] when
  every benchmark is Python only (today's table unchanged)."""
  benches = [(n, b) for n, b in result["benchmarks"].items()
             if n in SECURITY_BENCHMARKS and set(b.get("by_language", {})) - {"python"}]
  if not benches:
    return []
  head = ["benchmark", "language", "subset", "n", "undecided", "parse %", "SPR@1 %", "func pass@1 %",
          "secure-pass@1 %"]
  lines = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, bench in benches:
    for lang, row in bench["by_language"].items():
      for subset, m in (("all", row["metrics"]), ("seen CWEs", row["seen"]), ("unseen CWEs", row["unseen"])):
        cells = [name, lang, subset, m["n"], m["undecided"], m["parse_rate"], m["spr_at_1"], m["func_pass_at_1"],
                 m["secure_pass_at_1"]]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
  head = ["benchmark", "language", "CWE", "seen", "decided", "undecided", "parseable", "vulnerable", "secure-pass"]
  lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, bench in benches:
    for lang, row in bench["by_language"].items():
      undecided = row.get("undecided_per_cwe", {})
      for cwe in sorted(set(row["per_cwe"]) | set(undecided)):
        c = row["per_cwe"].get(cwe, {"n": 0, "parseable": 0, "vulnerable": 0, "secure_pass": 0, "with_tests": 0,
                                     "seen": None})
        cells = [name, lang, cwe, {True: "yes", False: "no"}.get(c["seen"], "-"), c["n"], undecided.get(cwe, 0),
                 c["parseable"], c["vulnerable"], f"{c['secure_pass']}/{c['with_tests']}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
  return lines


def markdown_table(result: Mapping[str, Any]) -> str:
  """One run: a row per benchmark and CWE subset (rates in %), then the per-CWE counts of the security sets."""
  head = ["benchmark", "subset", "n", "skipped", "parse %", "SPR@1 %", "func pass@1 %", "secure-pass@1 %",
          "timeout", "crashed", "undecided"]
  lines = [f"run `{result['run']}`", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, bench in result["benchmarks"].items():
    security = name in SECURITY_BENCHMARKS  # HumanEval: utility only, no security columns
    for subset, m in _subsets(bench) if security else _subsets(bench)[:1]:
      skipped = sum(bench["skipped"].values()) if subset == "all" else ""
      cells = [name, subset, m["n"], skipped, m["parse_rate"], m["spr_at_1"] if security else None,
               m["func_pass_at_1"], m["secure_pass_at_1"] if security else None, m["timeout"], m["crashed"],
               m.get("undecided", 0)]
      lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
  cwe_head = ["benchmark", "CWE", "seen", "n", "parseable", "vulnerable", "secure-pass"]
  cwe_lines = []
  for name, bench in result["benchmarks"].items():
    if name in SECURITY_BENCHMARKS and "judge_per_cwe" not in bench:  # two judges: their own table below
      for cwe, row in bench["per_cwe"].items():
        cells = [name, cwe, {True: "yes", False: "no"}.get(row["seen"], "-"), row["n"], row["parseable"],
                 row["vulnerable"], f"{row['secure_pass']}/{row['with_tests']}"]
        cwe_lines.append("| " + " | ".join(map(str, cells)) + " |")
  if cwe_lines:
    lines += ["", "| " + " | ".join(cwe_head) + " |", "|" + "---|" * len(cwe_head), *cwe_lines]
  lines += language_tables(result)
  for name, bench in result["benchmarks"].items():
    if "judge_per_cwe" in bench:
      lines += ["", *judge_table(name, bench)]
  judges = [f"{name}: {bench['security_judge']}" for name, bench in result["benchmarks"].items()
            if name in SECURITY_BENCHMARKS and bench.get("security_judge")]
  if judges:
    lines += ["", "security judged by " + "; ".join(judges)]
  if result.get("probe"):
    lines += ["", "node probe: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in result["probe"].items())]
  return "\n".join(lines)


_COMPARE_ROWS = (("parse %", "parse_rate"), ("SPR@1 %", "spr_at_1"), ("func pass@1 %", "func_pass_at_1"),
                 ("secure-pass@1 %", "secure_pass_at_1"))
_PROBE_ROWS = (("probe preference acc %", "preference_accuracy"), ("probe flag rate %", "flag_rate"),
               ("probe vulnerable rate %", "vulnerable_rate"))


def compare_table(results: Sequence[Mapping[str, Any]]) -> str:
  """Runs side by side: a row per benchmark / subset / metric (rates in %), a column per run."""
  lines = ["| metric | " + " | ".join(r["run"] for r in results) + " |", "|---|" + "---|" * len(results)]
  names = list(dict.fromkeys(n for r in results for n in r["benchmarks"]))
  for name in names:
    counts = [f"{b['metrics']['n']}/{sum(b['skipped'].values())}" if (b := r["benchmarks"].get(name)) else "-"
              for r in results]
    lines.append(f"| {name} evaluated/skipped | " + " | ".join(counts) + " |")
    first = next(r["benchmarks"][name] for r in results if name in r["benchmarks"])
    for subset in [s for s, _ in _subsets(first)] if name in SECURITY_BENCHMARKS else ("all",):
      for label, key in _COMPARE_ROWS:
        if name == "humaneval" and key != "func_pass_at_1":
          continue
        cells = [dict(_subsets(r["benchmarks"][name])).get(subset, {}).get(key) if name in r["benchmarks"]
                 else None for r in results]
        row_label = f"{name} {subset} {'pass@1 %' if name == 'humaneval' else label}"
        lines.append(f"| {row_label} | " + " | ".join(_fmt(c) for c in cells) + " |")
  for label, key in _PROBE_ROWS:
    if any(r.get("probe") for r in results):
      lines.append(f"| {label} | " + " | ".join(_fmt((r.get("probe") or {}).get(key)) for r in results) + " |")
  return "\n".join(lines)


def family_table(results: Sequence[Mapping[str, Any]], benchmark: str, key: str = "spr_at_1") -> str:
  """One metric (rates in %) per family (`groups["family"]`) of a benchmark, a column per run; "" without
  families."""
  families = list(dict.fromkeys(f for r in results for f in r["benchmarks"].get(benchmark, {}).get("groups", {})
                                .get("family", {})))
  if not families:
    return ""
  lines = [f"| {benchmark} family: {key} % | " + " | ".join(r["run"] for r in results) + " |",
           "|---|" + "---|" * len(results)]
  for fam in families:
    cells = [r["benchmarks"].get(benchmark, {}).get("groups", {}).get("family", {}).get(fam, {}).get(key)
             for r in results]
    lines.append(f"| {fam} | " + " | ".join(_fmt(c) for c in cells) + " |")
  return "\n".join(lines)


def pooled_per_cwe(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """Per-CWE counts summed over the security benchmarks of one run."""
  out: dict[str, dict[str, Any]] = {}
  for name in SECURITY_BENCHMARKS:
    for cwe, row in result["benchmarks"].get(name, {}).get("per_cwe", {}).items():
      acc = out.setdefault(cwe, {"n": 0, "parseable": 0, "vulnerable": 0, "seen": row["seen"]})
      for k in ("n", "parseable", "vulnerable"):
        acc[k] += row[k]
  return dict(sorted(out.items()))


def plot_per_cwe(results: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
  """Grouped bars: vulnerable share of parseable programs per CWE (the security benchmarks pooled, each under its
  headline judge), one bar per run; unseen CWEs are marked with '*'."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  pooled = [pooled_per_cwe(r) for r in results]
  cwes = sorted({c for p in pooled for c in p})
  fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(cwes) * max(1, len(results)) ** 0.5), 4.0))
  width = 0.8 / max(1, len(results))
  x = np.arange(len(cwes))
  for j, (r, p) in enumerate(zip(results, pooled)):
    rates = [100 * p[c]["vulnerable"] / p[c]["parseable"] if c in p and p[c]["parseable"] else 0.0 for c in cwes]
    ax.bar(x + (j - (len(results) - 1) / 2) * width, rates, width, label=r["run"])
  seen = {c: next((p[c]["seen"] for p in pooled if c in p), None) for c in cwes}
  ax.set_xticks(x, [c.replace("CWE-", "") + ("*" if seen[c] is False else "") for c in cwes], rotation=60)
  ax.set_xlabel("CWE (* = unseen in training)")
  ax.set_ylabel("vulnerable % of parseable")
  ax.set_ylim(0, 100)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  names = [n for n in SECURITY_BENCHMARKS if any(n in r["benchmarks"] for r in results)]
  ax.set_title(f"Vulnerable programs per CWE ({' + '.join(names)})")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_json(result: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes a results dict (atomically)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
  """A results file written by `write_json`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"results file {os.fspath(path)!r} does not exist")
  with open(path, encoding="utf-8") as f:
    return json.load(f)
