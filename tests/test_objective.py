"""Losses against hand-computed values, gradient masking, and the (sharded) train step."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsp_jax import objective, train_step
from tsp_jax.model import llama, sharding

CFG = llama.LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)


@pytest.fixture(scope="module")
def params():
  return llama.init_params(CFG, jax.random.key(0))


def toy_batch(b: int = 4, length: int = 12, seed: int = 0) -> objective.PairBatch:
  """Pairs sharing a 5-token prefix, then diverging; chosen/rejected of different lengths (right padding)."""
  rng = np.random.default_rng(seed)
  prefix = rng.integers(3, 64, (b, 5))
  chosen = np.concatenate([prefix, rng.integers(3, 64, (b, length - 5))], axis=1)
  rejected = np.concatenate([prefix, rng.integers(3, 64, (b, length - 5))], axis=1)
  c_mask = np.zeros((b, length), np.float32)
  r_mask = np.zeros((b, length), np.float32)
  c_mask[:, 5:] = 1
  r_mask[:, 5:length - 2] = 1
  rejected[:, length - 2:] = 0  # padding
  return objective.PairBatch(chosen=jnp.asarray(chosen, jnp.int32), rejected=jnp.asarray(rejected, jnp.int32),
                             chosen_mask=jnp.asarray(c_mask), rejected_mask=jnp.asarray(r_mask),
                             weight=jnp.ones((b,), jnp.float32))


def test_dpo_two_pairs_by_hand():
  pi_c, pi_r = jnp.array([-1.0, -2.0]), jnp.array([-3.0, -1.0])
  ref = jnp.array([[-1.5, -2.5], [-2.0, -1.5]])
  loss, m = objective.preference_terms(pi_c, pi_r, ref, jnp.ones(2), beta=0.1)
  # Pair 1: margin = 0.1 * ((-1 + 1.5) - (-3 + 2.5)) = 0.1; pair 2: 0.1 * ((-2 + 2) - (-1 + 1.5)) = -0.05.
  want = (math.log1p(math.exp(-0.1)) + math.log1p(math.exp(0.05))) / 2
  assert float(loss) == pytest.approx(want, abs=1e-6)
  assert float(m["reward_accuracy"]) == 0.5
  assert float(m["margin"]) == pytest.approx(0.025, abs=1e-7)
  # A zero pair weight removes the pair.
  loss1, _ = objective.preference_terms(pi_c, pi_r, ref, jnp.array([1.0, 0.0]), beta=0.1)
  assert float(loss1) == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-6)


def test_sequence_logps_match_manual_sum(params):
  batch = toy_batch()
  logits, _ = llama.forward(params, CFG, batch.chosen, jnp.broadcast_to(jnp.arange(12), (4, 12)))
  logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  want = [sum(logp[b, t - 1, int(batch.chosen[b, t])] for t in range(5, 12)) for b in range(4)]
  got = objective.sequence_logps(params, CFG, batch.chosen, batch.chosen_mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_tsp_loss_value_from_model_logps(params):
  batch = toy_batch()
  ref_params = llama.init_params(CFG, jax.random.key(1))
  lcfg = objective.LossConfig(beta=0.1)
  ref = objective.reference_logps(ref_params, CFG, batch, lcfg)
  loss, metrics = objective.tsp_loss(params, CFG, batch, ref, lcfg)
  pi_c = objective.sequence_logps(params, CFG, batch.chosen, batch.chosen_mask)
  pi_r = objective.sequence_logps(params, CFG, batch.rejected, batch.rejected_mask)
  margin = 0.1 * ((pi_c - ref[:, 0]) - (pi_r - ref[:, 1]))
  assert float(loss) == pytest.approx(float(jnp.mean(jnp.log1p(jnp.exp(-margin)))), abs=1e-5)
  assert float(metrics["reward_accuracy"]) == pytest.approx(float(jnp.mean(margin > 0)))


def test_prefix_positions_get_exactly_zero_gradient():
  batch = toy_batch()
  logits = jax.random.normal(jax.random.key(2), (2, 4, 12, 64))

  def loss_of_logits(lg):
    pi_c = jnp.sum(objective.token_logps(lg[0], batch.chosen) * batch.chosen_mask, axis=-1)
    pi_r = jnp.sum(objective.token_logps(lg[1], batch.rejected) * batch.rejected_mask, axis=-1)
    return objective.preference_terms(pi_c, pi_r, jnp.zeros((4, 2)), batch.weight, 0.1)[0]

  g = np.asarray(jax.grad(loss_of_logits)(logits))
  # Logits at position t predict token t + 1; the first scored token is 5, so positions 0..3 carry nothing.
  assert np.all(g[:, :, :4] == 0)
  assert np.all(g[1, :, 10:] == 0)  # rejected padding (tokens 10, 11 unscored): predicted from positions 9, 10
  assert np.all(g[:, :, -1] == 0)  # the last position predicts nothing
  assert np.abs(g[:, :, 4:9]).min(axis=-1).max() > 0


def test_identical_pairs_give_log2_and_zero_gradient(params):
  batch = toy_batch()
  same = batch.replace(rejected=batch.chosen, rejected_mask=batch.chosen_mask)
  lcfg = objective.LossConfig(beta=0.1)
  ref = objective.reference_logps(params, CFG, same, lcfg)
  loss, grads = jax.value_and_grad(lambda p: objective.tsp_loss(p, CFG, same, ref, lcfg)[0])(params)
  assert float(loss) == pytest.approx(math.log(2), abs=1e-6)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e-6
  # Sequence-level DPO likewise.
  loss_dpo, grads_dpo = jax.value_and_grad(lambda p: objective.dpo_loss(p, CFG, same, ref, lcfg)[0])(params)
  assert float(loss_dpo) == pytest.approx(math.log(2), abs=1e-6)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads_dpo)) < 1e-6


def test_sft_loss_is_token_mean_nll(params):
  batch = toy_batch()
  seq = objective.SeqBatch(tokens=batch.chosen, mask=batch.chosen_mask)
  loss, _ = objective.sft_loss(params, CFG, seq)
  logits, _ = llama.forward(params, CFG, batch.chosen, jnp.broadcast_to(jnp.arange(12), (4, 12)))
  logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  nll = [-logp[b, t - 1, int(batch.chosen[b, t])] for b in range(4) for t in range(5, 12)]
  assert float(loss) == pytest.approx(float(np.mean(nll)), abs=1e-5)


def test_first_token_weights_and_sft_term(params):
  mask = jnp.array([[0, 0, 1, 1, 1, 0]], jnp.float32)
  w = objective.position_weights(mask, objective.LossConfig(first_token_weight=3.0, first_tokens=2))
  np.testing.assert_array_equal(w, [[0, 0, 3, 3, 1, 0]])
  # dpo ignores TSP-only options.
  w_dpo = objective.position_weights(mask, objective.LossConfig(name="dpo", first_token_weight=3.0))
  np.testing.assert_array_equal(w_dpo, mask)
  batch = toy_batch()
  ref = jnp.zeros((4, 2))
  base, _ = objective.tsp_loss(params, CFG, batch, ref, objective.LossConfig())
  with_sft, m = objective.tsp_loss(params, CFG, batch, ref, objective.LossConfig(sft_weight=0.5))
  sft, _ = objective.sft_loss(params, CFG, objective.SeqBatch(tokens=batch.chosen, mask=batch.chosen_mask))
  assert float(with_sft) == pytest.approx(float(base) + 0.5 * float(sft), abs=1e-5)
  assert float(m["sft_loss"]) == pytest.approx(float(sft), abs=1e-5)
  # Sequence-level DPO (self-play) takes the same SFT term.
  dpo, _ = objective.dpo_loss(params, CFG, batch, ref, objective.LossConfig(name="dpo"))
  dpo_sft, _ = objective.dpo_loss(params, CFG, batch, ref, objective.LossConfig(name="dpo", sft_weight=0.5))
  assert float(dpo_sft) == pytest.approx(float(dpo) + 0.5 * float(sft), abs=1e-5)


def test_bad_loss_config():
  with pytest.raises(ValueError, match="unknown loss 'ppo'"):
    objective.LossConfig(name="ppo")
  with pytest.raises(ValueError, match="bad loss settings"):
    objective.LossConfig(beta=0.0)


def test_train_step_improves_preference(params):
  batch = toy_batch()
  lcfg = objective.LossConfig(beta=0.1)
  ref = objective.reference_logps(params, CFG, batch, lcfg)
  tx = train_step.make_optimizer(train_step.OptimConfig(lr=1e-2, total_steps=20))
  state = train_step.init_state(jax.tree.map(jnp.copy, params), tx)
  step = train_step.make_train_step(CFG, lcfg, tx)
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch, ref)
    losses.append(float(metrics["loss"]))
  assert losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at the start
  assert losses[-1] < losses[0] - 0.05 and float(metrics["reward_accuracy"]) == 1.0
  assert int(state.step) == 8


def test_grad_accumulation_matches_big_batch(params):
  batch = toy_batch(b=4)
  half = [jax.tree.map(lambda x, i=i: x[2 * i:2 * i + 2], batch) for i in range(2)]
  lcfg = objective.LossConfig(beta=0.1)
  ref = objective.reference_logps(params, CFG, batch, lcfg)
  # eps = 1 makes Adam's first update depend on the gradient's scale (a sum instead of a mean would show).
  ocfg = train_step.OptimConfig(lr=1e-2, total_steps=10, eps=1.0)
  tx1 = train_step.make_optimizer(ocfg)
  s1, _ = train_step.make_train_step(CFG, lcfg, tx1)(train_step.init_state(jax.tree.map(jnp.copy, params), tx1),
                                                      batch, ref)
  tx2 = train_step.make_optimizer(train_step.OptimConfig(lr=1e-2, total_steps=10, eps=1.0, grad_accum=2))
  step2 = train_step.make_train_step(CFG, lcfg, tx2)
  s2 = train_step.init_state(jax.tree.map(jnp.copy, params), tx2)
  for i in range(2):
    s2, _ = step2(s2, half[i], ref[2 * i:2 * i + 2])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), s1.params, s2.params)
  assert not np.allclose(s1.params["embed"], params["embed"], atol=1e-5)  # the update did happen


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 4, 2)])
def test_sharded_train_step_equals_single_device(params, mesh_shape):
  batch = toy_batch(b=8)
  lcfg = objective.LossConfig(beta=0.1, sft_weight=0.1)
  ref = objective.reference_logps(params, CFG, batch, lcfg)
  tx = train_step.make_optimizer(train_step.OptimConfig(lr=1e-2, total_steps=10))
  single = train_step.make_train_step(CFG, lcfg, tx)
  s_ref = train_step.init_state(jax.tree.map(jnp.copy, params), tx)
  for _ in range(2):
    s_ref, m_ref = single(s_ref, batch, ref)

  mesh = sharding.make_mesh(mesh_shape)
  shardings = train_step.state_shardings(CFG, tx, mesh)
  batch_sh = jax.tree.map(lambda x: jax.sharding.NamedSharding(
      mesh, sharding.logical_to_spec(("batch",) + (None,) * (x.ndim - 1), sharding.TRAIN_RULES, x.shape, mesh)),
      batch)
  state = train_step.init_state(jax.device_put(params, shardings.params), tx, shardings)
  step = train_step.make_train_step(CFG, lcfg, tx, shardings)
  b_s = jax.device_put(batch, batch_sh)
  for _ in range(2):
    state, metrics = step(state, b_s, ref)
  assert state.params["layers"][0]["mlp"]["gate"].sharding.spec == shardings.params["layers"][0]["mlp"]["gate"].spec
  assert float(metrics["loss"]) == pytest.approx(float(m_ref["loss"]), abs=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), state.params, s_ref.params)


def test_activation_constraints_shrink_the_fsdp_step():
  """On an 8-way FSDP mesh, the step's activation sharding constraints (TRAIN_RULES) keep activations sharded by
  batch: XLA's per-device scratch of the compiled step is a fraction of the unconstrained program's."""
  cfg = llama.LlamaConfig(vocab_size=512, dim=128, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=256, max_seq_len=256)
  tx = train_step.make_optimizer(train_step.OptimConfig(lr=1e-3, total_steps=10))
  mesh = sharding.make_mesh((1, 8, 1))
  shardings = train_step.state_shardings(cfg, tx, mesh)
  state = jax.eval_shape(lambda p: train_step.init_state(p, tx), llama.abstract_params(cfg))
  state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), state, shardings)

  def sharded(shape, dtype):
    spec = sharding.logical_to_spec(("batch",) + (None,) * (len(shape) - 1), sharding.TRAIN_RULES, shape, mesh)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=jax.sharding.NamedSharding(mesh, spec))

  b, length = 8, 256
  tokens, mask = sharded((b, length), jnp.int32), sharded((b, length), jnp.float32)
  batch = objective.PairBatch(chosen=tokens, rejected=tokens, chosen_mask=mask, rejected_mask=mask,
                              weight=sharded((b,), jnp.float32))
  ref = sharded((b, 2), jnp.float32)
  lcfg = objective.LossConfig(beta=0.1)
  temp = {name: train_step.make_train_step(cfg, lcfg, tx, shardings, rules=rules).lower(state, batch, ref)
          .compile().memory_analysis().temp_size_in_bytes
          for name, rules in (("unconstrained", None), ("constrained", sharding.TRAIN_RULES))}
  assert temp["constrained"] < 0.5 * temp["unconstrained"], temp
