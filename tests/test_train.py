"""The trainer end to end on a tiny model: SFT, self-play, kill -9 + resume, gs:// workdirs, bad configs."""

import contextlib
import dataclasses
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from etils.epath import testing as epath_testing
from tensorboardX.record_writer import masked_crc32c
from tensorboardX.proto import event_pb2

from configs import base
from tsp_jax import config as config_lib
from tsp_jax import packing, pairs, train
from tsp_jax.model import convert, llama

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=512)


def small_config(mode_: str, data_dir_: str, **overrides):
  c = base.base_config(mode_, "tiny")
  c.data_dir = data_dir_
  c.tokenizer_vocab_size = 700
  c.model.overrides.update(SMALL)
  c.search.max_prefix, c.search.max_new_tokens, c.search.prefixes_per_batch = 96, 16, 8
  c.batch_size, c.optim.epochs, c.checkpoint_every = 4, 3, 5
  c.nodes_per_round, c.dev_nodes = 8, 4
  for key, value in overrides.items():
    target = c
    *path, last = key.split(".")
    for p in path:
      target = target[p]
    target[last] = value
  return c


def train_events(workdir: str, event: str = "train") -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [r for r in map(json.loads, f) if r.get("event") == event]


def test_sft_learns_and_exports(data_dir, tmp_path):
  summary = train.run(small_config("sft", data_dir, **{"optim.lr": 1e-2, "optim.epochs": 6}), str(tmp_path))
  losses = [r["loss"] for r in train_events(str(tmp_path))]
  assert len(losses) == 14  # ceil(9 examples x 6 epochs / batch 4)
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3
  cfg, params = convert.load_hf_checkpoint(summary["export"])
  assert cfg.dim == 32 and os.path.exists(os.path.join(summary["export"], "tokenizer.model"))


def test_fixed_step_budget_and_pretraining_examples(data_dir, tmp_path):
  config = small_config("sft", data_dir, **{"optim.steps": 7, "sft_include_vulnerable": True})
  ocfg, order = train.round_schedule(config, 18)
  assert len(order) == 7 and ocfg.total_steps == 7
  assert all(0 <= i < 18 for batch in order for i in batch)
  train.run(config, str(tmp_path))
  (round_data,) = train_events(str(tmp_path), "round_data")
  assert round_data["examples"] == 18  # 9 golden + 9 vulnerable functions
  assert len(train_events(str(tmp_path))) == 7


def test_tsp_round_labels_branches_with_the_verifier(data_dir, tmp_path):
  # Two records without a vulnerable twin: no risk nodes; their prompts get verifier-labelled rollouts.
  golden_only = tmp_path / "data"
  shutil.copytree(data_dir, golden_only)
  (golden_only / "extra").mkdir()
  (golden_only / "extra" / "train.jsonl").write_text("".join(json.dumps(
      {"id": f"extra/{i}", "cwe": "CWE-078", "prompt": f"Run the command line {name} safely.",
       "reference_secure": f"def {name}(cmd):\n    return subprocess.run(shlex.split(cmd), check=False)\n"}) + "\n"
      for i, name in enumerate(("run_one", "run_two"))))
  train.run(small_config("tsp", str(golden_only), **{"verify.num_workers": 1}), str(tmp_path / "run"))
  (rd,) = train_events(str(tmp_path / "run"), "round_data")
  labels = {k: rd[f"label_{k}"] for k in ("secure", "vulnerable", "broken", "drop")}
  assert sum(labels.values()) == rd["branches"] == rd["nodes"] * 4
  assert rd["rollout_prompts"] == 2
  assert sum(rd[f"rollout_{k}"] for k in ("secure", "vulnerable", "broken", "drop")) == 2 * 4
  # A random model writes broken code: pairs are golden paths against broken or vulnerable branches.
  assert labels["broken"] > 0 and rd["pairs_golden_vs_broken"] > 0
  assert rd["dev_branches"] > 0 and train_events(str(tmp_path / "run"), "dev_after")


@pytest.mark.parametrize("kernel, chunks, packed, want", [
    ("cpu", 5, True, "tree"), ("xla", 5, True, "flat"), ("cpu", 0, True, "flat"), ("cpu", 5, False, "dense")])
