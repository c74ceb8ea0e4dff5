"""Trainer config, mode `sft`: `--config=configs/sft.py:tiny` or `:codellama_7b` (see configs/base.py)."""

from configs import base


def get_config(variant: str | None = None):
  """The `sft` config of a variant."""
  return base.base_config("sft", variant)
