"""Test-wide JAX settings: 8 fake CPU devices (sharding tests), strict rank promotion, fp32 matmuls."""

import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must come after XLA_FLAGS)

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "sven_train_sample.jsonl")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """9 train and 3 dev records of the training-data fixture, laid out like ../shared/data."""
  root = tmp_path_factory.mktemp("data")
  lines = open(FIXTURE, encoding="utf-8").read().splitlines()
  (root / "sven").mkdir()
  (root / "sven" / "train.jsonl").write_text("\n".join(lines[:9]) + "\n")
  (root / "sven" / "dev.jsonl").write_text("\n".join(lines[9:]) + "\n")
  return str(root)
