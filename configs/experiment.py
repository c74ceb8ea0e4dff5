"""The TSP experiment (`python -m tsp_jax.experiment`): pre-train (or start from a checkpoint), arms, evaluation.

Variants:
  `synth`        the main job: generated secure-coding tasks (`tsp_jax.synth`, written into the workdir from
                 `synth.seed`), a tiny Llama pre-trained on them, SFT / self-play / TSP arms with 2 on-policy
                 rounds plus the "all branches rejected, no verifier" TSP ablation, evaluated per test subset
                 (seen, unseen_family, new_template) and family. `ABLATIONS` are further arms of the same config
                 (`--config.arms=sft,selfplay,tsp,tsp_all_rejected,tsp_entropy,tsp_first_token`).
  `synth_smoke`  the same pipeline at toy sizes (tests).
  `tiny`         the shared data (../shared/data, ../shared/eval: CWEval, CodeGuard+, HumanEval); `smoke` its toy.
  `transfer`     the paper's transfer experiment (issue 17): a tiny Llama pre-trained on every language of the
                 shared data (../shared/data + ../shared/xlang/data: Python, C, C++, Go, JS), the arms aligned on
                 the C/C++ pairs only (`ALIGN_LANGUAGES`), all evaluated on CWEval in all five languages;
                 `transfer_smoke` its toy (tests); `transfer_hf` the same arms from an HF checkpoint (CodeLlama).
  `hf`           the paper's setting: the arms from an HF checkpoint (`--config.init_checkpoint=/path/to/
                 CodeLlama-7b-Instruct-hf`; no pre-training stage) on the shared data at the 7B trainer settings,
                 evaluated on the real benchmarks.
`stages` holds each stage's whole trainer config (`configs/base.py`'s config of its mode with the settings below),
so arms differ only in what they name. The shared settings are references: `--config.seed=1` or
`--config.arm_steps=60` reaches every stage; `--config.stages.tsp.optim.lr=1e-4` one.
"""

import ml_collections
from ml_collections import FieldReference

from configs import base
from tsp_jax import config as config_lib

PRETRAIN = "pretrain"
ARMS = ("sft", "selfplay", "tsp")
# Ablations of TSP (arms of every variant; `synth` runs the first by default): every sampled branch rejected and
# no verifier (the paper's public code), in-loop entropy forks instead of root_k only, first-token weight 3.
ABLATIONS = ("tsp_all_rejected", "tsp_entropy", "tsp_first_token")
VARIANTS = ("synth", "synth_smoke", "tiny", "smoke", "hf", "transfer", "transfer_smoke", "transfer_hf")
ALL_LANGUAGES = ("python", "c", "cpp", "go", "javascript")
ALIGN_LANGUAGES = ("c", "cpp")  # transfer: what the arms align on


def _shared_dirs(name: str) -> str:
  """`../shared/<name>,../shared/xlang/<name>` (those that exist): every language's data."""
  return ",".join(d for d in (config_lib.shared_dir(name), config_lib.shared_dir(f"xlang/{name}")) if d)


def _arm_mode(name: str) -> str:
  return "tsp" if name in ABLATIONS else name


