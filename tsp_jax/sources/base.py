"""The interface of a pair source: what the trainer asks of each mode."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from tsp_jax import config as config_lib
from tsp_jax import data, pairs
from tsp_jax.model import llama
from tsp_jax.verify import VerifierPool


class PairSource:
  """Builds a round's training pairs (and, optionally, held-out dev pairs) from the current model.

  A source that labels branches uses `self.pool`: the `pool` it was given, or one of its own, started on first
  use and closed with the source (a context manager).
  """

  def __init__(self, config: ml_collections.ConfigDict, tok, train_data: data.TrainData, pool=None):
    self.config = config
    self.tok = tok
    self.data = train_data
    self.length = config_lib.train_length(config)  # tokens per padded training sequence
    self._pool, self._own_pool = pool, pool is None

  @property
  def pool(self):
    """The verifier pool (`verify(tasks, programs) -> verdicts`)."""
    if self._pool is None:
      self._pool = VerifierPool(num_workers=self.config.verify.num_workers, memo_size=self.config.verify.memo_size)
    return self._pool

  def round_window(self, items: list, r: int, n: int) -> list:
    """Round r's `n` of `items` (a seeded order) under `config.round_prompts` (`data.round_window`)."""
    return data.round_window(items, r, n, self.config.round_prompts == "fresh")

  def round_pairs(self, params: llama.Params, cfg: llama.LlamaConfig, rng: jax.Array, r: int
                  ) -> tuple[pairs.PairSet, dict[str, Any]]:
    """Round r's pairs (reference log-probs not yet set) and counts for the log."""
    raise NotImplementedError

  def dev_pairs(self, params: llama.Params, cfg: llama.LlamaConfig, rng: jax.Array
                ) -> tuple[pairs.PairSet, dict[str, Any]] | None:
    """Pairs on the dev split built like the round's (for dev metrics before/after training), or None."""
    del params, cfg, rng
    return None

  def close(self) -> None:
    """Closes the pool the source started, if any."""
    if self._own_pool and self._pool is not None:
      self._pool.close()
      self._pool = None

  def __enter__(self) -> PairSource:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
