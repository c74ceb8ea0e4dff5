"""Seeds: mean ± std per run and subset, None handling, paired differences, the Markdown table, the plot."""

import json
import math

import pytest

from tsp_jax.evaluation import seeds


def _m(spr=None, secure=None, parse=1.0, func=0.5):
  """A metrics dict with the given rates (counts are placeholders: aggregation reads the rates only)."""
  return {"n": 10, "parseable": 10, "flagged": 0, "with_tests": 10, "functional": 5, "secure_pass": 5, "timeout": 0,
          "crashed": 0, "parse_rate": parse, "spr_at_1": spr, "func_pass_at_1": func, "secure_pass_at_1": secure}


def _result(run, spr, secure, subsets):
  """A results dict with a grouped "synth" benchmark and an ungrouped "humaneval" one."""
  synth = {"metrics": _m(spr, secure), "seen": _m(), "unseen": _m(), "per_cwe": {}, "skipped": {}, "items": [],
           "groups": {"subset": subsets, "family": {"sql_injection": _m(spr)}}}
  return {"run": run, "benchmarks": {"synth": synth, "humaneval": {"metrics": _m(func=0.2), "skipped": {}}}}


# "all" SPR@1 per seed: sft 0.5/0.6/0.7, tsp 0.8/0.9/0.85, tsp_all_rejected 0.6/0.5/0.8
# "all" secure-pass@1 per seed: sft 0.3/0.3/0.3, tsp 0.4/None/0.6, tsp_all_rejected None/None/0.2
# "new_template" appears only in tsp of seed 2.
SPR = {"sft": (0.5, 0.6, 0.7), "tsp": (0.8, 0.9, 0.85), "tsp_all_rejected": (0.6, 0.5, 0.8)}
SECURE = {"sft": (0.3, 0.3, 0.3), "tsp": (0.4, None, 0.6), "tsp_all_rejected": (None, None, 0.2)}


def _per_seed():
  out = []
  for i in range(3):
    results = []
    for run in SPR:
      subsets = {"seen": _m(spr=0.1 * (i + 1)), "unseen_family": _m(spr=0.2)}
      if run == "tsp" and i == 2:
        subsets["new_template"] = _m(spr=0.4)
      results.append(_result(run, SPR[run][i], SECURE[run][i], subsets))
    out.append(results)
  return out


def test_aggregate_mean_std_and_none():
  agg = seeds.aggregate(_per_seed(), "synth")
  assert agg["runs"] == ["sft", "tsp", "tsp_all_rejected"] and agg["seeds"] == 3
  assert agg["subsets"] == ["all", "seen", "unseen_family", "new_template"]
  cell = agg["cells"]["sft"]["all"]["spr_at_1"]
  assert cell["values"] == [0.5, 0.6, 0.7]
  assert cell["mean"] == pytest.approx(0.6) and cell["std"] == pytest.approx(0.1)
  secure = agg["cells"]["tsp"]["all"]["secure_pass_at_1"]  # the None seed is left out of mean and std
  assert secure["values"] == [0.4, None, 0.6]
  assert secure["mean"] == pytest.approx(0.5) and secure["std"] == pytest.approx(math.sqrt(0.02))
  one = agg["cells"]["tsp_all_rejected"]["all"]["secure_pass_at_1"]
  assert one["mean"] == pytest.approx(0.2) and one["std"] == 0.0
  new = agg["cells"]["sft"]["new_template"]["spr_at_1"]  # a group value this run never had
  assert new == {"mean": None, "std": None, "values": [None, None, None]}
  assert agg["cells"]["tsp"]["new_template"]["spr_at_1"]["values"] == [None, None, 0.4]
  seen = agg["cells"]["sft"]["seen"]["spr_at_1"]
  assert seen["mean"] == pytest.approx(0.2) and seen["std"] == pytest.approx(0.1)
  assert json.loads(json.dumps(agg)) == agg
  assert seeds.aggregate(_per_seed(), "synth", group="family")["subsets"] == ["all", "sql_injection"]
  assert seeds.aggregate(_per_seed(), "humaneval")["subsets"] == ["all"]


def test_aggregate_errors():
  with pytest.raises(ValueError, match="at least one seed"):
    seeds.aggregate([], "synth")
  swapped = _per_seed()
  swapped[1] = swapped[1][::-1]
  with pytest.raises(ValueError, match="seed 1 has runs"):
    seeds.aggregate(swapped, "synth")
  missing = _per_seed()
  del missing[2][0]["benchmarks"]["synth"]
  with pytest.raises(ValueError, match="'synth' is missing from run 'sft' of seed 2"):
    seeds.aggregate(missing, "synth")


def test_differences():
  agg = seeds.aggregate(_per_seed(), "synth")
  tsp, rejected = seeds.differences(agg, "spr_at_1", "sft", "all")
  # tsp - sft = 0.3, 0.3, 0.15: mean 0.25, std sqrt(0.0075) ~ 0.087 < 0.25
  assert tsp["run"] == "tsp" and tsp["seeds"] == [0, 1, 2]
  assert tsp["diffs"] == pytest.approx([0.3, 0.3, 0.15])
  assert tsp["mean"] == pytest.approx(0.25) and tsp["std"] == pytest.approx(math.sqrt(0.0075))
  assert tsp["exceeds_spread"] is True
  # tsp_all_rejected - sft = 0.1, -0.1, 0.1: mean 0.033, std sqrt(0.04/3) ~ 0.115 > 0.033
  assert rejected["diffs"] == pytest.approx([0.1, -0.1, 0.1])
  assert rejected["mean"] == pytest.approx(0.1 / 3) and rejected["std"] == pytest.approx(math.sqrt(0.04 / 3))
  assert rejected["exceeds_spread"] is False
  # secure-pass: only the seeds where both are defined are paired
  tsp, rejected = seeds.differences(agg, "secure_pass_at_1", "sft", "all")
  assert tsp["seeds"] == [0, 2] and tsp["diffs"] == pytest.approx([0.1, 0.3])
  assert tsp["mean"] == pytest.approx(0.2) and tsp["exceeds_spread"] is True
  assert rejected["seeds"] == [2] and rejected["exceeds_spread"] is False  # one paired seed: no spread
  with pytest.raises(ValueError, match="baseline run 'nope'"):
    seeds.differences(agg, "spr_at_1", "nope", "all")


def test_table_and_plot(tmp_path):
  agg = seeds.aggregate(_per_seed(), "synth")
  table = seeds.seeds_table(agg)
  assert "3 seeds" in table.splitlines()[0]
  assert "| run | subset | parse % | func pass@1 % | SPR@1 % | secure-pass@1 % |" in table
  rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
  assert len(rows) == 3 * 4
  assert [r.split(" | ")[:2] for r in rows[:4]] == [["| sft", s] for s in agg["subsets"]]
  assert "| sft | all | 100.0 ± 0.0 (100.0, 100.0, 100.0) | 50.0 ± 0.0 (50.0, 50.0, 50.0) | " \
         "60.0 ± 10.0 (50.0, 60.0, 70.0) |" in table
  assert "50.0 ± 14.1 (40.0, -, 60.0)" in table
  assert "| sft | new_template | - | - | - | - |" in table
  path = tmp_path / "plots" / "seeds.png"
  seeds.plot_seeds(agg, path)
  assert path.stat().st_size > 0 and path.read_bytes()[:4] == b"\x89PNG"
