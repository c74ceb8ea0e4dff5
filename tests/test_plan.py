"""The memory plan: exact train-state bytes per chip, activations (per-layer extrapolation exact, and within 25% of
XLA's memory_analysis of the compiled tiny train step on CPU), and the 7B figures the README quotes."""

import dataclasses

import jax
import pytest

from configs import gpu as gpu_configs
from configs import tpu as tpu_configs
from configs import tsp as tsp_configs
from tsp_jax import chips
from tsp_jax import config as config_lib
from tsp_jax import plan
from tsp_jax.model import llama

N_7B = 6_738_546_688


def tiny_config():
  c = tsp_configs.get_config("tiny")
  c.batch_size = 4
  c.model.overrides.n_layers = 2
  c.search.max_prefix, c.search.max_new_tokens = 48, 16
  return c


def test_cross_check_with_xla_memory_analysis():
  c = plan.cross_check(tiny_config())
  assert c["xla_arguments"] == c["plan_state"] + c["plan_batch"]  # params + AdamW moments + step + batch, exactly
  assert 0.8 < c["xla_temp"] / c["plan_temp"] < 1.25, c  # gradients + saved activations vs XLA's temp buffers


def test_activations_extrapolate_exactly_per_layer():
  c = tiny_config()
  c.packed = False  # dense pairs: the residual per block is (pairs x 2 x length x dim)
  cfg = config_lib.model_config(c)
  batch, ref = plan.abstract_batch(c, 2)
  r = [plan.residual_bytes(dataclasses.replace(cfg, n_layers=n), config_lib.loss_config(c), batch, ref, {})
       for n in (1, 2, 3)]
  assert r[2] - r[1] == r[1] - r[0] > 0
  # With per-layer remat a block saves only its input: 2 pairs x (chosen, rejected) x 64 tokens x dim, float32.
  r = [plan.residual_bytes(dataclasses.replace(cfg, n_layers=n, remat=True), config_lib.loss_config(c), batch, ref, {})
       for n in (1, 2, 3)]
  assert r[2] - r[1] == r[1] - r[0] == 2 * 2 * 64 * cfg.dim * 4


@pytest.mark.parametrize("variant, tpu, chips, accum", [("v4_32", "v4-32", 16, 1), ("v5e_16", "v5litepod-16", 16, 1),
                                                         ("v5p_8", "v5p-8", 4, 1)])
def test_7b_state_per_chip(variant, tpu, chips, accum):
  config = tpu_configs.get_config(variant)
  assert config.accelerator == tpu and config.optim.grad_accum == accum and config.batch_size * accum == 16
  p = plan.plan(config, tpu)
  assert p.chips == chips and p.mesh == (1, chips, 1) and p.pairs_per_chip == config.batch_size // chips
  assert llama.LlamaConfig.codellama_7b().num_params() == N_7B
  # fp32 params split evenly by FSDP, up to the dims that do not divide (the norms are replicated).
  assert N_7B * 4 / chips <= p.params < N_7B * 4 / chips * 1.001
  assert 2 * p.params <= p.opt_state < 2 * p.params * 1.001  # AdamW mu and nu
  assert p.grads == p.params and p.reference == 0
  # Without remat the saved activations do not fit; the configs' per-layer remat does (docs/tpu.md).
  assert p.remat and p.train_peak == p.train_peak_full
  assert not p.fits(p.train_peak_none) and p.fits(p.train_peak_full) and p.fits(p.search_peak)
  assert p.train_step_s >= p.train_compute_s > 0 and p.decode_tokens_per_s > 0


def test_tpu_config_variants():
  c = tpu_configs.get_config("v5e_16,sft")
  assert (c.mode, c.accelerator, c.mesh_shape, c.batch_size) == ("sft", "v5litepod-16", (1, -1, 1), 16)
  assert tpu_configs.get_config(None).variant == "v4_32"
  with pytest.raises(ValueError, match="unknown TPU variant"):
    tpu_configs.get_config("v3_8")


def test_initial_reference_is_resident():
  config = tpu_configs.get_config("v5p_8")
  config.loss.reference = "initial"
  p = plan.plan(config, "v5p-8")
  assert p.reference == p.params


def test_table_and_tpu_types():
  rows = [(v, plan.plan(tpu_configs.get_config(v), tpu_configs.get_config(v).accelerator)) for v in tpu_configs.VARIANTS]
  text = plan.table(rows)
  assert text.count("\n| v") == 6 and "v5litepod-16 (16, 1/16/1)" in text
  assert plan.parse_accelerator("v5p-8") == (plan.CHIPS["v5p"], 4)
  with pytest.raises(ValueError, match="unknown accelerator type"):
    plan.parse_accelerator("v3-8")
  with pytest.raises(ValueError, match="does not fit"):
    plan.abstract_mesh((2, 3, 1), 16)
  assert jax.device_count() == 8  # nothing above touched a device beyond the CPU compile


@pytest.mark.parametrize("mode", ["tsp", "selfplay"])
def test_packed_rows_cut_activations_and_flops_of_the_7b_step(mode):
  packed = tpu_configs.get_config("v4_32")
  packed.mode = mode
  dense = packed.copy_and_resolve_references()
  dense.packed = False
  p, d = plan.plan(packed, "v4-32"), plan.plan(dense, "v4-32")
  assert p.acts_full < d.acts_full and p.acts_none < d.acts_none
  assert p.train_compute_s < d.train_compute_s
  assert p.params == d.params and p.opt_state == d.opt_state  # packing changes the batch only


def test_gpu_types():
  assert plan.parse_accelerator("h100-8") == (plan.CHIPS["h100"], 8)
  assert plan.parse_accelerator("a100-1") == (plan.CHIPS["a100"], 1)
  h200 = plan.CHIPS["h200"]
  assert (h200.hbm_bytes, h200.peak_flops, h200.hbm_bw) == (141e9, 989e12, 4.8e12)
  assert set(chips.GPUS) <= set(plan.CHIPS) and chips.for_device_kind("NVIDIA H200") is plan.CHIPS["h200"]
  assert chips.for_device_kind("TPU v5 lite") is plan.CHIPS["v5litepod"] and chips.for_device_kind("cpu") is None


def test_one_gpu_7b_preset_fits_80gb():
  """Full fine-tuning on one 80 GB GPU: fp32 params + gradients, Adafactor's factored state, remat, 16 pairs in one
  micro-batch; the paper's AdamW (two fp32 moments) or gradient accumulation (an fp32 accumulator) would not fit."""
  config = gpu_configs.get_config("h100_1")
  p = plan.plan(config, config.accelerator)
  assert p.chips == 1 and p.mesh == (1, 1, 1) and p.pairs_per_chip == 16
  assert N_7B * 4 <= p.params < N_7B * 4 * 1.001 and p.grads == p.params
  assert p.opt_state < 0.01 * p.params  # Adafactor: factored second moments, no first moment
  assert p.remat and p.fits(p.train_peak) and p.fits(p.search_peak) and not p.fits(p.train_peak_none)
  adamw = config.copy_and_resolve_references()
  adamw.optim.optimizer = "adamw"
  a = plan.plan(adamw, "h100-1")
  assert a.opt_state >= 2 * p.params and not a.fits(a.train_peak)  # AdamW mu and nu
  text = plan.table([("h100_1", p)])
  assert "| h100_1 | h100-1 (1, 1/1/1) | 16 | full |" in text
