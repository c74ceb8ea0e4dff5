"""Shared trainer config for the three modes (`configs/{sft,selfplay,tsp}.py` select the mode).

Variants: `tiny` (small-model mode: a CPU runs it in minutes) and `codellama_7b` (paper settings: lr 2e-5,
4 epochs, global batch 16 = 1 per device x 16 accumulation, warmup 0.1, clip 1.0, K = 4, T = 3 rounds; needs
`--config.init_checkpoint=/path/to/CodeLlama-7b-Instruct-hf`). `tsp_jax.config` turns the sections into typed
configs; every field of a section is settable with `--config.<section>.<field>=...`.
"""

import ml_collections

from tsp_jax import config as config_lib


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
  c.data_dir = ""  # "": ../shared/data (tsp_jax.config.shared_dir); several folders: comma-separated
  c.languages = ("python",)  # the records read (a record's `language`): some of tsp_jax.verify.program.LANGUAGES
  c.train_split = "train"
  c.dev_split = "dev"
  c.init_checkpoint = "" if tiny else ml_collections.config_dict.placeholder(str)
  c.tokenizer_vocab_size = 4096 if tiny else 0  # > 0: small-model mode trains its own tokenizer of this size
  c.tokenizer_split_words = False  # small-model mode: no piece joins a space to a name (tokenizer.train_tokenizer)
  c.model = ml_collections.ConfigDict()
  c.model.preset = "tiny" if tiny else "codellama_7b"
  c.model.dtype = "float32" if tiny else "bfloat16"
  c.model.kernel = config_lib.KERNEL_AUTO  # or one of tsp_jax.model.llama.KERNELS
  c.model.overrides = config_lib.model_overrides()  # LlamaConfig fields on top of the preset (None: its value)
  c.mesh_shape = (-1, 1, 1) if tiny else (1, -1, 1)  # (data, fsdp, tensor)

  c.rounds = 1 if mode == "sft" else (1 if tiny else 3)
  c.nodes_per_round = 48 if tiny else 0  # 0: every node
  c.dev_nodes = 16 if tiny else 0
  c.max_pairs_per_node = 8
  # tsp mode: where a risk node's trees start: "token", the first token where the golden function and its
  # vulnerable twin part (the decision token); "line", the start of the patch hunk's first line.
  c.nodes_at = "token"
  # tsp mode: rollouts per round from the prompts of records without a vulnerable twin, paired at
  # verifier-localized nodes (0: none, -1: all).
  c.rollout_records = 8 if tiny else -1
  c.records_per_round = 0  # selfplay mode: prompts sampled per round, a seeded choice of the records (0: all)
  # tsp / selfplay: "fresh", round r starts from the r-th window of nodes_per_round nodes / records_per_round
  # records of their seeded order (cyclic: new prompts each round); "same", the first window every round.
  c.round_prompts = "fresh"
  c.sft_include_vulnerable = False  # sft mode: also the vulnerable versions (small-model pre-training)
  c.packed = True  # tsp / selfplay: pair batches as packed node rows (tsp_jax.packing); False: the dense reference
  c.packed_length = 0  # tokens per packed row; 0: max_prefix + 3 * max_new_tokens
  c.packed_chunks = 5  # tree rows ("cpu" kernel): a prefix region + this many continuation chunks; 0: flat rows
  c.sft_packed = False  # sft mode: examples bin-packed into rows of max_prefix + max_new_tokens (segment attention)
  c.sft_score_prompt = False  # sft mode: the prompt's tokens are scored too (pre-training on whole programs)
  c.search = config_lib.search_section(
      policy="root_k",  # or "entropy": in-loop forks, with pairs at decision forks inside the tree
      k=4, root_fill=True, entropy_threshold=2.0, max_depth=2, min_fork_distance=8, slots_per_prefix=4, temperature=1.0,
      top_p=0.95, max_new_tokens=48 if tiny else 256,
      max_prefix=192 if tiny else 1024, prefixes_per_batch=16 if tiny else 64)
  c.verify = ml_collections.ConfigDict()
  c.verify.num_workers = 2 if tiny else 16
  c.verify.strict = False
  c.verify.memo_size = 20_000  # verdicts kept per pool: a (task, program) pair is judged once (VerifierPool.verify)
  # tsp mode: "verifier" labels every branch; "all_rejected" pairs the golden continuation against every sampled
  # branch unverified (the paper's public code), with no rollouts (their nodes come from the verifier).
  c.verify.labels = "verifier"

  c.loss = config_lib.loss_section(beta=0.1, sft_weight=0.0, first_token_weight=1.0, first_tokens=1,
                                   reference="previous")  # SPIN: the previous round's model; or "initial"
  c.optim = config_lib.optim_section(
      lr=1e-3 if tiny else 2e-5, weight_decay=0.0, clip_norm=1.0, grad_accum=1 if tiny else 16,
      epochs=2 if tiny else 4,
      steps=0,  # > 0: exactly this many micro-batches per round (overrides epochs)
      warmup_ratio=0.1)
  c.batch_size = 8 if tiny else 1 * 8  # global micro-batch (the 7B run: 1 per device on 8 devices)

  c.checkpoint_every = 10 if tiny else 100
  c.keep_checkpoints = 2
  c.checkpoint_dir = ""  # orbax checkpoints; "" = <workdir>/checkpoints (local or gs://)
  c.tensorboard = True  # TensorBoard event files in <workdir>/tensorboard, next to metrics.jsonl
  c.export = True
  return c
