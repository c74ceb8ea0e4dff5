"""The demo and the benchmarks follow the entry-point convention (flags defined in `_cli_main`, stray arguments
rejected), and the demo's prompt reader and data folder resolution."""

import json
import os
import subprocess
import sys

import pytest

from configs import demo as demo_config
from tsp_jax import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("tsp_jax.bench.forward", "tsp_jax.bench.search", "tsp_jax.bench.verify", "tsp_jax.demo")


def test_importing_registers_no_flags():
  code = ("from absl import app, flags; before = set(flags.FLAGS); import " + ", ".join(MODULES)
          + "; print(sorted(set(flags.FLAGS) - before))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", MODULES)
def test_stray_arguments_are_rejected(module):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-m", module, "stray"], cwd=REPO, env=env, capture_output=True, text=True)
  assert out.returncode == 1
  assert "unexpected arguments ['stray']" in out.stderr


def _write(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n")


def test_demo_prompts(tmp_path):
  _write(tmp_path / "a" / "dev.jsonl", [json.dumps({"prompt": "Add.", "signature": "def add(a, b):"}), "",
                                        json.dumps({"prompt": "Plain."})])
  _write(tmp_path / "b" / "dev.jsonl", [json.dumps({"prompt": "Third."})])
  assert demo.demo_prompts(str(tmp_path), "dev", 2) == ["# Add.\ndef add(a, b):", "Plain."]
  assert demo.demo_prompts(str(tmp_path), "dev", 10) == ["# Add.\ndef add(a, b):", "Plain.", "Third."]
  with pytest.raises(FileNotFoundError):
    demo.demo_prompts(str(tmp_path), "test", 2)


def test_demo_prompts_malformed_line_names_file_and_line(tmp_path):
  path = tmp_path / "a" / "dev.jsonl"
  _write(path, [json.dumps({"prompt": "Fine."}), "{not json"])
  with pytest.raises(ValueError, match=f"{path}:2: malformed JSONL line"):
    demo.demo_prompts(str(tmp_path), "dev", 5)


def test_demo_missing_data_dir_is_a_clear_error(tmp_path):
  config = demo_config.get_config("tiny")
  config.data_dir = str(tmp_path / "missing")
  with pytest.raises(ValueError, match="config.data_dir="):
    demo.run(config, str(tmp_path / "workdir"))
  assert not (tmp_path / "workdir").exists()
