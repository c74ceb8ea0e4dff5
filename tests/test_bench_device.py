"""The device check (`python -m tsp_jax.bench.device`) at toy sizes on CPU: every section runs and reports finite
figures into the table and the JSON; a failing section is recorded and the others still run; its import chain
holds nothing the device image lacks; its small-model figures are configs/experiment.py's."""

import json
import os
import subprocess
import sys

import pytest

from configs import experiment
from tsp_jax.bench import device

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSENT_ON_DEVICE = ("grain", "ml_collections", "bandit", "semgrep", "tensorboardX")


def test_smoke_writes_every_section_with_finite_figures(tmp_path):
  report = device.run(device.SMOKE, str(tmp_path), smoke=True)
  assert list(report["sections"]) == list(device.SECTIONS)
  assert device.finite_figures(report), json.dumps(report["sections"], indent=1, default=str)[:3000]
  saved = json.loads((tmp_path / "device.json").read_text())
  assert saved["sections"].keys() == report["sections"].keys() and saved["smoke"] is True
  text = (tmp_path / "device.md").read_text()
  for name, (key, _) in device.GOALS.items():
    assert f"| {name} | {key} |" in text
  for name in device.SECTIONS:
    assert f"| {name} | wall_s |" in text
  s = report["sections"]
  assert s["decode"]["tokens_per_s"] > 0 and 0 < s["decode"]["roofline_fraction"]
  assert s["tree_search"]["ratio_vs_hf"] > 0 and 0 < s["train_step"]["packed_mfu"]
  assert s["pretrain"]["cpu_step_s"] > 0


def test_a_failing_section_is_recorded_and_the_others_run(tmp_path, monkeypatch):
  def broken(s):
    raise RuntimeError("torch sees no CUDA device")
  monkeypatch.setitem(device.SECTIONS, "tree_search", broken)
  monkeypatch.setitem(device.SECTIONS, "decode", lambda s: {"tokens_per_s": 1.0})
  report = device.run(device.SMOKE, str(tmp_path), smoke=True, sections=("decode", "tree_search"))
  assert report["sections"]["tree_search"]["error"] == "RuntimeError: torch sees no CUDA device"
  assert report["sections"]["decode"]["tokens_per_s"] == 1.0 and not device.finite_figures(report)
  assert "| tree_search | **error** | RuntimeError: torch sees no CUDA device |" in (tmp_path / "device.md").read_text()


def test_imports_nothing_the_device_image_lacks():
  code = ("import sys, tsp_jax.bench.device; "
          f"print([m for m in {ABSENT_ON_DEVICE!r} if m in sys.modules])")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120).stdout
  assert out.strip() == "[]"


def test_pretrain_figures_are_the_experiments():
  c = experiment.get_config("synth")
  pre = c.stages[experiment.PRETRAIN]
  dims = {k: v for k, v in c.model_dims.items() if v is not None}
  assert {**dims, "vocab_size": c.tokenizer_vocab_size} == device.PRETRAIN_MODEL
  s = device.Settings()
  assert (s.pretrain_rows, s.pretrain_len) == (pre.batch_size, pre.search.max_prefix + pre.search.max_new_tokens)
  assert dict(s.pretrain_model) == device.PRETRAIN_MODEL


@pytest.mark.parametrize("args, msg", [(["--out=unused", "--sections=decode,fast"], "unknown sections"), ([], "--out")])
def test_cli_refuses_bad_flags(args, msg):
  proc = subprocess.run([sys.executable, "-m", "tsp_jax.bench.device", *args], cwd=REPO, capture_output=True,
                        text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
  assert proc.returncode != 0 and msg in proc.stderr


def test_device_check_script_runs_the_bench():
  path = os.path.join(REPO, "launch", "device_check.sh")
  subprocess.run(["bash", "-n", path], check=True)
  text = open(path, encoding="utf-8").read()
  assert '-m tsp_jax.bench.device --out="$OUT_DIR"' in text and "pip install" not in text
