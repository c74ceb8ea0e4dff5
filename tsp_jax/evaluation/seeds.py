"""Results over several seeds of one experiment: mean ± std of the rates per run and subset, paired differences
against a baseline run, a Markdown table and a bar chart with error bars and the per-seed values."""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

METRICS = (("parse %", "parse_rate"), ("func pass@1 %", "func_pass_at_1"), ("SPR@1 %", "spr_at_1"),
           ("secure-pass@1 %", "secure_pass_at_1"))
_LABELS = {key: label for label, key in METRICS}


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
  """Mean and sample std (ddof=1; 0.0 for one value, None for none) over the defined values, plus the values."""
  ok = [float(v) for v in values if v is not None]
  mean = statistics.fmean(ok) if ok else None
  std = statistics.stdev(ok) if len(ok) >= 2 else (0.0 if ok else None)
  return {"mean": mean, "std": std, "values": [None if v is None else float(v) for v in values]}


def _subset_metrics(bench: Mapping[str, Any], group: str, subset: str) -> Mapping[str, Any]:
  """The metrics dict of one subset of a benchmark ({} where the benchmark has no such group value)."""
  if subset == "all":
    return bench["metrics"]
  return (bench.get("groups") or {}).get(group, {}).get(subset, {})


def aggregate(per_seed: Sequence[Sequence[Mapping[str, Any]]], benchmark: str, group: str = "subset") -> dict:
  """Per run, subset ("all", then the values of `bench["groups"][group]` in first-seen order) and metric of
  `METRICS`: the per-seed values and their mean and std. `per_seed` holds, per seed, the results dicts of the
  same runs in the same order. The returned dict is JSON-serializable."""
  if not per_seed:
    raise ValueError("aggregate needs the results of at least one seed, got none")
  runs = [r["run"] for r in per_seed[0]]
  for i, results in enumerate(per_seed):
    names = [r["run"] for r in results]
    if names != runs:
      raise ValueError(f"seed {i} has runs {names}, seed 0 has {runs}: every seed needs the same runs in order")
    for r in results:
      if benchmark not in r["benchmarks"]:
        raise ValueError(f"benchmark {benchmark!r} is missing from run {r['run']!r} of seed {i} "
                         f"(it has {sorted(r['benchmarks'])})")
  groups = [(r["benchmarks"][benchmark].get("groups") or {}).get(group, {}) for results in per_seed for r in results]
  subsets = ["all", *dict.fromkeys(value for g in groups for value in g)]
  cells = {run: {subset: {key: _stats([_subset_metrics(results[j]["benchmarks"][benchmark], group, subset).get(key)
                                       for results in per_seed])
                          for _, key in METRICS}
                 for subset in subsets}
           for j, run in enumerate(runs)}
  return {"benchmark": benchmark, "group": group, "runs": runs, "subsets": subsets, "seeds": len(per_seed),
          "cells": cells}


def differences(agg: Mapping[str, Any], metric_key: str, baseline: str, subset: str) -> list[dict]:
  """For every run but `baseline`: the per-seed differences run - baseline over the seeds where both are
  defined, their mean and std (ddof=1), and whether |mean| exceeds that std (False with < 2 paired seeds)."""
  if baseline not in agg["runs"]:
    raise ValueError(f"baseline run {baseline!r} is not among the runs {agg['runs']}")
  if subset not in agg["subsets"]:
    raise ValueError(f"subset {subset!r} is not among the subsets {agg['subsets']}")
  if metric_key not in _LABELS:
    raise ValueError(f"metric {metric_key!r} is not one of {list(_LABELS)}")
  base = agg["cells"][baseline][subset][metric_key]["values"]
  out = []
  for run in agg["runs"]:
    if run == baseline:
      continue
    values = agg["cells"][run][subset][metric_key]["values"]
    paired = [(i, v - b) for i, (v, b) in enumerate(zip(values, base)) if v is not None and b is not None]
    diffs = [d for _, d in paired]
    stats = _stats(diffs)
    exceeds = len(diffs) >= 2 and abs(stats["mean"]) > stats["std"]
    out.append({"run": run, "baseline": baseline, "subset": subset, "metric": metric_key,
                "seeds": [i for i, _ in paired], "diffs": diffs, "mean": stats["mean"], "std": stats["std"],
                "exceeds_spread": exceeds})
  return out


def _pct(x: float | None) -> str:
  return "-" if x is None else f"{100 * x:.1f}"


def _cell(cell: Mapping[str, Any]) -> str:
  """"mean ± std (v1, v2, ...)" in percent; "-" where no seed is defined."""
  if cell["mean"] is None:
    return "-"
  return f"{_pct(cell['mean'])} ± {_pct(cell['std'])} ({', '.join(_pct(v) for v in cell['values'])})"


def seeds_table(agg: Mapping[str, Any]) -> str:
  """Markdown table of an `aggregate`: a row per run and subset, a column per metric of `METRICS`, cells
  "mean ± std (per-seed values)" in percent."""
  head = ["run", "subset", *(label for label, _ in METRICS)]
  lines = [f"{agg.get('benchmark', 'benchmark')}: {agg['seeds']} seeds (mean ± std over the seeds where defined, "
           "per-seed values in parentheses; rates in %)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for run in agg["runs"]:
    for subset in agg["subsets"]:
      cells = [run, subset, *(_cell(agg["cells"][run][subset][key]) for _, key in METRICS)]
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _pct_or_nan(x: float | None) -> float:
  return np.nan if x is None else 100 * x


def plot_seeds(agg: Mapping[str, Any], path: str | os.PathLike,
               metric_keys: Sequence[str] = ("spr_at_1", "secure_pass_at_1")) -> None:
  """A panel per metric: grouped bars (one per run) of the mean over the seeds per subset, error bars = std,
  the per-seed values as dots over each bar; saved as PNG."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  unknown = [k for k in metric_keys if k not in _LABELS]
  if unknown:
    raise ValueError(f"metrics {unknown} are not among {list(_LABELS)}")
  runs, subsets = agg["runs"], agg["subsets"]
  fig, axes = plt.subplots(1, len(metric_keys), squeeze=False,
                           figsize=(max(4.0, 0.5 * len(subsets) * len(runs) ** 0.5 + 2.0) * len(metric_keys), 4.0))
  width = 0.8 / max(1, len(runs))
  x = np.arange(len(subsets))
  for ax, key in zip(axes[0], metric_keys):
    for j, run in enumerate(runs):
      cells = [agg["cells"][run][s][key] for s in subsets]
      pos = x + (j - (len(runs) - 1) / 2) * width
      ax.bar(pos, [_pct_or_nan(c["mean"]) for c in cells], width, yerr=[_pct_or_nan(c["std"]) for c in cells],
             capsize=2, label=run)
      for p, c in zip(pos, cells):
        dots = [(p + off, 100 * v) for off, v in zip(np.linspace(-width / 4, width / 4, len(c["values"])),
                                                     c["values"]) if v is not None]
        if dots:
          ax.scatter(*zip(*dots), s=8, color="black", zorder=3)
    ax.set_xticks(x, subsets, rotation=30)
    ax.set_ylim(0, 100)
    ax.set_ylabel(_LABELS[key])
    ax.set_title(f"{agg.get('benchmark', '')} {_LABELS[key]} over {agg['seeds']} seeds".strip())
  axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
