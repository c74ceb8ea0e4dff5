"""Typed configs built in one place: every dataclass field is in the configs and reaches its consumer."""

import dataclasses

import numpy as np
import pytest

from configs import base, gpu, tpu
from tsp_jax import config as config_lib
from tsp_jax import data, experiment, objective, sources, train_step
from tsp_jax.model import llama
from tsp_jax.search import batch, tree

# A value other than the default for every SearchConfig field (stop_ids: extra stop tokens after EOS).
SEARCH_VALUES = dict(slots_per_prefix=6, max_new_tokens=20, policy="entropy", k=3, root_fill=True, temperature=0.7,
                     rollout_temperature=0.3,
                     top_p=0.8, top_k=5, stop_ids=(7, 9), cache_len=200, entropy_threshold=1.5, fork_width=2,
                     max_depth=4, min_fork_distance=3, max_forks_per_step=2, window_step=8)


def test_search_values_cover_every_field():
  assert set(SEARCH_VALUES) == {f.name for f in dataclasses.fields(tree.SearchConfig)}
  defaults = tree.SearchConfig()
  assert all(getattr(defaults, k) != v for k, v in SEARCH_VALUES.items())


@pytest.mark.parametrize("mode", config_lib.MODES)
@pytest.mark.parametrize("variant", ["tiny", "codellama_7b"])
def test_every_dataclass_field_is_in_the_trainer_configs(mode, variant):
  c = base.base_config(mode, variant)
  assert set(c.search) == {f.name for f in dataclasses.fields(tree.SearchConfig)} | set(config_lib.SEARCH_BUDGET)
  assert set(c.loss) == {f.name for f in dataclasses.fields(objective.LossConfig)} - {"name"} | {"reference"}
  assert set(c.optim) == ({f.name for f in dataclasses.fields(train_step.OptimConfig)}
                          - {"warmup_steps", "total_steps"} | set(config_lib.SCHEDULE))
  assert set(c.model.overrides) | {"dtype", "kernel"} == {f.name for f in dataclasses.fields(llama.LlamaConfig)}
  assert {"dtype", "kernel"} <= set(c.model)


def test_every_search_field_set_from_the_config_reaches_the_config():
  c = base.base_config("tsp", "tiny")
  c.search.update(SEARCH_VALUES)
  scfg = config_lib.search_config(c, stop_ids=(2,))
  assert scfg == tree.SearchConfig(**{**SEARCH_VALUES, "stop_ids": (2, 7, 9)})
  c.search.cache_len = 0  # 0: the trainer's prompt budget + new tokens
  assert config_lib.search_config(c, (2,)).cache_len == c.search.max_prefix + 20


class _Tok:
  eos_id, pad_id, bos_id, vocab_size = 2, 0, 1, 50

  def encode(self, text, *, bos=True, eos=False):
    return [1] * bos + [3 + ord(ch) % 40 for ch in text] + [2] * eos

  def decode(self, ids, stop_at_eos=True):
    return "".join(chr(60 + int(i)) for i in ids)


class _BrokenPool:
  """Answers every program unparseable."""

  def verify(self, tasks, programs):
    from tsp_jax.verify import Verdict
    return [Verdict(status="syntax_error", secure=False, functional=None) for _ in programs]


@pytest.mark.parametrize("mode", ["tsp", "selfplay"])
def test_every_search_field_reaches_the_sampler(mode, monkeypatch):
  c = base.base_config(mode, "tiny")
  c.data_dir = "unused"
  c.search.update(SEARCH_VALUES)
  c.search.max_prefix = 150
  seen = []

  def sample_branches(params, cfg, prompts, scfg, rng, batch_size, desc):
    seen.append((scfg, batch_size))
    return [batch.Branches(ids=[np.array([2], np.int32)], parent=np.array([-1]), fork_pos=np.array([-1]))
            for _ in prompts]

  monkeypatch.setattr(batch, "sample_branches", sample_branches)
  record = data.Record(id="r", cwe="CWE-078", prompt="Run a command.", golden="def f(x):\n    return x\n",
                       vulnerable="def f(x):\n    return eval(x)\n", source="sven")
  train_data = data.TrainData(records=[record], nodes=data.risk_nodes(record), dev_records=[], dev_nodes=[],
                              counts={})
  with sources.make(c, _Tok(), train_data, pool=_BrokenPool()) as source:
    source.round_pairs(None, llama.LlamaConfig.tiny(), None, 0)
  ((scfg, batch_size),) = seen
  assert batch_size == c.search.prefixes_per_batch
  expected = {**SEARCH_VALUES, "stop_ids": (2, 7, 9)}
  if mode == "selfplay":  # one whole sample per prompt
    expected.update(policy="none", slots_per_prefix=1, k=1)
  assert scfg == tree.SearchConfig(**expected)


