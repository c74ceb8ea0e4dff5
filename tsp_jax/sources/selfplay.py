"""Sequence-level self-play (SPIN): the golden function against one whole sample of the model from the prompt."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from tsp_jax import config as config_lib
from tsp_jax import data, pairs
from tsp_jax.model import llama
from tsp_jax.search import batch
from tsp_jax.sources.base import PairSource


class SelfPlayPairs(PairSource):
  """(golden, sample) per record with a golden function (`records_per_round` of them per round: the round's
  `data.round_window` of a seeded order, as TSP's nodes); the masks score both from where they part."""

  def __init__(self, config, tok, train_data: data.TrainData, pool=None):
    super().__init__(config, tok, train_data, pool)
    goldens = [r for r in train_data.records if r.golden is not None]
    self.records = data.take(data.shuffled(goldens, config.seed), None) if goldens else []

  def round_pairs(self, params: llama.Params, cfg: llama.LlamaConfig, rng: jax.Array, r: int
                  ) -> tuple[pairs.PairSet, dict[str, Any]]:
    tok, s = self.tok, self.config.search
    items = []  # (prompt ids [Lp], prompt + golden ids)
    for rec in self.round_window(self.records, r, self.config.records_per_round):
      p = tok.encode(data.model_prompt(rec), bos=True)[-s.max_prefix:]
      items.append((np.asarray(p, np.int32), np.asarray(p + tok.encode(rec.golden, bos=False) + [tok.eos_id],
                                                        np.int32)))
    scfg = config_lib.search_config(self.config, (tok.eos_id,), policy="none", slots_per_prefix=1)
    samples = batch.sample_branches(params, cfg, [p for p, _ in items], scfg, rng, s.prefixes_per_batch,
                                    "selfplay")
    plist = [(golden, np.concatenate([p, smp.ids[0]]), pairs.KIND_SEQUENCE)
             for (p, golden), smp in zip(items, samples)]
    return pairs.pair_arrays(plist, [len(p) for p, _ in items], self.length, tok.pad_id), {"pairs": len(plist)}
