"""SFT: prompt + golden function (and, for small-model pre-training, the vulnerable versions too)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from tsp_jax import data, pairs
from tsp_jax.model import llama
from tsp_jax.sources.base import PairSource


class SftExamples(PairSource):
  """Every record's prompt + golden function as a sequence (`pairs.sequence_set`, or bin-packed rows with
  `config.sft_packed`: `pairs.packed_sequence_set`); the same every round."""

  def round_pairs(self, params: llama.Params, cfg: llama.LlamaConfig, rng: jax.Array, r: int
                  ) -> tuple[pairs.PairSet, dict[str, Any]]:
    del params, cfg, rng, r
    tok = self.tok
    seqs, prompt_lens = [], []
    for prompt, golden in data.golden_texts(self.data.records, self.config.sft_include_vulnerable):
      p = tok.encode(prompt, bos=True)
      seqs.append(np.asarray((p + tok.encode(golden, bos=False) + [tok.eos_id])[:self.length], np.int32))
      prompt_lens.append(1 if self.config.sft_score_prompt else len(p))  # 1: every token after BOS
    if self.config.sft_packed:
      ps = pairs.packed_sequence_set(seqs, prompt_lens, self.length, tok.pad_id, self.config.seed)
    else:
      ps = pairs.sequence_set(seqs, prompt_lens, self.length, tok.pad_id)
    return ps, {"examples": len(seqs), "rows": len(ps)}
