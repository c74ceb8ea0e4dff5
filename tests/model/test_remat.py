"""Per-layer activation remat (`LlamaConfig.remat`): the same loss, gradients and cached forwards, smaller train-step
temporaries, and a runtime setting that HF config.json never carries."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tsp_jax import objective, train_step
from tsp_jax.model import convert, llama

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = llama.LlamaConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=64)


def random_params(cfg: llama.LlamaConfig) -> llama.Params:
  """Seeded normal(0, 0.02) weights and normal(1, 0.1) norm scales (numpy: no init compile)."""
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(1.0 if s.ndim == 1 else 0.0, 0.1 if s.ndim == 1 else 0.02,
                                                       s.shape), s.dtype), llama.abstract_params(cfg))


def seq_batch(cfg: llama.LlamaConfig, batch: int, length: int) -> objective.SeqBatch:
  """Random tokens [B, L], the first quarter of each row unscored."""
  tokens = jax.random.randint(jax.random.key(1), (batch, length), 0, cfg.vocab_size, dtype=jnp.int32)
  mask = jnp.broadcast_to((jnp.arange(length) >= length // 4).astype(jnp.float32), (batch, length))
  return objective.SeqBatch(tokens=tokens, mask=mask)


def test_loss_and_gradients_match_without_remat():
  params = random_params(CFG)
  batch = seq_batch(CFG, 2, 32)
  grad_fn = jax.jit(jax.value_and_grad(objective.sft_loss, has_aux=True), static_argnums=1)
  (loss, _), grads = grad_fn(params, CFG, batch)
  (loss_remat, _), grads_remat = grad_fn(params, dataclasses.replace(CFG, remat=True), batch)
  assert abs(float(loss) - float(loss_remat)) <= 1e-6
  for g, g_remat in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_remat), strict=True):
    np.testing.assert_allclose(np.asarray(g_remat), np.asarray(g), rtol=0, atol=1e-6)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3  # the comparison is not vacuous


def test_cached_forward_ignores_remat():
  params = random_params(CFG)
  tokens = seq_batch(CFG, 2, 8).tokens  # [2, 8]
  positions = jnp.broadcast_to(jnp.arange(8, dtype=jnp.int32), tokens.shape)
  cache = llama.init_cache(CFG, 2, 16)
  logits, new_cache = llama.forward(params, CFG, tokens, positions, cache)
  logits_remat, new_cache_remat = llama.forward(params, dataclasses.replace(CFG, remat=True), tokens, positions,
                                                cache)
  np.testing.assert_array_equal(np.asarray(logits_remat), np.asarray(logits))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), new_cache_remat, new_cache)


def train_step_temp_bytes(remat: bool) -> int:
  """XLA's temporaries of the trainer's compiled step (SFT loss, SGD) of a 4-layer model on 2 x 512 tokens."""
  cfg = dataclasses.replace(CFG, n_layers=4, max_seq_len=512, remat=remat)
  tx = optax.sgd(1e-3)
  state = jax.eval_shape(lambda p: train_step.init_state(p, tx), llama.abstract_params(cfg))
  batch = jax.eval_shape(lambda: seq_batch(cfg, 2, 512))
  step = train_step.make_train_step(cfg, objective.LossConfig(name="sft"), tx)
  return step.lower(state, batch, None).compile().memory_analysis().temp_size_in_bytes


def test_remat_shrinks_train_step_temporaries():
  # XLA:CPU's default concurrency-optimized scheduler runs every block's recomputation early, which undoes remat
  # (temporaries within 2%); its memory-minimizing scheduler, like the TPU's memory-aware one, keeps about one
  # block's activations live (SGD: 28.7 MiB at 4 and 29.7 MiB at 8 layers; AdamW's larger update graph schedules
  # less tightly: 50.9 / 75.9 MiB, vs 70.7 / 121 MiB without remat). The flag is process-wide: a child process.
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=false "
         "--xla_backend_optimization_level=0"}
  code = "from tests.model import test_remat as t; print(t.train_step_temp_bytes(False), t.train_step_temp_bytes(True))"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-4000:]
  plain, remat = map(int, out.stdout.split())
  # Without remat each layer keeps its [B, H, T, T] float32 attention scores and probabilities (8 MiB each here).
  assert remat < plain / 2, (remat, plain)


def test_remat_is_not_written_to_hf_config():
  cfg = dataclasses.replace(CFG, remat=True)
  hf = convert.config_to_hf(cfg)
  assert "remat" not in hf and hf == convert.config_to_hf(CFG)
  assert convert.config_from_hf(hf, remat=True) == cfg
  assert llama.LlamaConfig.from_preset("codellama_7b", remat=True).remat
  assert llama.abstract_params(cfg) == llama.abstract_params(CFG)  # same parameter tree: checkpoints load as before