def test_sections_refuse_unknown_and_missing_keys():
  with pytest.raises(ValueError, match=r"unknown keys \['top_q'\]"):
    config_lib.search_section(top_q=3, max_prefix=8, prefixes_per_batch=2)
  with pytest.raises(ValueError, match=r"missing keys \['reference'\]"):
    config_lib.loss_section(beta=0.2)
  with pytest.raises(ValueError, match="not LlamaConfig fields"):
    config_lib.model_overrides(width=3)


def test_loss_and_optimizer_configs():
  c = base.base_config("selfplay", "tiny")
  c.loss.beta, c.optim.b2, c.optim.warmup_ratio = 0.3, 0.95, 0.25
  assert config_lib.loss_config(c) == objective.LossConfig(name="dpo", beta=0.3)
  ocfg = config_lib.optim_config(c, updates=40)
  assert (ocfg.b2, ocfg.warmup_steps, ocfg.total_steps, ocfg.lr) == (0.95, 10, 40, c.optim.lr)


def test_model_config_rules():
  c = base.base_config("tsp", "tiny")
  cfg = config_lib.model_config(c, vocab_size=700, platform="cpu")
  assert cfg == llama.LlamaConfig.tiny(vocab_size=700, kernel="cpu")  # small-model mode: the tokenizer's vocab
  assert config_lib.model_config(c, platform="tpu").kernel == "xla"
  c.model.kernel = "xla"
  assert config_lib.model_config(c, platform="cpu").kernel == "xla"  # an explicit kernel wins
  seven = tpu.get_config("v4_32")  # no checkpoint: the preset's own vocabulary (plans without weights)
  cfg = config_lib.model_config(seven, platform="tpu")
  assert (cfg.vocab_size, cfg.dtype, cfg.remat, cfg.kernel) == (32016, "bfloat16", True, "xla")


@pytest.mark.parametrize("variant", gpu.VARIANTS)
def test_gpu_configs(variant):
  """bf16 compute on fp32 weights, remat, cuDNN attention on a GPU backend, FSDP over the host's GPUs, 16 pairs per
  update; one GPU: Adafactor and no accumulation (tsp_jax.plan: AdamW's moments or the accumulator do not fit)."""
  c = gpu.get_config(f"{variant},selfplay")
  _, gpus, per_gpu, _, optimizer = gpu.VARIANTS_TABLE[variant]
  assert (c.mode, c.variant, c.mesh_shape, c.accelerator) == ("selfplay", variant, (1, -1, 1), variant.replace("_", "-"))
  assert c.batch_size == gpus * per_gpu and c.batch_size * c.optim.grad_accum == gpu.GLOBAL_BATCH
  cfg = config_lib.model_config(c, platform="gpu")
  assert (cfg.dtype, cfg.param_dtype, cfg.remat, cfg.kernel) == ("bfloat16", "float32", True, "cudnn")
  assert config_lib.model_config(c, platform="cpu").kernel == "cpu"  # "auto": the kernel follows the platform
  ocfg = config_lib.optim_config(c, updates=10)
  assert ocfg.optimizer == optimizer == ("adafactor" if gpus == 1 else "adamw")
  c.init_checkpoint = "/unused"
  config_lib.validate_trainer(c)
  assert gpu.get_config(None).variant == "h100_1"
  with pytest.raises(ValueError, match="unknown GPU variant"):
    gpu.get_config("v100_1")


@pytest.mark.parametrize("field, value, msg", [
    ("search.k", 6, "exceeds the slot budget"),
    ("search.cache_len", 100, "shorter than"),
    ("search.policy", "beam", "unknown fork policy"),
    ("mode", "ppo", "unknown mode"),
    ("loss.reference", "best", "loss.reference must be"),
    ("loss.beta", -1.0, "bad loss settings"),
    ("model.kernel", "cuda", "model.kernel"),
    ("tokenizer_vocab_size", 0, "no tokenizer"),
])
def test_validate_trainer(field, value, msg):
  c = base.base_config("tsp", "tiny")
  section, _, key = field.rpartition(".")
  (c[section] if section else c)[key] = value
  with pytest.raises(ValueError, match=msg):
    config_lib.validate_trainer(c)


def test_data_dirs_resolve_or_fail_clearly(tmp_path, monkeypatch):
  (tmp_path / "shared" / "data").mkdir(parents=True)
  (tmp_path / "work").mkdir()
  monkeypatch.chdir(tmp_path / "work")
  c = base.base_config("sft", "tiny")
  assert config_lib.resolve_dirs(c, data_dir="data").data_dir == str(tmp_path / "shared" / "data")
  c.data_dir = str(tmp_path / "elsewhere")
  with pytest.raises(ValueError, match="data_dir=.*is not a directory"):
    config_lib.resolve_dirs(c, data_dir="data")


def test_experiment_arms_flag_splits_commas():
  assert experiment.split_arms(("sft,selfplay, tsp",)) == ("sft", "selfplay", "tsp")
  assert experiment.split_arms(("sft", "tsp_all_rejected")) == ("sft", "tsp_all_rejected")
