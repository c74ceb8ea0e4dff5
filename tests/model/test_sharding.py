"""Sharding on 8 fake CPU devices (set in tests/conftest.py): meshes, logical rules, sharded forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tsp_jax.model import llama, sharding

CFG = llama.LlamaConfig(vocab_size=256, dim=64, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=128, max_seq_len=64)


def test_eight_devices_available():
  assert jax.device_count() == 8


@pytest.mark.parametrize("shape, msg", [
    ((2, 2), "must have 3 entries"),
    ((3, 1, 1), "has 3 devices but 8"),
    ((-1, -1, 2), "positive"),
    ((3, -1, 1), "cannot infer"),
])
def test_make_mesh_rejects_bad_shapes(shape, msg):
  with pytest.raises(ValueError, match=msg):
    sharding.make_mesh(shape)


def test_make_mesh_infers_one_axis():
  mesh = sharding.make_mesh((2, -1, 2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_logical_to_spec_rules():
  mesh = sharding.make_mesh((2, 2, 2))
  rules = sharding.TRAIN_RULES
  assert sharding.logical_to_spec(("vocab", "embed"), rules, (256, 64), mesh) == P("tensor", "fsdp")
  # 'batch' takes data and fsdp, so a later 'embed' cannot reuse fsdp.
  assert sharding.logical_to_spec(("batch", "length", "embed"), rules, (4, 8, 64), mesh) == P(
      ("data", "fsdp"), None, None)
  # A dim not divisible by its mesh axes is replicated (3 kv heads on a 2-way tensor axis).
  assert sharding.logical_to_spec(("embed", "kv_heads", "head_dim"), rules, (64, 3, 8), mesh) == P(
      "fsdp", None, None)
  # Batch 2 cannot split 4 ways over (data, fsdp): it keeps the divisible prefix (data).
  assert sharding.logical_to_spec(("batch", "length"), rules, (2, 8), mesh) == P("data", None)
  # Size-1 mesh axes are dropped from specs.
  mesh_t = sharding.make_mesh((1, 1, 8))
  assert sharding.logical_to_spec(("embed", "mlp"), rules, (64, 128), mesh_t) == P(None, "tensor")
  with pytest.raises(KeyError, match="no rule"):
    sharding.logical_to_spec(("nonsense",), rules)


def test_init_materialises_params_in_their_shardings():
  mesh = sharding.make_mesh((2, 2, 2))
  params = llama.init_params(CFG, jax.random.key(0), mesh=mesh)
  assert params["embed"].sharding.spec == P("tensor", "fsdp")
  assert params["layers"][0]["attn"]["q"].sharding.spec == P("fsdp", "tensor", None)
  assert params["layers"][0]["attn"]["k"].sharding.spec == P("fsdp", "tensor", None)
  assert params["layers"][1]["mlp"]["gate"].sharding.spec == P("fsdp", "tensor")
  assert params["layers"][1]["mlp"]["down"].sharding.spec == P("tensor", "fsdp")
  assert params["lm_head"].sharding.spec == P("fsdp", "tensor")
  shard_shapes = {s.data.shape for s in params["embed"].addressable_shards}
  assert shard_shapes == {(128, 32)}
  # Same key, same values as the unsharded initialisation.
  ref = llama.init_params(CFG, jax.random.key(0))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, ref)


def test_sample_rules_keep_embed_unsharded():
  mesh = sharding.make_mesh((2, 2, 2))
  shardings = llama.param_shardings(CFG, mesh, sharding.SAMPLE_RULES)
  assert shardings["layers"][0]["mlp"]["up"].spec == P(None, "tensor")
  assert shardings["embed"].spec == P("tensor", None)


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
@pytest.mark.parametrize("rules", [sharding.TRAIN_RULES, sharding.SAMPLE_RULES], ids=["train", "sample"])
def test_sharded_forward_equals_unsharded(mesh_shape, rules):
  params = llama.init_params(CFG, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, CFG.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(16), (8, 16))
  ref, _ = llama.forward(params, CFG, tokens, positions)

  mesh = sharding.make_mesh(mesh_shape)
  sharded = jax.device_put(params, llama.param_shardings(CFG, mesh, rules))
  batch_sharding = NamedSharding(mesh, sharding.logical_to_spec(("batch", "length"), rules, (8, 16), mesh))
  tokens_s, positions_s = jax.device_put((tokens, positions), batch_sharding)
  with jax.set_mesh(mesh):
    out, _ = llama.forward(sharded, CFG, tokens_s, positions_s, rules=rules)
    cache = llama.init_cache(CFG, 8, 32, mesh=mesh, rules=rules)
    prefill, cache = llama.forward(sharded, CFG, tokens_s[:, :12], positions_s[:, :12], cache, rules=rules)
    step, cache = llama.forward(sharded, CFG, tokens_s[:, 12:13], positions_s[:, 12:13], cache, rules=rules)
  assert out.sharding.spec[0] == batch_sharding.spec[0]
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
  np.testing.assert_allclose(prefill, ref[:, :12], atol=1e-5, rtol=0)
  np.testing.assert_allclose(step, ref[:, 12:13], atol=1e-5, rtol=0)
  assert cache.k[0].sharding.spec[0] == batch_sharding.spec[0]
