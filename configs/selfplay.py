"""Trainer config, mode `selfplay`: `--config=configs/selfplay.py:tiny` or `:codellama_7b` (see configs/base.py)."""

from configs import base


def get_config(variant: str | None = None):
  """The `selfplay` config of a variant."""
  return base.base_config("selfplay", variant)
