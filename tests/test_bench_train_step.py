"""The train-step benchmark at toy size: it runs, the two paths agree, and packing forwards fewer tokens."""

import dataclasses

from tsp_jax import packing
from tsp_jax.bench import train_step
from tsp_jax.model import llama


def test_benchmark_runs_and_packed_matches_dense():
  s = train_step.Settings(dim=32, layers=1, vocab=128, nodes=4, prefix_len=24, cont_len=6, batch_size=4, steps=1)
  r = train_step.run(s)
  assert r["max_abs_loss_diff"] < 1e-4
  assert r["tokens_ratio"] > 1.5  # prefix 4x the continuation: most of a dense pair is the repeated prefix
  assert r["dense_step_s"] > 0 and r["packed_step_s"] > 0
  assert "dense / packed" in train_step.table(s, r)


def test_packed_rows_are_tree_rows_unless_a_flat_length_is_given():
  s = train_step.Settings(nodes=2, prefix_len=24, cont_len=6)
  ps = train_step.tsp_pairs(s)
  cfg = llama.LlamaConfig.tiny()
  tree = train_step.layout(s, ps, cfg)
  assert isinstance(tree, packing.TreeLayout) and tree.chunks == s.chunks
  assert tree == packing.tree_layout(ps, s.chunks, score_cost=packing.score_cost(cfg))
  assert tree.prefix_len >= max(packing.shared_prefix(ps, i) for i in range(len(ps)))
  assert train_step.layout(dataclasses.replace(s, packed_length=64), ps, cfg) == 64


def test_kernel_benchmark_runs_and_the_kernels_agree():
  """`--kernels` at toy size: rows of 200 (3 causal blocks under "cpu"), the same loss under both kernels."""
  s = train_step.Settings(dim=32, layers=1, vocab=128, batch_size=2, steps=1, row_len=200)
  r = train_step.kernel_compare(s)
  assert r["max_abs_loss_diff"] < 1e-4
  assert r["xla_step_s"] > 0 and r["cpu_step_s"] > 0 and r["docs_per_row"] > 1
  assert "xla / cpu" in train_step.kernel_table(s, r)