def _ablate(s: ml_collections.ConfigDict, name: str) -> None:
  if name == "tsp_all_rejected":
    s.verify.labels = "all_rejected"
  elif name == "tsp_entropy":
    s.search.policy = "entropy"
  elif name == "tsp_first_token":
    s.loss.first_token_weight = 3.0


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The experiment config of a variant (`VARIANTS`)."""
  variant = variant or "synth"
  if variant not in VARIANTS:
    raise ValueError(f"unknown experiment variant {variant!r}; expected one of {VARIANTS}")
  transfer = variant.startswith("transfer")
  smoke, synth, hf = variant.endswith("smoke"), variant.startswith("synth"), variant.endswith("hf")
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = FieldReference(0)
  c.tasks = "synth" if synth else "shared"
  # synth: what `tsp_jax.synth` generates into <workdir>/tasks (the same tasks for every training seed).
  # fresh_names 0: names from each template's own options (3-60 per argument). With the generator's 1/2 fresh
  # names the model must copy every name, and 1,800 pre-training steps are not enough for that: func pass@1 of
  # the pre-trained model 25% / 39% (seen / unseen family) against 52% / 59% with fresh_names 0.
  # vuln_rate 0.5 (the generator's default: 0.6): with 0.6 the pre-trained model's greedy programs are flagged
  # where most templates' majority idiom is vulnerable (SPR@1 16.5% on the dev tasks, 20% on seen test families).
  c.synth = ml_collections.ConfigDict(dict(
      seed=0, train=300 if smoke else 3000, dev=20 if smoke else 200, test_per_subset=4 if smoke else 64,
      pretrain=400 if smoke else 6000, vuln_rate=0.5, fresh_names=0.0))
  # shared: "" = ../shared/data (transfer: and ../shared/xlang/data); synth: set by the experiment
  c.data_dir = FieldReference(_shared_dirs("data") if transfer else "")
  c.eval_dir = _shared_dirs("eval") if transfer else ""  # shared: "" = ../shared/eval
  c.eval_split = "test"  # synth: "dev" evaluates on the dev tasks instead (tuning runs: never tune on test)
  c.init_checkpoint = FieldReference(ml_collections.config_dict.placeholder(str) if hf else "")
  c.batch_size = FieldReference(8 if hf else (4 if smoke else 8))  # micro-batch of the arms
  c.model_dims = config_lib.model_overrides(  # LlamaConfig overrides of every stage (small-model mode)
      **({} if hf else
         dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=512) if smoke else
         dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=1024, rope_theta=1e4)))
  c.tokenizer_vocab_size = FieldReference(0 if hf else (512 if smoke else 2048))
  c.max_prefix = FieldReference(1024 if hf else (96 if smoke else (256 if synth else 192)))
  c.max_new_tokens = FieldReference(256 if hf else (24 if smoke else (96 if synth else 48)))
  c.num_workers = FieldReference(16 if hf else 2)
  # Pre-training: micro-batches from random init (SFT mode on both versions of every training function; synth:
  # on `pretrain.jsonl`, one solution per task of every family), whole programs scored (prompt too) in rows
  # bin-packed with several programs (~1.8 per row on synth). Skipped when init_checkpoint is set. synth: 2,700
  # steps (~20 min here), chosen on the dev tasks (seed 0; parse / func pass@1 / SPR@1 of the pre-trained model):
  # 1,800 steps func 33%; 2,700 steps 98.0 / 55.5 / 36.2. 2,250 steps (tried for the 30-minute one-seed budget:
  # one seed 29.7 min) 98.0 / 52.0 / 28.6, with weaker arms (func pass@1 sft 57.5 -> 45.0%, selfplay 54.5 -> 34.0%)
  # and TSP rounds that miss their targets (round 0 broken 23.8% -> 39.4%, round 1 nodes with both 35% -> 20%).
  c.pretrain_steps = FieldReference(12 if smoke else (2700 if synth else 900))
  # Rows of 352 tokens per pre-training micro-batch. synth: 8. With 6 rows (dev tasks, seed 0, same 2,700 steps)
  # pre-training took 1,104 s instead of 1,302 s, but the pre-trained model's func pass@1 fell 55.5% -> 43.5%
  # and every arm's with it (sft 57.5% -> 37.0%): not worth the 3 minutes.
  c.pretrain_batch_size = FieldReference(4 if smoke else 8)
  # The arms: each from the same start with the same optimizer budget: `rounds` rounds of `arm_steps`
  # micro-batches (SFT repeats its examples; self-play and TSP sample again from the updated model each round).
  c.arm_steps = FieldReference(4 if smoke else (60 if synth else (0 if hf else 120)))  # hf: paper's 4 epochs
  c.rounds = FieldReference((2 if synth else 1) if not hf else 3)
  c.nodes_per_round = FieldReference(6 if smoke else (40 if synth else (0 if hf else 96)))
  c.records_per_round = FieldReference(8 if smoke else (96 if synth else 0))  # self-play prompts (0: all)
  c.arms = ARMS + (ABLATIONS[:1] if synth else ())
  # --seeds=N: the first seed's pre-trained model is every seed's start (the base model the arms align, as
  # CodeLlama is in the paper); False: each seed pre-trains its own.
  c.shared_pretrain = synth

  c.stages = ml_collections.ConfigDict()
  names = ARMS + ABLATIONS if hf else (PRETRAIN,) + ARMS + ABLATIONS
  for name in names:
    pre = name == PRETRAIN
    s = base.base_config("sft" if pre else _arm_mode(name), "codellama_7b" if hf else "tiny")
    s.seed = c.get_ref("seed")
    s.data_dir = c.get_ref("data_dir")
    s.init_checkpoint = c.get_ref("init_checkpoint")  # small-model arms: the pre-trained export (experiment)
    s.tokenizer_vocab_size = c.get_ref("tokenizer_vocab_size")
    s.tokenizer_split_words = synth  # names are copied from signatures: the same tokens wherever they occur
    s.model.overrides = c.model_dims
    s.batch_size = c.get_ref("pretrain_batch_size" if pre else "batch_size")
    s.search.max_prefix = c.get_ref("max_prefix")
    s.search.max_new_tokens = c.get_ref("max_new_tokens")
    s.verify.num_workers = c.get_ref("num_workers")
    s.rounds = 1 if pre else c.get_ref("rounds")
    s.sft_include_vulnerable = pre
    s.sft_packed = s.sft_score_prompt = pre
    s.train_split = "pretrain" if pre and synth else "train"
    steps = c.get_ref("pretrain_steps" if pre else "arm_steps")
    s.optim.steps = steps
    if not hf:
      if not pre and name != "sft":
        # The DPO arms keep an SFT term on the chosen tokens, and TSP's branches continue at T = 0.2 after the
        # decision token: without them (dev tasks, seed 0) self-play falls to parse 22% / func 2% and TSP to
        # 40% / 6%; with them 79% / 12% and 83% / 17% (round 0: broken branches 61% -> 53%, nodes with both 5% -> 10%).
        s.loss.sft_weight = 1.0
        if _arm_mode(name) == "tsp":
          s.search.rollout_temperature = 0.2
      # The arms at 1e-4 (dev tasks, seed 0, from one pre-trained model; parse / func / SPR@1): sft 99.5 / 45.0 /
      # 68.8 at 3e-4, 99.5 / 50.5 / 68.8 at 1e-4; tsp 90.5 / 32.5 / 49.7 and 100 / 42.5 / 53.0.
      s.optim.lr = 3e-3 if pre else 1e-4
      s.optim.warmup_ratio = 0.05 if pre else 0.1
      # Dev pairs only feed the logged dev_before / dev_after metrics (their trees: a stream of their own); synth:
      # 4 nodes, ~10 s less per TSP round than 8 (their branches verified).
      s.dev_nodes = 4 if smoke or synth else 16
      s.checkpoint_every = steps // 4  # 0 (fewer than 4 steps): at the round's end only
    s.nodes_per_round = c.get_ref("nodes_per_round")
    s.records_per_round = c.get_ref("records_per_round")
    s.export = True
    if transfer:  # the start knows every language (as CodeLlama does); the arms see C/C++ pairs only
      s.languages = ALL_LANGUAGES if pre else ALIGN_LANGUAGES
    _ablate(s, name)
    c.stages[name] = s

  # Evaluation of the start (pre-trained model or checkpoint) and every arm (greedy, one completion per prompt).
  c.eval = ml_collections.ConfigDict()
  c.eval.benchmarks = (("synth",) if synth else ("cweval", "codeguardplus") if smoke else
                       ("cweval", "codeguardplus", "humaneval"))
  if transfer:
    c.eval.benchmarks = ("cweval",)
  c.eval.languages = ALL_LANGUAGES if transfer else ("python",)  # the test records evaluated, by language
  c.eval.limit = 3 if variant == "smoke" else (1 if variant == "transfer_smoke" else 0)  # first N per language
  c.eval.max_new_tokens = 32 if smoke else (512 if hf else 160)
  c.eval.batch_size = 16 if smoke else 32
  c.eval.probe_nodes = 4 if smoke else (16 if synth else 50)  # dev-split risk nodes for the node-level probe
  c.lock()
  return c
