"""The small-model TSP experiment (`python -m tsp_jax.experiment`): pre-train, three arms, evaluation.

Variants: `tiny` (the whole experiment on a 2-core CPU in under 30 minutes) and `smoke` (the same pipeline at
toy sizes, for tests). Every stage's trainer config is `configs/base.py`'s tiny config of its mode with the
`stage` overrides below, so the arms differ only in their mode (objective and pair source).
"""

import ml_collections

from configs import base


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The experiment config of a variant (`tiny` or `smoke`)."""
  variant = variant or "tiny"
  if variant not in ("tiny", "smoke"):
    raise ValueError(f"unknown experiment variant {variant!r}; expected 'tiny' or 'smoke'")
  smoke = variant == "smoke"
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0
  c.data_dir = base.shared_dir("data")
  c.eval_dir = base.shared_dir("eval")
  c.eval_split = "test"

  # Stage 1: pre-training from random init on both sides of every training pair (SFT mode, all versions).
  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.steps = 12 if smoke else 900  # micro-batches of batch_size sequences
  c.pretrain.lr = 3e-3
  c.pretrain.warmup_ratio = 0.05

  # Stage 2: the arms, each from the pre-trained checkpoint, with the same number of optimizer micro-batches.
  c.arms = ("sft", "selfplay", "tsp")
  c.arm = ml_collections.ConfigDict()
  c.arm.steps = 4 if smoke else 120
  c.arm.lr = 3e-4
  c.arm.nodes_per_round = 6 if smoke else 96
  c.arm.dev_nodes = 4 if smoke else 16

  c.batch_size = 4 if smoke else 8
  c.model_dims = ml_collections.ConfigDict(
      dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=512) if smoke else
      dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=1024))
  c.tokenizer_vocab_size = 512 if smoke else 2048
  c.max_prefix = 96 if smoke else 192
  c.max_new_tokens = 24 if smoke else 48

  # Stage 3: evaluation of the pre-trained model and every arm (greedy, one completion per prompt).
  c.eval = ml_collections.ConfigDict()
  c.eval.benchmarks = ("cweval", "codeguardplus") if smoke else ("cweval", "codeguardplus", "humaneval")
  c.eval.limit = 3 if smoke else 0  # first N tasks per benchmark (0: all)
  c.eval.max_new_tokens = 32 if smoke else 160
  c.eval.batch_size = 16 if smoke else 32
  c.eval.probe_nodes = 4 if smoke else 50  # dev-split risk nodes for the node-level probe
  c.num_workers = 2
  c.lock()
  return c
