"""The CLI (`python -m tsp_jax.evaluate`): a reference run writes JSON + PNG and prints its table; --compare."""

import os
import subprocess
import sys

from tests.evaluation.helpers import EVAL_DIR, REPO, needs_eval
from tsp_jax.evaluation import report


@needs_eval
def test_cli_reference_run_and_compare(tmp_path):
  """`python -m tsp_jax.evaluate --reference=...` writes JSON + PNG and prints the table; --compare reads runs."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", "tsp_jax.evaluate", "--reference=secure", "--benchmarks=cweval,codeguardplus",
         "--limit=2", f"--eval_dir={EVAL_DIR}", "--num_workers=1", f"--out={tmp_path / 'secure.json'}"]
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| cweval | all | 2 | 0 | 100.0 | 100.0 | 100.0 | 100.0 | 0 | 0 |" in out.stdout, out.stdout
  assert "| codeguardplus | all | 0 | 2 |" in out.stdout  # CodeGuard+ ships no secure references: skips
  assert (tmp_path / "secure.png").read_bytes()[:4] == b"\x89PNG"
  run = report.read_json(tmp_path / "secure.json")
  assert run["benchmarks"]["codeguardplus"]["skipped"] == {"no_reference": 2}
  report.write_json({**run, "run": "other"}, tmp_path / "other.json")
  cmd = [sys.executable, "-m", "tsp_jax.evaluate", "--compare", f"--plot={tmp_path / 'cmp.png'}",
         str(tmp_path / "secure.json"), str(tmp_path / "other.json")]
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| metric | reference_secure | other |" in out.stdout
  assert "| cweval all secure-pass@1 % | 100.0 | 100.0 |" in out.stdout
  assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
