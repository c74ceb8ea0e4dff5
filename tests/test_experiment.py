"""The experiment: stage configs, a toy run of the synth experiment end to end (and its resumption), the paper's
setting from a tiny HF checkpoint on the shared data, and the seeds driver."""

import json
import math
import os
import subprocess
import sys

import pytest

from configs import experiment as experiment_configs
from tests import checkpoints
from tsp_jax import config as config_lib
from tsp_jax import experiment
from tsp_jax.evaluation import benchmarks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_DIR = config_lib.shared_dir("eval")
ARM_NODES = 4


def toy_synth_config(**overrides):
  """synth_smoke with the smallest budgets that still run every stage (2 rounds per arm)."""
  c = experiment_configs.get_config("synth_smoke")
  c.unlock()
  c.arms = ("tsp", "tsp_all_rejected")  # SFT and self-play arms: tests/test_train.py and the hf test below
  c.pretrain_steps, c.arm_steps, c.rounds = 6, 2, 2  # references: every stage follows
  c.nodes_per_round, c.records_per_round = ARM_NODES, 4
  c.synth.test_per_subset = 2
  c.eval.probe_nodes, c.eval.max_new_tokens = 1, 16
  for stage in c.stages.values():
    stage.dev_nodes = 2
  for key, value in overrides.items():
    c[key] = value
  return c


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def test_stage_configs_share_the_start_and_the_budget():
  c = experiment_configs.get_config("synth")
  c.seed, c.arm_steps = 3, 77  # the shared settings are references: one override reaches every stage
  pre = experiment.stage_config(c, experiment.PRETRAIN, "/runs")
  assert pre.sft_include_vulnerable and not pre.init_checkpoint and pre.optim.steps == c.pretrain_steps
  assert pre.train_split == "pretrain" and pre.rounds == 1 and pre.batch_size == c.pretrain_batch_size == 8
  arms = {name: experiment.stage_config(c, name, "/runs")
          for name in experiment_configs.ARMS + experiment_configs.ABLATIONS}
  assert {a.mode for a in arms.values()} == set(config_lib.MODES)
  for a in arms.values():
    config_lib.validate_trainer(a)
    assert a.init_checkpoint == "/runs/pretrain/export" and not a.sft_include_vulnerable
    assert (a.optim.steps, a.rounds, a.checkpoint_every, a.batch_size, a.seed) == (77, 2, 77 // 4, c.batch_size, 3)
    assert a.optim.lr == arms["sft"].optim.lr and a.train_split == "train"
    assert a.model.overrides.to_dict() == pre.model.overrides.to_dict() == c.model_dims.to_dict()
  differ = {name: {k: v for k, v in _flat(a.to_dict()).items() if v != _flat(arms["tsp"].to_dict()).get(k)}
            for name, a in arms.items() if name in experiment_configs.ABLATIONS}
  assert differ == {"tsp_all_rejected": {"verify.labels": "all_rejected"}, "tsp_entropy": {"search.policy": "entropy"},
                    "tsp_first_token": {"loss.first_token_weight": 3.0}}  # each ablation changes one thing
  assert config_lib.model_config(pre, platform="cpu").dim == c.model_dims.dim == 128
  hf = experiment_configs.get_config("hf")
  hf.init_checkpoint = "/ckpt"
  assert experiment.start_run(hf) == experiment.INIT and experiment.PRETRAIN not in hf.stages
  assert experiment.stage_config(hf, "tsp", "/runs").init_checkpoint == "/ckpt"
  assert experiment.stage_config(hf, "tsp", "/runs").model.preset == "codellama_7b"


def test_compilation_cache_keeps_compiled_programs_for_the_next_process(tmp_path):
  script = ("import sys, jax, jax.numpy as jnp\nfrom tsp_jax import experiment\n"
            "experiment.use_compilation_cache(sys.argv[1], min_compile_s=0.0)\n"
            "print(float(jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).sum()))\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  for cache, files in (("", 0), (str(tmp_path / "cache"), 1)):
    out = subprocess.run([sys.executable, "-c", script, cache], capture_output=True, text=True, env=env, check=True,
                         cwd=ROOT, timeout=120)
    assert abs(float(out.stdout) - 6 * math.sin(1.0)) < 1e-5
    assert len(os.listdir(cache)) >= files if cache else not (tmp_path / "cache").exists()


def test_bad_experiment_configs(tmp_path):
  with pytest.raises(ValueError, match="arms"):
    experiment.run(toy_synth_config(arms=("sft", "ppo")), str(tmp_path))
  c = toy_synth_config(tasks="shared", eval_dir=str(tmp_path / "missing"), data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="eval_dir"):
    experiment.run(c, str(tmp_path))
  with pytest.raises(ValueError, match="unknown experiment variant"):
    experiment_configs.get_config("huge")
  c = toy_synth_config()
  experiment.write_tasks(c, str(tmp_path / "tasks"))
  c.synth.train = 301
  with pytest.raises(ValueError, match="generated with"):  # a workdir's tasks are never silently replaced
    experiment.write_tasks(c, str(tmp_path / "tasks"))


def _events(workdir: str, stage: str, event: str) -> list[dict]:
  with open(os.path.join(workdir, stage, "metrics.jsonl"), encoding="utf-8") as f:
    return [r for r in map(json.loads, f) if r.get("event") == event]


def test_synth_experiment_end_to_end_then_resumes_without_redoing_work(tmp_path):
  config, workdir = toy_synth_config(), str(tmp_path / "exp")
  out = experiment.run(config, workdir)
  runs = [r["run"] for r in out["results"]]
  assert runs == ["pretrain", "tsp", "tsp_all_rejected"]
  assert os.path.exists(os.path.join(workdir, "tasks", "data", "synth", "pretrain.jsonl"))
  pre = _events(workdir, "pretrain", "data")[0]
  assert pre["records"] == config.synth.pretrain  # pre-training reads pretrain.jsonl, one solution per task
  for stage in runs:
    done = json.load(open(os.path.join(workdir, stage, "done.json"), encoding="utf-8"))
    assert done["init_checkpoint"] == ("" if stage == "pretrain" else experiment.export_dir(config, workdir,
                                                                                            "pretrain"))
    steps = _events(workdir, stage, "train")
    trained_rounds = config.rounds - len(_events(workdir, stage, "round_skipped"))  # a round without pairs
    assert len(steps) == (config.pretrain_steps if stage == "pretrain" else trained_rounds * config.arm_steps)
  verified, unverified = (_events(workdir, arm, "round_data") for arm in ("tsp", "tsp_all_rejected"))
  assert [r["round"] for r in verified] == [0, 1] == [r["round"] for r in unverified]
  for r in verified:  # every branch went through the verifier
    assert r["nodes"] == ARM_NODES and sum(v for k, v in r.items() if k.startswith("label_")) == r["branches"] > 0
  for r in unverified:  # the ablation: no verifier, every branch a rejected one
    assert r["unverified"] == r["branches"] > 0 and r["verify_s"] < 1.0
    assert sum(v for k, v in r.items() if k.startswith("label_")) == 0
    assert r["pairs_golden_vs_vulnerable"] == min(r["branches"], ARM_NODES * 8)
  n = 3 * config.synth.test_per_subset
  for result in out["results"]:
    bench = result["benchmarks"]["synth"]
    assert len(bench["items"]) == n and bench["metrics"]["n"] + sum(bench["skipped"].values()) == n
    assert set(bench["groups"]["subset"]) == {"seen", "unseen_family", "new_template"}
    assert sum(m["n"] for m in bench["groups"]["subset"].values()) == bench["metrics"]["n"]
    assert result["probe"]["nodes"] == config.eval.probe_nodes
  table = open(os.path.join(workdir, "results.md"), encoding="utf-8").read()
  assert "| metric | pretrain | tsp | tsp_all_rejected |" in table
  assert "| synth unseen_family SPR@1 % |" in table and "| synth family: spr_at_1 % |" in table
  assert "| tsp | 1 | 4 |" in table and "| tsp_all_rejected | 0 | 4 |" in table  # the rounds table
  row = next(line for line in table.splitlines() if line.startswith("| tsp_all_rejected | 0 |"))
  assert row.endswith(f"| {unverified[0]['pairs_golden_vs_vulnerable']} |")  # every pair of the round

  stamps = {p: os.path.getmtime(os.path.join(workdir, "eval", p)) for p in os.listdir(os.path.join(workdir, "eval"))}
  again = experiment.run(config, workdir)  # every stage done: nothing is trained or evaluated again
  assert [r["run"] for r in again["results"]] == runs
  assert again["table"].split("| metric")[1] == out["table"].split("| metric")[1]
  assert stamps == {p: os.path.getmtime(os.path.join(workdir, "eval", p)) for p in stamps}
  assert "stage seconds (this invocation): -" in again["table"]


@pytest.mark.skipif(not EVAL_DIR, reason="../shared/eval is not present")
def test_paper_setting_starts_from_an_hf_checkpoint(data_dir, tmp_path):
  """The `hf` variant at toy size: no pre-training, the arms from a tiny HF checkpoint on shared-layout data,
  the start (`init`) and the arms evaluated on CWEval."""
  texts = [r["prompt"] for r in map(json.loads, open(os.path.join(data_dir, "sven", "train.jsonl"),
                                                         encoding="utf-8"))]
  texts += [it.prompt for it in benchmarks.load_shared(EVAL_DIR, "cweval", "test")]
  ckpt = checkpoints.tiny_hf_checkpoint(tmp_path / "ckpt", texts)
  c = experiment_configs.get_config("hf")
  c.unlock()
  # tsp_all_rejected: a random model's short branches are all judged secure, so a verified tsp round would have
  # no pairs (an error); the unverified ablation always has them.
  c.init_checkpoint, c.data_dir, c.eval_dir, c.arms = ckpt, data_dir, EVAL_DIR, ("sft", "tsp_all_rejected")
  c.batch_size, c.max_prefix, c.max_new_tokens, c.num_workers = 2, 96, 16, 2
  c.arm_steps, c.rounds, c.nodes_per_round, c.records_per_round = 2, 1, 3, 3
  for s in c.stages.values():
    s.model.dtype, s.mesh_shape, s.optim.grad_accum, s.dev_nodes, s.rollout_records = "float32", (-1, 1, 1), 1, 2, 0
    s.search.prefixes_per_batch, s.checkpoint_every = 4, 0
  c.eval.benchmarks, c.eval.limit, c.eval.probe_nodes, c.eval.max_new_tokens, c.eval.batch_size = (
      ("cweval",), 2, 0, 16, 4)
  workdir = str(tmp_path / "exp")
  out = experiment.run(c, workdir)
  assert [r["run"] for r in out["results"]] == ["init", "sft", "tsp_all_rejected"]
  assert not os.path.exists(os.path.join(workdir, "pretrain"))
  assert out["results"][0]["checkpoint"] == os.path.abspath(ckpt)
  for arm in c.arms:
    assert json.load(open(os.path.join(workdir, arm, "done.json"), encoding="utf-8"))["init_checkpoint"] == ckpt
    assert len(_events(workdir, arm, "train")) == c.arm_steps
  assert all(len(r["benchmarks"]["cweval"]["items"]) == 2 for r in out["results"])


def test_seeds_run_the_whole_experiment_per_seed_on_one_task_set(monkeypatch, tmp_path):
  """`run_seeds` gives each seed its workdir and the shared tasks folder, then aggregates what they return."""
  calls = []

  def fake_run(config, workdir, tasks_dir):
    calls.append((config.seed, workdir, tasks_dir))
    assert {s.seed for s in config.stages.values()} == {config.seed}  # every stage trains with the run's seed
    if config.seed == 5:  # what the first seed's run leaves: its pre-trained model and that model's evaluation
      os.makedirs(os.path.join(workdir, "pretrain", "export"))
      os.makedirs(os.path.join(workdir, "eval"))
      with open(os.path.join(workdir, "eval", "pretrain.json"), "w", encoding="utf-8") as f:
        f.write("{}")
    rate = 0.5 + 0.1 * config.seed

    def result(run, shift):
      m = {"n": 10, "parse_rate": 1.0, "func_pass_at_1": 0.5, "spr_at_1": rate + shift, "secure_pass_at_1": 0.4}
      return {"run": run, "benchmarks": {"synth": {"metrics": m, "groups": {"subset": {"seen": m}}}}}
    return {"results": [result("pretrain", 0.0), result("sft", 0.0), result("tsp", 0.2)]}

  monkeypatch.setattr(experiment, "run", fake_run)
  c = toy_synth_config(arms=("sft", "tsp"))
  c.seed = 5  # the seeds are 5, 6, 7
  out = experiment.run_seeds(c, str(tmp_path), 3)
  assert calls == [(s, str(tmp_path / f"seed_{s}"), str(tmp_path / "tasks")) for s in (5, 6, 7)]
  assert c.seed == 5 and c.stages.tsp.seed == 5  # the caller's config is left as it was
  spr = out["aggregate"]["cells"]["sft"]["all"]["spr_at_1"]
  assert spr["values"] == pytest.approx([1.0, 1.1, 1.2]) and spr["mean"] == pytest.approx(1.1)
  assert "tsp +20.0 +- 0.0 *" in out["table"]  # tsp - sft is +0.2 in every seed: beyond the (zero) spread
  for s in (6, 7):  # shared_pretrain: later seeds start from the first seed's pre-trained model
    assert os.path.realpath(tmp_path / f"seed_{s}" / "pretrain") == str(tmp_path / "seed_5" / "pretrain")
    assert (tmp_path / f"seed_{s}" / "eval" / "pretrain.json").read_text() == "{}"
  for name in ("seeds.md", "seeds.json", "seeds.png"):
    assert os.path.getsize(tmp_path / name) > 0
  with pytest.raises(ValueError, match="seeds"):
    experiment.run_seeds(c, str(tmp_path), 0)
