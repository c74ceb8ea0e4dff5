"""The transfer experiment (issue 17): a start pre-trained on every language, arms aligned on C/C++ pairs only,
everything evaluated on CWEval in all five languages; its toy runs end to end."""

import json
import os

import pytest

from configs import experiment as experiment_configs
from tsp_jax import config as config_lib
from tsp_jax import experiment

XLANG = config_lib.shared_dir("xlang")
needs_xlang = pytest.mark.skipif(not (XLANG and config_lib.shared_dir("eval")), reason="no ../shared/xlang")


def test_transfer_stages_align_on_c_and_cpp_and_evaluate_every_language():
  c = experiment_configs.get_config("transfer")
  pre = experiment.stage_config(c, experiment.PRETRAIN, "/runs")
  assert tuple(pre.languages) == experiment_configs.ALL_LANGUAGES
  for arm in c.arms:
    s = experiment.stage_config(c, arm, "/runs")
    assert tuple(s.languages) == ("c", "cpp") and s.init_checkpoint == "/runs/pretrain/export"
    config_lib.validate_trainer(s)
  assert tuple(c.eval.languages) == experiment_configs.ALL_LANGUAGES and tuple(c.eval.benchmarks) == ("cweval",)
  if XLANG:
    assert "xlang" in c.data_dir and "xlang" in c.eval_dir
  # Today's experiments read Python only.
  assert tuple(experiment_configs.get_config("tiny").stages.tsp.languages) == ("python",)
  assert tuple(experiment_configs.get_config("tiny").eval.languages) == ("python",)


@needs_xlang
def test_transfer_toy_end_to_end(tmp_path):
  c = experiment_configs.get_config("transfer_smoke")
  c.unlock()
  c.arms = ("tsp",)
  c.pretrain_steps, c.arm_steps, c.rounds, c.nodes_per_round = 4, 2, 1, 3
  c.eval.probe_nodes, c.eval.max_new_tokens = 1, 16
  for stage in c.stages.values():
    stage.dev_nodes, stage.rollout_records = 1, 0
  workdir = str(tmp_path / "exp")
  out = experiment.run(c, workdir)
  assert [r["run"] for r in out["results"]] == ["pretrain", "tsp"]
  events = [json.loads(line) for line in open(os.path.join(workdir, "tsp", "metrics.jsonl"), encoding="utf-8")]
  data_event = next(e for e in events if e.get("event") == "data")
  assert data_event["other_language"] > 0  # Python, Go and JS records left out of the arm
  rounds = [e for e in events if e.get("event") == "round_data"]
  assert rounds and rounds[0]["nodes"] + rounds[0]["boundary_skipped"] == 3
  for result in out["results"]:
    bench = result["benchmarks"]["cweval"]
    # The first task of each language; the toy context (512) skips the long instruction prompts, counted.
    assert sorted(it["language"] for it in bench["items"]) == sorted(experiment_configs.ALL_LANGUAGES)
    assert bench["metrics"]["n"] + sum(bench["skipped"].values()) == 5
    assert set(bench["by_language"]) <= set(experiment_configs.ALL_LANGUAGES)
  assert "| cweval evaluated/skipped |" in out["table"]