def test_pair_layout_tree_rows_only_where_the_kernel_computes_them(kernel, chunks, packed, want):
  c = small_config("tsp", "", packed_chunks=chunks, packed=packed)
  prefix = np.arange(1, 40, dtype=np.int32)
  plist = [(np.concatenate([prefix, np.full(n, 5, np.int32)]), np.concatenate([prefix, np.full(m, 6, np.int32)]),
            pairs.KIND_GOLDEN_VS_VULNERABLE) for n, m in ((10, 20), (13, 3))]
  ps = pairs.pair_arrays(plist, [len(prefix)] * 2, 80, pad_id=0)
  cfg = dataclasses.replace(llama.LlamaConfig.tiny(), kernel=kernel)
  run = types.SimpleNamespace(config=c, cfg=cfg)
  layout = train.pair_layout(run, ps)
  if want == "tree":  # sized to the pairs: the prefix region holds the prefix, a chunk the longest continuation
    assert layout == packing.tree_layout(ps, 5, score_cost=packing.score_cost(cfg))
    assert layout.prefix_len >= len(prefix) and layout.chunks <= 5
  else:
    assert layout == (config_lib.packed_length(c) if want == "flat" else 0)


def test_selfplay_prompts_per_round_are_a_seeded_choice(data_dir):
  from tsp_jax import data, sources
  train_data = data.load_train_data(data_dir, "train", "dev", 0)
  every = sources.make(small_config("selfplay", data_dir), None, train_data).records
  assert sorted(r.id for r in every) == sorted(r.id for r in train_data.records if r.golden is not None)

  def window(seed, r, how="fresh"):
    c = small_config("selfplay", data_dir, seed=seed, records_per_round=4)
    c.round_prompts = how
    source = sources.make(c, None, train_data)
    return [rec.id for rec in source.round_window(source.records, r, c.records_per_round)]

  assert len(window(0, 0)) == 4 and window(0, 0) == window(0, 0) and window(0, 0) != window(1, 0)
  assert not set(window(0, 0)) & set(window(0, 1))  # fresh: new prompts in round 1
  assert window(0, 1, "same") == window(0, 0, "same") == window(0, 0)


def test_selfplay_pairs_golden_against_samples(data_dir, tmp_path):
  train.run(small_config("selfplay", data_dir, records_per_round=6), str(tmp_path))
  (round_data,) = train_events(str(tmp_path), "round_data")
  assert round_data["pairs"] == 6
  steps = train_events(str(tmp_path))
  assert steps[0]["reward_accuracy"] == 0.0 and abs(steps[0]["loss"] - np.log(2)) < 1e-4  # policy == reference
  assert steps[-1]["reward_accuracy"] > 0.5 and steps[-1]["loss"] < steps[0]["loss"]


def cli(mode: str, data_dir: str, workdir: str) -> list[str]:
  flags = [f"--config.{k}={v}" for k, v in {
      "data_dir": data_dir, "tokenizer_vocab_size": 700, "batch_size": 2, "optim.epochs": 4,
      "checkpoint_every": 5, **{f"model.overrides.{k}": v for k, v in SMALL.items()}}.items()]
  return [sys.executable, "-m", "tsp_jax.train", f"--config=configs/{mode}.py:tiny", f"--workdir={workdir}"] + flags


def last_losses(workdir: str) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in train_events(workdir)}  # a re-run step keeps its last value


