"""The package stands without the checkout: `pip install .` and a config file from any directory."""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_installed_package_runs_a_config_from_any_directory(tmp_path):
  src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
  shutil.copytree(os.path.join(REPO, "tsp_jax"), src / "tsp_jax", ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "requirements.txt", "README.md"):
    shutil.copy(os.path.join(REPO, name), src / name)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                  str(site), str(src)], check=True, capture_output=True, timeout=300)
  assert (site / "tsp_jax" / "verify" / "rules" / "cwe089_sql_injection.yaml").exists()  # package data
  # A config of one's own: configs/base.py imports only ml_collections and the package.
  elsewhere.mkdir()
  text = open(os.path.join(REPO, "configs", "base.py"), encoding="utf-8").read()
  get_config = '\n\ndef get_config(variant=None):\n  return base_config("tsp", variant)\n'
  (elsewhere / "my_config.py").write_text(text + get_config)
  env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  where = subprocess.run([sys.executable, "-c", "import importlib.util, tsp_jax; print(tsp_jax.__file__); "
                          "print(importlib.util.find_spec('configs'))"], cwd=elsewhere, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
  assert where == [str(site / "tsp_jax" / "__init__.py"), "None"]  # the installed copy; no configs/ in reach
  out = subprocess.run([sys.executable, "-m", "tsp_jax.plan", f"--config={elsewhere / 'my_config.py'}:tiny",
                        "--tpu=v5p-8"], cwd=elsewhere, env=env, check=True, capture_output=True, text=True,
                       timeout=300).stdout
  assert "| tiny | v5p-8 (4, 4/1/1) |" in out
