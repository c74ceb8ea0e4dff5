"""The small-model TSP experiment (`python -m tsp_jax.experiment`): pre-train, three arms, evaluation.

Variants: `tiny` (the whole experiment on a 2-core CPU in under 30 minutes) and `smoke` (the same pipeline at
toy sizes, for tests). `stages` holds each stage's whole trainer config: `configs/base.py`'s tiny config of its
mode with the settings below, so the arms differ only in their mode (objective and pair source). The shared
settings (seed, data, model, batch, prompt budget, step budgets) are references: `--config.seed=1` or
`--config.arm_steps=60` changes every stage; `--config.stages.tsp.optim.lr=1e-4` changes one.
"""

import ml_collections
from ml_collections import FieldReference

from configs import base
from tsp_jax import config as config_lib

PRETRAIN = "pretrain"
ARMS = ("sft", "selfplay", "tsp")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The experiment config of a variant (`tiny` or `smoke`)."""
  variant = variant or "tiny"
  if variant not in ("tiny", "smoke"):
    raise ValueError(f"unknown experiment variant {variant!r}; expected 'tiny' or 'smoke'")
  smoke = variant == "smoke"
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = FieldReference(0)
  c.data_dir = FieldReference("")  # "": ../shared/data
  c.eval_dir = ""  # "": ../shared/eval
  c.eval_split = "test"
  c.batch_size = FieldReference(4 if smoke else 8)
  c.model_dims = config_lib.model_overrides(  # LlamaConfig overrides of every stage
      **(dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=512) if smoke else
         dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=1024)))
  c.tokenizer_vocab_size = FieldReference(512 if smoke else 2048)
  c.max_prefix = FieldReference(96 if smoke else 192)
  c.max_new_tokens = FieldReference(24 if smoke else 48)
  c.num_workers = FieldReference(2)
  # Pre-training: micro-batches from random init on both sides of every training pair (SFT mode, all versions).
  c.pretrain_steps = FieldReference(12 if smoke else 900)
  # The arms: each from the pre-trained checkpoint, with the same number of optimizer micro-batches.
  c.arm_steps = FieldReference(4 if smoke else 120)
  c.arms = ARMS

  c.stages = ml_collections.ConfigDict()
  for name, mode in ((PRETRAIN, "sft"),) + tuple((a, a) for a in ARMS):
    s = base.base_config(mode, "tiny")
    pre = name == PRETRAIN
    s.seed = c.get_ref("seed")
    s.data_dir = c.get_ref("data_dir")
    s.init_checkpoint = ""  # the arms start from the pre-trained export (set by the experiment)
    s.tokenizer_vocab_size = c.get_ref("tokenizer_vocab_size")
    s.model.overrides = c.model_dims
    s.batch_size = c.get_ref("batch_size")
    s.search.max_prefix = c.get_ref("max_prefix")
    s.search.max_new_tokens = c.get_ref("max_new_tokens")
    s.verify.num_workers = c.get_ref("num_workers")
    s.rounds = 1
    s.sft_include_vulnerable = pre
    steps = c.get_ref("pretrain_steps" if pre else "arm_steps")
    s.optim.steps = steps
    s.optim.lr = 3e-3 if pre else 3e-4
    s.optim.warmup_ratio = 0.05 if pre else 0.1
    s.nodes_per_round = 6 if smoke else 96
    s.dev_nodes = 4 if smoke else 16
    s.checkpoint_every = steps // 4  # 0 (fewer than 4 steps): at the round's end only
    s.export = True
    c.stages[name] = s

  # Evaluation of the pre-trained model and every arm (greedy, one completion per prompt).
  c.eval = ml_collections.ConfigDict()
  c.eval.benchmarks = ("cweval", "codeguardplus") if smoke else ("cweval", "codeguardplus", "humaneval")
  c.eval.limit = 3 if smoke else 0  # first N tasks per benchmark (0: all)
  c.eval.max_new_tokens = 32 if smoke else 160
  c.eval.batch_size = 16 if smoke else 32
  c.eval.probe_nodes = 4 if smoke else 50  # dev-split risk nodes for the node-level probe
  c.lock()
  return c