def test_kill_and_resume_matches_uninterrupted_run(data_dir, tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
  subprocess.run(cli("sft", data_dir, ref_dir), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
  proc = subprocess.Popen(cli("sft", data_dir, run_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while time.time() < deadline:  # kill once step 12 is logged: the last checkpoint is at step 10
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) and any(
        r["step"] >= 12 for r in train_events(run_dir)):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(r["step"] for r in train_events(run_dir))
  assert 12 <= killed_at < 18, killed_at
  subprocess.run(cli("sft", data_dir, run_dir), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
  steps = [r["step"] for r in train_events(run_dir)]
  assert steps.count(1) == 1 and any(steps.count(s) == 2 for s in range(6, killed_at + 1))  # resumed, not restarted
  ref, got = last_losses(ref_dir), last_losses(run_dir)
  assert sorted(got) == sorted(ref) == list(range(1, 19))
  np.testing.assert_allclose([got[s] for s in range(1, 19)], [ref[s] for s in range(1, 19)], atol=1e-6)


@contextlib.contextmanager
def fake_bucket(root: str):
  """etils.epath sends `gs://...` paths under the local folder `root` (local paths are left alone)."""
  def local(path):
    path = os.fspath(path)
    return os.path.join(root, path[len("gs://"):]) if path.startswith("gs://") else path

  def one(fn, path, *args, **kwargs):
    return fn(local(path), *args, **kwargs)

  def two(fn, src, dst, *args, **kwargs):
    return fn(local(src), local(dst), *args, **kwargs)

  with epath_testing.mock_epath(open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, glob=one,
                                remove=one, rmtree=one, stat=one, walk=one, rename=two, replace=two, copy=two):
    yield


def tensorboard_scalars(logdir: str) -> dict[str, dict[int, float]]:
  """tag -> {step: value} from the TFRecord event files in `logdir`, checking every record's CRCs."""
  scalars: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      header = data[pos:pos + 8]
      (length,) = struct.unpack("<Q", header)
      assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header)
      body = data[pos + 12:pos + 12 + length]
      assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc32c(body)
      pos += 16 + length
      event = event_pb2.Event.FromString(body)
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = value.simple_value
  return scalars


def test_gs_workdir_resumes_and_writes_tensorboard(data_dir, tmp_path, monkeypatch):
  bucket, cwd = tmp_path / "bucket", tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)  # a path that bypassed epath would land here as ./gs:/...
  config = small_config("sft", data_dir, **{"optim.epochs": 2, "rounds": 1,
                                            "checkpoint_dir": str(tmp_path / "ckpt")})  # orbax writes gs:// itself
  with fake_bucket(str(bucket)):
    train.run(config, "gs://runs/sft")
    first = train_events(str(bucket / "runs" / "sft"))
    config.rounds = 2  # the same workdir again: resumes after round 0 and appends to the remote metrics file
    summary = train.run(config, "gs://runs/sft")
  assert summary["export"] == "gs://runs/sft/export" and os.listdir(cwd) == []
  workdir = str(bucket / "runs" / "sft")
  for name in ("tokenizer.model", "rounds/0/pairs.npz", "rounds/1/pairs.npz", "export/config.json",
               "export/model.safetensors", "export/tokenizer.model"):
    assert os.path.isfile(os.path.join(workdir, name)), name
  convert.load_hf_checkpoint(os.path.join(workdir, "export"))
  train_records = train_events(workdir)
  assert train_records[:len(first)] == first and len(first) == 5  # ceil(9 x 2 / 4) per round
  assert [r["global_step"] for r in train_records] == list(range(1, 11))
  assert [r["round"] for r in train_records] == [0] * 5 + [1] * 5
  scalars = tensorboard_scalars(os.path.join(workdir, "tensorboard"))
  assert scalars["train/loss"] == pytest.approx({r["global_step"]: r["loss"] for r in train_records}, rel=1e-6)
  assert set(scalars["train/lr"]) == set(range(1, 11)) and "round_data/examples" in scalars
  assert "train/global_step" not in scalars and "train/round" not in scalars


@pytest.mark.parametrize("overrides, msg", [
    ({"search.k": 6}, "exceeds the slot budget"),
    ({"mode": "ppo"}, "unknown mode 'ppo'"),
    ({"data_dir": "/nonexistent/shared/data"}, "data_dir=.* is not a directory"),
    ({"loss.reference": "best"}, "loss.reference must be"),
    ({"packed_chunks": -1}, "packed_chunks and packed_length must be >= 0"),
])
def test_bad_config(data_dir, tmp_path, overrides, msg):
  with pytest.raises(ValueError, match=msg):
    train.run(small_config("tsp", data_dir, **overrides), str(tmp_path))


def test_empty_dataset_is_an_error(tmp_path):
  (tmp_path / "d" / "src").mkdir(parents=True)
  (tmp_path / "d" / "src" / "train.jsonl").write_text("{broken\n")
  (tmp_path / "d" / "src" / "dev.jsonl").write_text("")
  with pytest.raises(ValueError, match="empty dataset"):
    train.run(small_config("tsp", str(tmp_path / "d")), str(tmp_path / "w"))


class _RecordingPool:
  """A stand-in pool: records what it is asked to verify, answers every program secure."""

  def __init__(self):
    self.tasks, self.programs = [], []

  def verify(self, tasks, programs):
    from tsp_jax.verify import Verdict
    self.tasks += tasks
    self.programs += programs
    return [Verdict(status="ok", secure=True, functional=None) for _ in programs]


def test_branches_are_verified_in_the_whole_prefix_text(data_dir):
  from tsp_jax import data, pairs
  from tsp_jax.sources import labels
  from tsp_jax import tokenizer as tokenizer_lib
  records, nodes = data.load_nodes(data.split_files(data_dir, "train"))
  texts = [t for r in records for t in (data.model_prompt(r), r.golden, r.vulnerable) if t]
  tok = tokenizer_lib.train_tokenizer(texts, 700, os.path.join(data_dir, "tok_whole_prefix.model"))
  node = max(nodes, key=lambda n: len(n.prefix))
  prompt = pairs.tokenize_node(tok, node, max_prefix=16, max_new_tokens=32)  # the sampler sees the last tokens
  assert not tok.decode(prompt.prefix_ids).startswith(node.prefix[:20])
  branch = np.asarray(tok.encode(node.golden_rest, bos=False) + [tok.eos_id], np.int32)
  pool = _RecordingPool()
  assert labels.label_node_branches(pool, tok, [prompt], [[branch]], strict=False) == [[pairs.SECURE]]
  (program,), (task,) = pool.programs, pool.tasks
  assert program.startswith(node.prefix) and task.node_offset == len(node.prefix)
