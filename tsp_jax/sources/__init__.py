"""Pair sources: one per trainer mode (SFT, sequence-level self-play, TSP) behind one interface (`PairSource`)."""

from __future__ import annotations

import ml_collections

from tsp_jax import data
from tsp_jax.sources.base import PairSource
from tsp_jax.sources.selfplay import SelfPlayPairs
from tsp_jax.sources.sft import SftExamples
from tsp_jax.sources.tsp import TreePairs

SOURCES: dict[str, type[PairSource]] = {"sft": SftExamples, "selfplay": SelfPlayPairs, "tsp": TreePairs}


def make(config: ml_collections.ConfigDict, tok, train_data: data.TrainData, pool=None) -> PairSource:
  """The pair source of `config.mode`; `pool`: the verifier pool of the sources that label branches (default:
  one of their own, started on first use and closed with the source)."""
  if config.mode not in SOURCES:
    raise ValueError(f"unknown mode {config.mode!r}; expected one of {sorted(SOURCES)}")
  return SOURCES[config.mode](config, tok, train_data, pool)
