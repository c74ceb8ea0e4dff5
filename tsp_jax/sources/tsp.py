"""Tree-like Self-Play: trees at risk nodes and verifier-localized nodes in rollouts, labelled by the verifier.

A round: `root_k` / `entropy` trees from the risk nodes' prefixes -> the verifier pool labels every branch ->
node-level pairs (`pairs.node_pairs`), pairs at decision forks inside entropy trees (`pairs.subtree_pairs`), and
pairs at verifier-localized nodes in rollouts from the prompts of records without a vulnerable twin
(`pairs.localized_pairs`). With `verify.labels="all_rejected"` (an ablation: the paper's public code) no branch
is verified: every one is paired, as rejected, against the golden continuation, and there are no rollouts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from tsp_jax import config as config_lib
from tsp_jax import data, pairs
from tsp_jax.model import llama
from tsp_jax.search import batch
from tsp_jax.sources import labels as labels_lib
from tsp_jax.sources.base import PairSource
from tsp_jax.verify import Task
from tsp_jax.verify import types as verify_types

DEV_STREAM, ROLLOUT_STREAM = 1 << 20, 1 << 21  # rng streams of the dev trees and the rollouts within a round


class TreePairs(PairSource):
  """The TSP source."""

  def __init__(self, config, tok, train_data: data.TrainData, pool=None):
    pairs.check_nodes_at(config.nodes_at)  # before any tree is sampled
    super().__init__(config, tok, train_data, pool)
    self.verified = config.verify.labels == "verifier"
    self.record_tasks = {r.id: r.task for r in train_data.records + train_data.dev_records if r.task is not None}
    self.rollouts: list[data.Record] = []
    candidates = data.rollout_records(train_data.records)
    if self.verified and config.rollout_records and candidates:
      self.rollouts = data.take(data.shuffled(candidates, config.seed),
                                None if config.rollout_records < 0 else config.rollout_records)

  def round_pairs(self, params: llama.Params, cfg: llama.LlamaConfig, rng: jax.Array, r: int
                  ) -> tuple[pairs.PairSet, dict[str, Any]]:
    nodes = self.round_window(self.data.nodes, r, self.config.nodes_per_round)
    plist, prefix_lens, counts = self._node_pairs(params, cfg, nodes, rng)
    if self.rollouts:
      found, lens, rollout_counts = self._rollout_pairs(params, cfg, jax.random.fold_in(rng, ROLLOUT_STREAM))
      plist += found
      prefix_lens += lens
      counts.update(rollout_counts)
    ps = pairs.pair_arrays(plist, prefix_lens, self.length, self.tok.pad_id)
    counts.update({f"pairs_{k}": v for k, v in ps.counts().items()})
    return ps, counts

  def dev_pairs(self, params: llama.Params, cfg: llama.LlamaConfig, rng: jax.Array
                ) -> tuple[pairs.PairSet, dict[str, Any]] | None:
    if not self.data.dev_nodes:
      return None
    plist, prefix_lens, counts = self._node_pairs(params, cfg, self.data.dev_nodes,
                                                  jax.random.fold_in(rng, DEV_STREAM))
    ps = pairs.pair_arrays(plist, prefix_lens, self.length, self.tok.pad_id)
    counts.update({f"pairs_{k}": v for k, v in ps.counts().items()})
    return ps, counts

  def _sample(self, params, cfg, prompts: Sequence[np.ndarray], rng: jax.Array, desc: str) -> list[batch.Branches]:
    scfg = config_lib.search_config(self.config, (self.tok.eos_id,))
    return batch.sample_branches(params, cfg, prompts, scfg, rng, self.config.search.prefixes_per_batch, desc)

  def _node_pairs(self, params, cfg, nodes: Sequence[data.Node], rng: jax.Array
                  ) -> tuple[list, list[int], dict[str, Any]]:
    """Trees at `nodes`: node-level pairs against the golden continuation and subtree pairs at forks."""
    c, s = self.config, self.config.search
    prompts = [p for n in nodes if (p := pairs.tokenize_node(self.tok, n, s.max_prefix, s.max_new_tokens,
                                                                   c.nodes_at))]
    trees = self._sample(params, cfg, [p.prefix_ids for p in prompts], rng, "trees")
    t0 = time.time()
    if self.verified:
      labels = labels_lib.label_node_branches(self.pool, self.tok, prompts, [t.ids for t in trees], c.verify.strict,
                                              self.record_tasks)
    else:
      labels = [[pairs.VULNERABLE] * len(t.ids) for t in trees]
    verify_s = time.time() - t0
    plist, prefix_lens = [], []
    for prompt, t, labs in zip(prompts, trees, labels):
      found = pairs.node_pairs(prompt, t.ids, labs, c.max_pairs_per_node)
      forks = pairs.subtree_pairs(t.parent, t.fork_pos, list(range(len(t.ids))), dict(enumerate(labs)))
      found += [(np.concatenate([prompt.prefix_ids, t.ids[a]]), np.concatenate([prompt.prefix_ids, t.ids[b]]),
                 pairs.KIND_SUBTREE) for a, b in forks[:c.max_pairs_per_node]]
      plist += found
      prefix_lens += [len(prompt.prefix_ids)] * len(found)
    flat = [lab for labs in labels for lab in labs]
    counts = {"nodes": len(prompts), "boundary_skipped": len(nodes) - len(prompts), "branches": len(flat),
              "verify_s": verify_s, **labels_lib.label_counts(flat if self.verified else [], "label_"),
              "unverified": 0 if self.verified else len(flat),
              "nodes_secure_and_vulnerable": sum(pairs.SECURE in labs and pairs.VULNERABLE in labs
                                                 for labs in labels) if self.verified else 0}
    return plist, prefix_lens, counts

  def _rollout_pairs(self, params, cfg, rng: jax.Array) -> tuple[list, list[int], dict[str, Any]]:
    """Pairs at verifier-localized nodes in rollouts from the prompts of records without a vulnerable twin.

    Each prompt gets a tree (the round's policy); the verifier labels the leaves with the record's own tests
    where it has them (CodeGuard+ unit tests) and the static composite; `pairs.localized_pairs` pairs secure
    leaves (and the golden function) with vulnerable ones that part from them at or before the first finding.
    """
    tok, s = self.tok, self.config.search
    mode = verify_types.MODE_STRICT if self.config.verify.strict else verify_types.MODE_CWE
    prompts, goldens, jobs, texts = [], [], [], []
    for r in self.rollouts:
      text = data.model_prompt(r)
      p = np.asarray(tok.encode(text, bos=True), np.int32)
      if len(p) > s.max_prefix:
        continue
      prompts.append(p)
      texts.append(text)
      goldens.append(None if r.golden is None else
                     np.asarray((tok.encode(text + r.golden, bos=True) + [tok.eos_id])[len(p):][:s.max_new_tokens],
                                np.int32))
      jobs.append(dataclasses.replace(r.task or Task(id=r.id, cwe=r.cwe), mode=mode))
    counts: dict[str, Any] = {"rollout_prompts": len(prompts), "rollout_too_long": len(self.rollouts) - len(prompts)}
    if not prompts:
      return [], [], counts
    trees = self._sample(params, cfg, prompts, rng, "rollouts")
    labelled = labels_lib.verify_branches(self.pool, tok, prompts, [t.ids for t in trees], jobs, texts)
    plist, prefix_lens = [], []
    for p, golden, t, labs in zip(prompts, goldens, trees, labelled):
      found = pairs.localized_pairs(p, t.ids, [lab for lab, _ in labs], [at for _, at in labs], golden,
                                    self.config.max_pairs_per_node)
      plist += found
      prefix_lens += [len(p)] * len(found)
    counts.update(labels_lib.label_counts([lab for labs in labelled for lab, _ in labs], "rollout_"))
    return plist, prefix_lens, counts
