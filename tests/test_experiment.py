"""The small-model experiment: stage configs, one end-to-end run at toy sizes, and resumption."""

import json
import os

import pytest

from configs import experiment as experiment_configs
from tsp_jax import config as config_lib
from tsp_jax import experiment

EVAL_DIR = config_lib.shared_dir("eval")
ARM_NODES = 4


def toy_config(data_dir: str, **overrides):
  c = experiment_configs.get_config("smoke")
  c.unlock()
  c.data_dir, c.eval_dir = data_dir, EVAL_DIR
  c.arms = ("sft", "tsp")
  c.pretrain_steps, c.arm_steps = 6, 3  # references: every stage follows
  for arm in experiment_configs.ARMS:
    c.stages[arm].nodes_per_round, c.stages[arm].dev_nodes = ARM_NODES, 2
  c.tokenizer_vocab_size = 700
  c.eval.benchmarks, c.eval.limit, c.eval.probe_nodes, c.eval.max_new_tokens = ("cweval",), 2, 2, 16
  for key, value in overrides.items():
    c[key] = value
  return c


def test_stage_configs_share_the_start_and_the_budget():
  c = experiment_configs.get_config("tiny")
  c.seed, c.arm_steps = 3, 77  # the shared settings are references: one override reaches every stage
  pre = experiment.stage_config(c, experiment.PRETRAIN, "/runs")
  assert pre.sft_include_vulnerable and not pre.init_checkpoint and pre.optim.steps == c.pretrain_steps
  arms = {mode: experiment.stage_config(c, mode, "/runs") for mode in c.arms}
  assert {a.mode for a in arms.values()} == set(config_lib.MODES)
  for a in arms.values():
    config_lib.validate_trainer(a)
    assert a.init_checkpoint == "/runs/pretrain/export" and not a.sft_include_vulnerable
    assert (a.optim.steps, a.checkpoint_every, a.batch_size, a.seed) == (77, 77 // 4, c.batch_size, 3)
    assert a.optim.lr == arms["sft"].optim.lr and a.search.to_dict() == arms["sft"].search.to_dict()
    assert a.model.overrides.to_dict() == pre.model.overrides.to_dict() == c.model_dims.to_dict()
    assert config_lib.model_config(pre, platform="cpu").dim == c.model_dims.dim == 128


def test_bad_experiment_configs(data_dir, tmp_path):
  with pytest.raises(ValueError, match="arms"):
    experiment.run(toy_config(data_dir, arms=("sft", "ppo")), str(tmp_path))
  with pytest.raises(ValueError, match="eval_dir"):
    experiment.run(toy_config(data_dir, eval_dir=str(tmp_path / "missing")), str(tmp_path))
  with pytest.raises(ValueError, match="unknown experiment variant"):
    experiment_configs.get_config("huge")


@pytest.mark.skipif(not EVAL_DIR, reason="../shared/eval is not present")
def test_experiment_end_to_end_then_resumes_without_redoing_work(data_dir, tmp_path):
  config, workdir = toy_config(data_dir), str(tmp_path / "exp")
  out = experiment.run(config, workdir)
  runs = [r["run"] for r in out["results"]]
  assert runs == ["pretrain", "sft", "tsp"]
  for stage in runs:
    done = json.load(open(os.path.join(workdir, stage, "done.json"), encoding="utf-8"))
    assert done["init_checkpoint"] == ("" if stage == "pretrain" else experiment.export_dir(workdir, "pretrain"))
    steps = [r for r in map(json.loads, open(os.path.join(workdir, stage, "metrics.jsonl"), encoding="utf-8"))
             if r.get("event") == "train"]
    assert len(steps) == (config.pretrain_steps if stage == "pretrain" else config.arm_steps)
  tsp_round = [r for r in map(json.loads, open(os.path.join(workdir, "tsp", "metrics.jsonl"), encoding="utf-8"))
               if r.get("event") == "round_data"][0]
  assert tsp_round["nodes"] == ARM_NODES and sum(
      v for k, v in tsp_round.items() if k.startswith("label_")) > 0  # branches went through the verifier
  for result in out["results"]:
    bench = result["benchmarks"]["cweval"]
    assert len(bench["items"]) == config.eval.limit
    assert result["probe"]["nodes"] == config.eval.probe_nodes
  assert os.path.getsize(os.path.join(workdir, "per_cwe.png")) > 0
  table = open(os.path.join(workdir, "results.md"), encoding="utf-8").read()
  assert "| metric | pretrain | sft | tsp |" in table and "SPR@1" in table

  stamps = {p: os.path.getmtime(os.path.join(workdir, "eval", p)) for p in os.listdir(os.path.join(workdir, "eval"))}
  again = experiment.run(config, workdir)  # every stage done: nothing is trained or evaluated again
  assert [r["run"] for r in again["results"]] == runs
  assert again["table"].split("| metric")[1] == out["table"].split("| metric")[1]
  assert stamps == {p: os.path.getmtime(os.path.join(workdir, "eval", p)) for p in stamps}
  assert "stage seconds (this invocation): -" in again["table"]
