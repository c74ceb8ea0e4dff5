"""Reports: one run's Markdown table, runs side by side, the per-CWE plot, results JSON round trip."""

from tests.evaluation.helpers import StubPool, item
from tsp_jax.evaluation import report, runs


def test_reports_side_by_side_and_plot(tmp_path):
  items = {"cweval": [item("a", "CWE-078", secure="ok", vulnerable="vuln"),
                      item("b", "CWE-918", seen=False, secure="ok", vulnerable="ok")]}
  results = [runs.evaluate_reference(items, kind, StubPool()) for kind in ("secure", "vulnerable")]
  path = tmp_path / "r.json"
  report.write_json(results[1], path)
  assert report.read_json(path)["benchmarks"]["cweval"]["metrics"]["spr_at_1"] == 0.5
  table = report.markdown_table(results[0])
  assert "| cweval | unseen CWEs | 1 |" in table and "| cweval | CWE-918 | no | 1 | 1 | 0 | 1/1 |" in table
  assert "security judged by cweval: CWEval's executable security tests" in table
  compare = report.compare_table(results)
  assert "| metric | reference_secure | reference_vulnerable |" in compare
  assert "| cweval evaluated/skipped | 2/0 | 2/0 |" in compare
  assert "| cweval all SPR@1 % | 100.0 | 50.0 |" in compare
  report.plot_per_cwe(results, tmp_path / "plot.png")
  assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
