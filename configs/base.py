"""Shared trainer config for the three modes (`configs/{sft,selfplay,tsp}.py` select the mode).

Variants: `tiny` (small-model mode: a CPU runs it in minutes) and `codellama_7b` (paper settings: lr 2e-5,
4 epochs, global batch 16 = 1 per device x 16 accumulation, warmup 0.1, clip 1.0, K = 4, T = 3 rounds; needs
`--config.init_checkpoint=/path/to/CodeLlama-7b-Instruct-hf`).
"""

import os

import ml_collections

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_dir(name: str) -> str:
  """`../shared/<name>` relative to the repo root when it exists, else '' (must then be set by flag)."""
  path = os.path.normpath(os.path.join(_REPO, "..", "shared", name))
  return path if os.path.isdir(path) else ""


def base_config(mode: str, variant: str | None) -> ml_collections.ConfigDict:
  """The config of `mode` ('sft' | 'selfplay' | 'tsp') and `variant` ('tiny' | 'codellama_7b')."""
  variant = variant or "tiny"
  if variant not in ("tiny", "codellama_7b"):
    raise ValueError(f"unknown variant {variant!r}; expected 'tiny' or 'codellama_7b'")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.mode = mode
  c.variant = variant
  c.seed = 0
  c.data_dir = shared_dir("data")
  c.train_split = "train"
  c.dev_split = "dev"
  c.init_checkpoint = "" if tiny else ml_collections.config_dict.placeholder(str)
  c.tokenizer_vocab_size = 4096  # small-model mode only (a checkpoint brings its tokenizer.model)
  c.model = ml_collections.ConfigDict()
  c.model.preset = "tiny" if tiny else "codellama_7b"
  c.model.dtype = "float32" if tiny else "bfloat16"
  tiny_dims = dict(dim=256, n_layers=6, n_heads=8, n_kv_heads=4, ffn_dim=688, max_seq_len=2048)
  c.model.overrides = ml_collections.ConfigDict(tiny_dims if tiny else {})  # LlamaConfig fields
  c.mesh_shape = (-1, 1, 1) if tiny else (1, -1, 1)  # (data, fsdp, tensor)

  c.rounds = 1 if mode == "sft" else (1 if tiny else 3)
  c.nodes_per_round = 48 if tiny else 0  # 0: every node
  c.dev_nodes = 16 if tiny else 0
  c.max_pairs_per_node = 8
  # tsp mode: rollouts per round from the prompts of records without a vulnerable twin, paired at
  # verifier-localized nodes (0: none, -1: all).
  c.rollout_records = 8 if tiny else -1
  c.sft_include_vulnerable = False  # sft mode: also the vulnerable versions (small-model pre-training)
  c.search = ml_collections.ConfigDict()
  c.search.policy = "root_k"  # or "entropy": in-loop forks, with pairs at decision forks inside the tree
  c.search.k = 4
  c.search.entropy_threshold = 2.0
  c.search.max_depth = 2
  c.search.min_fork_distance = 8
  c.search.slots_per_prefix = 4
  c.search.temperature = 1.0
  c.search.top_p = 0.95
  c.search.max_prefix = 192 if tiny else 1024
  c.search.max_new_tokens = 48 if tiny else 256
  c.search.prefixes_per_batch = 16 if tiny else 64
  c.verify = ml_collections.ConfigDict()
  c.verify.num_workers = 2 if tiny else 16
  c.verify.strict = False

  c.loss = ml_collections.ConfigDict()
  c.loss.beta = 0.1
  c.loss.sft_weight = 0.0
  c.loss.first_token_weight = 1.0
  c.loss.first_tokens = 1
  c.loss.reference = "previous"  # SPIN: the previous round's model; or "initial"
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-3 if tiny else 2e-5
  c.optim.epochs = 2 if tiny else 4
  c.optim.steps = 0  # > 0: exactly this many micro-batches per round (overrides epochs)
  c.optim.warmup_ratio = 0.1
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 1.0
  c.optim.grad_accum = 1 if tiny else 16
  c.batch_size = 8 if tiny else 1 * 8  # global micro-batch (the 7B run: 1 per device on 8 devices)

  c.checkpoint_every = 10 if tiny else 100
  c.keep_checkpoints = 2
  c.checkpoint_dir = ""  # orbax checkpoints; "" = <workdir>/checkpoints (local or gs://)
  c.tensorboard = True  # TensorBoard event files in <workdir>/tensorboard, next to metrics.jsonl
  c.export = True
  return c
