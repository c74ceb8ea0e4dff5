"""Trainer config, mode `tsp`: `--config=configs/tsp.py:tiny` or `:codellama_7b` (see configs/base.py)."""

from configs import base


def get_config(variant: str | None = None):
  """The `tsp` config of a variant."""
  return base.base_config("tsp", variant)
