"""HF checkpoint conversion: full-model logit parity with transformers, round trips, sharded loading, bad input.

Checkpoints are written by `transformers.LlamaForCausalLM.save_pretrained` (sharded, with an index json) from
tiny random models; the expected parameter layout in `reference_params` is written independently of
`convert._TABLE`.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import torch
import transformers
from jax.sharding import PartitionSpec as P

from tsp_jax.model import convert, llama, sharding

VOCAB, DIM, HEADS, FFN, LAYERS, MAX_LEN = 256, 64, 4, 96, 2, 128
HEAD_DIM = DIM // HEADS
BATCH, LEN = 4, 64


def hf_config(n_kv_heads: int, **kw) -> transformers.LlamaConfig:
  # transformers 5.x takes rope_theta inside rope_parameters (a top-level rope_theta kwarg is converted).
  return transformers.LlamaConfig(**{**dict(
      vocab_size=VOCAB, hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
      num_key_value_heads=n_kv_heads, intermediate_size=FFN, rms_norm_eps=1e-5, max_position_embeddings=MAX_LEN,
      rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_word_embeddings=False), **kw})


def hf_logits(model: transformers.LlamaForCausalLM, tokens: np.ndarray) -> np.ndarray:
  with torch.inference_mode():
    return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


def our_logits(params, cfg, tokens, rules=None) -> np.ndarray:
  positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
  logits, _ = llama.forward(params, cfg, jnp.asarray(tokens), jnp.asarray(positions), rules=rules)
  return np.asarray(logits)


def reference_params(state_dict: dict[str, torch.Tensor], n_kv_heads: int) -> dict:
  """Our parameter tree from an HF state dict, as fp32 numpy, mapped by hand (independent of convert.py)."""
  t = lambda name: state_dict[name].float().numpy()
  layers = {}
  for i in range(LAYERS):
    pre = f"model.layers.{i}."
    layers[i] = {
        "attn": {"q": t(pre + "self_attn.q_proj.weight").T.reshape(DIM, HEADS, HEAD_DIM),
                 "k": t(pre + "self_attn.k_proj.weight").T.reshape(DIM, n_kv_heads, HEAD_DIM),
                 "v": t(pre + "self_attn.v_proj.weight").T.reshape(DIM, n_kv_heads, HEAD_DIM),
                 "o": t(pre + "self_attn.o_proj.weight").T.reshape(HEADS, HEAD_DIM, DIM)},
        "attn_norm": {"scale": t(pre + "input_layernorm.weight")},
        "mlp": {"gate": t(pre + "mlp.gate_proj.weight").T, "up": t(pre + "mlp.up_proj.weight").T,
                "down": t(pre + "mlp.down_proj.weight").T},
        "mlp_norm": {"scale": t(pre + "post_attention_layernorm.weight")},
    }
  return {"embed": t("model.embed_tokens.weight"), "layers": layers,
          "final_norm": {"scale": t("model.norm.weight")}, "lm_head": t("lm_head.weight").T}


def assert_trees_equal(a, b, **kw):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y), **kw), a, b)


class HFCheckpoint:
  """A random HF model saved sharded, its state dict and its logits on `tokens`."""

  def __init__(self, path, n_kv_heads: int, torch_dtype, tokens):
    torch.manual_seed(n_kv_heads)
    model = transformers.LlamaForCausalLM(hf_config(n_kv_heads, attn_implementation="eager")).eval()
    with torch.no_grad():  # non-trivial norm scales, so a swapped norm would show in the logits
      for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
          p.copy_(1 + 0.1 * torch.randn_like(p))
    model = model.to(torch_dtype)
    model.save_pretrained(path, max_shard_size="100KB")
    self.path, self.n_kv_heads, self.model = path, n_kv_heads, model
    self.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    self.logits = hf_logits(model.float(), tokens) if torch_dtype == torch.float32 else None


@pytest.fixture(scope="module")
def tokens():
  return np.random.RandomState(0).randint(0, VOCAB, size=(BATCH, LEN)).astype(np.int32)


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory, tokens):
  """Factory of module-cached HF checkpoints: hf_checkpoint(n_kv_heads, torch_dtype=torch.float32)."""
  cache = {}

  def get(n_kv_heads: int, torch_dtype=torch.float32) -> HFCheckpoint:
    key = (n_kv_heads, torch_dtype)
    if key not in cache:
      path = tmp_path_factory.mktemp(f"hf_kv{n_kv_heads}_{str(torch_dtype).split('.')[-1]}")
      cache[key] = HFCheckpoint(path, n_kv_heads, torch_dtype, tokens)
      assert (path / "model.safetensors.index.json").is_file()
      assert len(list(path.glob("model-*-of-*.safetensors"))) > 1
    return cache[key]

  return get


@pytest.fixture(scope="module")
def loaded(hf_checkpoint):
  """(HFCheckpoint, cfg, params) of the 2-kv-head fp32 checkpoint, loaded unsharded."""
  ck = hf_checkpoint(2)
  cfg, params = convert.load_hf_checkpoint(ck.path)
  return ck, cfg, params


# ----------------------------------------------------------------------------------------------------------
# Parity and round trips.


@pytest.mark.parametrize("n_kv_heads", [1, 2, HEADS])
def test_logits_match_hf(hf_checkpoint, tokens, n_kv_heads):
  ck = hf_checkpoint(n_kv_heads)
  cfg, params = convert.load_hf_checkpoint(ck.path)
  assert cfg == llama.LlamaConfig(vocab_size=VOCAB, dim=DIM, n_layers=LAYERS, n_heads=HEADS,
                                  n_kv_heads=n_kv_heads, ffn_dim=FFN, rope_theta=1e6, norm_eps=1e-5,
                                  max_seq_len=MAX_LEN)
  assert_trees_equal(params, reference_params(ck.state_dict, n_kv_heads))
  np.testing.assert_allclose(our_logits(params, cfg, tokens), ck.logits, atol=1e-4, rtol=0)


def test_round_trip_through_hf(loaded, tokens, tmp_path):
  ck, cfg, params = loaded
  convert.save_hf_checkpoint(params, cfg, tmp_path, max_shard_bytes=40_000)
  index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
  shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
  n = len(shards)
  assert n > 2 and shards == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
  assert set(index["weight_map"].values()) == set(shards)
  assert set(index["weight_map"]) == set(ck.state_dict)
  assert index["metadata"]["total_size"] == sum(v.numel() * 4 for v in ck.state_dict.values())

  reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
  assert reloaded.config.rope_parameters["rope_theta"] == 1e6
  for name, value in reloaded.state_dict().items():
    torch.testing.assert_close(value, ck.state_dict[name], rtol=0, atol=0, msg=name)
  np.testing.assert_allclose(hf_logits(reloaded, tokens), ck.logits, atol=1e-5, rtol=0)

  cfg2, params2 = convert.load_hf_checkpoint(tmp_path)
  assert cfg2 == cfg
  assert_trees_equal(params2, params)


def test_saved_config_read_back_by_ours_and_transformers(tmp_path):
  cfg = llama.LlamaConfig(vocab_size=VOCAB, dim=DIM, n_layers=1, n_heads=HEADS, n_kv_heads=1, ffn_dim=FFN,
                          rope_theta=5e5, norm_eps=1e-6, max_seq_len=MAX_LEN)
  params = llama.init_params(cfg, jax.random.key(0))
  convert.save_hf_checkpoint(params, cfg, tmp_path, max_shard_bytes=10_000)
  assert (tmp_path / "model.safetensors.index.json").is_file()
  convert.save_hf_checkpoint(params, cfg, tmp_path)  # small enough for one file: stale shards are removed
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]

  written = json.loads((tmp_path / "config.json").read_text())
  assert written["rope_theta"] == 5e5  # transformers 4.x reads this one
  assert written["rope_parameters"] == {"rope_type": "default", "rope_theta": 5e5}  # 5.x this one
  assert written["tie_word_embeddings"] is False and written["torch_dtype"] == written["dtype"] == "float32"
  hf_cfg = transformers.AutoConfig.from_pretrained(tmp_path)
  assert isinstance(hf_cfg, transformers.LlamaConfig)
  assert hf_cfg.rope_parameters["rope_theta"] == 5e5 and hf_cfg.num_key_value_heads == 1
  assert convert.config_from_hf(written) == cfg
  cfg2, params2 = convert.load_hf_checkpoint(tmp_path)
  assert cfg2 == cfg
  assert_trees_equal(params2, params)


def test_bf16_checkpoint(hf_checkpoint, tmp_path):
  ck = hf_checkpoint(2, torch.bfloat16)
  with safetensors.safe_open(next(ck.path.glob("model-*.safetensors")), framework="numpy") as f:
    assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
  expected = reference_params(ck.state_dict, 2)  # the bf16 values, exactly, in fp32

  cfg, params = convert.load_hf_checkpoint(ck.path)  # cast up to the default float32
  assert cfg.param_dtype == "float32"
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  assert_trees_equal(params, expected)

  cfg16, params16 = convert.load_hf_checkpoint(ck.path, dtype=jnp.bfloat16)
  assert cfg16.param_dtype == "bfloat16"
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params16))
  assert_trees_equal(jax.tree.map(lambda x: x.astype(jnp.float32), params16), expected)

  # Saving bf16 params writes BF16 tensors with the same bits, and transformers reads them as bf16.
  convert.save_hf_checkpoint(params16, cfg16, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
  with safetensors.safe_open(tmp_path / "model.safetensors", framework="numpy") as f:
    q = f.get_tensor("model.layers.1.self_attn.q_proj.weight")
  assert q.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(q.astype(np.float32),
                                ck.state_dict["model.layers.1.self_attn.q_proj.weight"].float().numpy())
  reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path)
  assert reloaded.dtype == torch.bfloat16
  # fp32 params saved with dtype=bfloat16: the same bits again.
  convert.save_hf_checkpoint(params, cfg, tmp_path / "down", dtype=jnp.bfloat16)
  assert json.loads((tmp_path / "down" / "config.json").read_text())["dtype"] == "bfloat16"
  with safetensors.safe_open(tmp_path / "down" / "model.safetensors", framework="numpy") as f:
    np.testing.assert_array_equal(f.get_tensor("model.layers.1.self_attn.q_proj.weight"), q)
  torch.testing.assert_close(reloaded.model.embed_tokens.weight, ck.state_dict["model.embed_tokens.weight"],
                             rtol=0, atol=0)


def test_sharded_load(loaded, tokens):
  ck, cfg, params = loaded
  mesh = sharding.make_mesh((2, 2, 2))
  cfg_s, sharded = convert.load_hf_checkpoint(ck.path, mesh=mesh, rules=sharding.TRAIN_RULES)
  assert cfg_s == cfg
  layer = sharded["layers"][1]
  # TRAIN_RULES: embed -> fsdp; vocab, heads, kv_heads, mlp -> tensor; head_dim, norm -> replicated.
  assert sharded["embed"].sharding.spec == P("tensor", "fsdp")  # [vocab, embed]
  assert layer["attn"]["q"].sharding.spec == P("fsdp", "tensor", None)  # [embed, heads, head_dim]
  assert layer["attn"]["k"].sharding.spec == P("fsdp", "tensor", None)  # [embed, kv_heads, head_dim]
  assert layer["attn"]["o"].sharding.spec == P("tensor", None, "fsdp")  # [heads, head_dim, embed]
  assert layer["mlp"]["gate"].sharding.spec == P("fsdp", "tensor")  # [embed, mlp]
  assert layer["mlp"]["down"].sharding.spec == P("tensor", "fsdp")  # [mlp, embed]
  assert layer["mlp_norm"]["scale"].sharding.spec == P(None)
  assert sharded["lm_head"].sharding.spec == P("fsdp", "tensor")  # [embed, vocab]
  expected = llama.param_shardings(cfg, mesh, sharding.TRAIN_RULES)
  jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim) or pytest.fail(f"{x.sharding} vs {s}"),
               sharded, expected)
  assert {s.data.shape for s in sharded["embed"].addressable_shards} == {(VOCAB // 2, DIM // 2)}
  assert_trees_equal(sharded, params)

  with jax.set_mesh(mesh):
    logits = our_logits(sharded, cfg, tokens, rules=sharding.TRAIN_RULES)
  np.testing.assert_allclose(logits, our_logits(params, cfg, tokens), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Bad input.


def copy_checkpoint(ck: HFCheckpoint, dst):
  shutil.copytree(ck.path, dst, dirs_exist_ok=True)
  return dst


def write_single_file(dst, ck: HFCheckpoint, edit=None, config_edit=None):
  """A single-file checkpoint of ck's tensors after `edit(tensors)` and `config_edit(config)`."""
  dst.mkdir(parents=True, exist_ok=True)
  tensors = {k: v.numpy() for k, v in ck.state_dict.items()}
  if edit:
    edit(tensors)
  safetensors.numpy.save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
  config = json.loads((ck.path / "config.json").read_text())
  if config_edit:
    config_edit(config)
  (dst / "config.json").write_text(json.dumps(config))
  return dst


@pytest.fixture
def count_reads(monkeypatch):
  """Counts tensor-data reads made by the loader (header reads are free)."""
  reads = []
  real_open = convert._safe_open

  class Counting:
    def __init__(self, f):
      self._f = f

    def __enter__(self):
      self._h = self._f.__enter__()
      return self

    def __exit__(self, *exc):
      return self._f.__exit__(*exc)

    def get_tensor(self, name):
      reads.append(name)
      return self._h.get_tensor(name)

    def __getattr__(self, attr):
      return getattr(self._h, attr)

  monkeypatch.setattr(convert, "_safe_open", lambda file: Counting(real_open(file)))
  return reads


def test_ignores_rotary_inv_freq_buffers(hf_checkpoint, tmp_path, count_reads):
  ck = hf_checkpoint(2)
  inv_freq = lambda t: t.__setitem__("model.layers.0.self_attn.rotary_emb.inv_freq", np.ones(8, np.float32))
  _, params = convert.load_hf_checkpoint(write_single_file(tmp_path, ck, inv_freq))
  assert_trees_equal(params, reference_params(ck.state_dict, 2))
  assert sorted(count_reads) == sorted(ck.state_dict)  # each tensor read once; the buffer never


def test_missing_tensor(hf_checkpoint, tmp_path, count_reads):
  ck = hf_checkpoint(2)
  path = write_single_file(tmp_path, ck, lambda t: (t.pop("model.layers.1.mlp.up_proj.weight"),
                                                    t.pop("lm_head.weight")))
  with pytest.raises(ValueError, match=r"missing 2 tensor\(s\).*lm_head\.weight, model\.layers\.1\.mlp\.up_proj"):
    convert.load_hf_checkpoint(path)
  assert count_reads == []  # validated before reading any data


def test_unexpected_tensor(hf_checkpoint, tmp_path, count_reads):
  ck = hf_checkpoint(2)
  path = write_single_file(tmp_path, ck, lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.bias",
                                                                 np.zeros(DIM, np.float32)))
  with pytest.raises(ValueError, match=r"1 unexpected tensor\(s\).*model\.layers\.0\.self_attn\.q_proj\.bias"):
    convert.load_hf_checkpoint(path)
  assert count_reads == []


def test_shape_mismatch(hf_checkpoint, tmp_path, count_reads):
  ck = hf_checkpoint(2)
  name = "model.layers.1.self_attn.k_proj.weight"  # 2 kv heads: [32, 64]; a 4-kv-head layer's is [64, 64]
  path = write_single_file(tmp_path, ck, lambda t: t.__setitem__(name, np.zeros((DIM, DIM), np.float32)))
  with pytest.raises(ValueError, match=rf"tensor {name} in .*model\.safetensors: expected shape \(32, 64\), "
                                       rf"found \(64, 64\)"):
    convert.load_hf_checkpoint(path)
  assert count_reads == []


def test_index_disagrees_with_shard(hf_checkpoint, tmp_path):
  path = copy_checkpoint(hf_checkpoint(2), tmp_path)
  index = json.loads((path / "model.safetensors.index.json").read_text())
  shards = sorted(set(index["weight_map"].values()))
  index["weight_map"]["lm_head.weight"] = next(s for s in shards if s != index["weight_map"]["lm_head.weight"])
  (path / "model.safetensors.index.json").write_text(json.dumps(index))
  with pytest.raises(ValueError, match=r"maps tensor lm_head\.weight to .*model-0000\d-of-\d+\.safetensors, but it "
                                       r"is in"):
    convert.load_hf_checkpoint(path)


def test_corrupt_and_truncated_files(hf_checkpoint, tmp_path):
  ck = hf_checkpoint(2)
  garbage = write_single_file(tmp_path / "garbage", ck)
  (garbage / "model.safetensors").write_bytes(np.random.RandomState(0).bytes(5000))
  with pytest.raises(ValueError, match=r"cannot read safetensors file .*garbage/model\.safetensors"):
    convert.load_hf_checkpoint(garbage)

  truncated = copy_checkpoint(ck, tmp_path / "truncated")
  shard = sorted(truncated.glob("model-*.safetensors"))[-1]
  shard.write_bytes(shard.read_bytes()[:-100])
  with pytest.raises(ValueError, match=rf"cannot read safetensors file .*{shard.name} \(corrupt or truncated\?\)"):
    convert.load_hf_checkpoint(truncated)


def test_missing_shard_file(hf_checkpoint, tmp_path):
  path = copy_checkpoint(hf_checkpoint(2), tmp_path)
  shard = sorted(path.glob("model-*.safetensors"))[1]
  shard.unlink()
  with pytest.raises(FileNotFoundError, match=rf"model\.safetensors\.index\.json references shard file\(s\) that "
                                              rf"do not exist: \[.*{shard.name}'\]"):
    convert.load_hf_checkpoint(path)


def test_missing_config_and_weights(hf_checkpoint, tmp_path):
  path = copy_checkpoint(hf_checkpoint(2), tmp_path / "a")
  (path / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match=r"no config\.json in HF checkpoint folder .*a"):
    convert.load_hf_checkpoint(path)
  empty = tmp_path / "b"
  empty.mkdir()
  (empty / "config.json").write_text((hf_checkpoint(2).path / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or model\.safetensors\.index\.json in"):
    convert.load_hf_checkpoint(empty)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    convert.load_hf_checkpoint(tmp_path / "nowhere")


def test_refuses_tied_embeddings_and_rope_scaling_on_load(hf_checkpoint, tmp_path):
  ck = hf_checkpoint(2)
  tied = write_single_file(tmp_path / "tied", ck, config_edit=lambda c: c.update(tie_word_embeddings=True))
  with pytest.raises(ValueError, match="tie_word_embeddings is true"):
    convert.load_hf_checkpoint(tied)
  scaled = write_single_file(tmp_path / "scaled", ck,
                             config_edit=lambda c: c.update(rope_scaling={"rope_type": "linear", "factor": 2.0}))
  with pytest.raises(ValueError, match=r"rope_scaling = .*'linear'.*only default RoPE \(no scaling\) is implemented"):
    convert.load_hf_checkpoint(scaled)


BASE_HF = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=VOCAB, hidden_size=DIM,
               num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=FFN,
               rms_norm_eps=1e-5, max_position_embeddings=MAX_LEN)


@pytest.mark.parametrize("fields, theta", [
    (dict(rope_theta=5e5), 5e5),  # transformers 4.x
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6}), 1e6),  # 5.x
    (dict(rope_theta=1e6, rope_scaling=None, rope_parameters={"rope_type": "default", "rope_theta": 1e6}), 1e6),
    (dict(rope_theta=1e4, rope_scaling={"rope_type": "default"}), 1e4),
])
def test_config_from_hf_reads_rope_theta_from_both_places(fields, theta):
  cfg = convert.config_from_hf({**BASE_HF, **fields})
  assert cfg.rope_theta == theta
  assert (cfg.vocab_size, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim, cfg.norm_eps,
          cfg.max_seq_len) == (VOCAB, DIM, LAYERS, HEADS, 2, FFN, 1e-5, MAX_LEN)


def test_config_from_hf_defaults_kv_heads_and_round_trips():
  base = {k: v for k, v in BASE_HF.items() if k != "num_key_value_heads"}
  assert convert.config_from_hf({**base, "rope_theta": 1e6}).n_kv_heads == HEADS
  cfg = convert.config_from_hf({**BASE_HF, "rope_theta": 1e6}, dtype="bfloat16")
  assert cfg.dtype == "bfloat16"
  # The activation dtype is a run setting, not part of the HF config.
  assert convert.config_from_hf(convert.config_to_hf(cfg), dtype="bfloat16") == cfg


@pytest.mark.parametrize("fields, msg", [
    (dict(rope_theta=1e6, rope_scaling={"rope_type": "linear", "factor": 2.0}),
     r"rope_scaling = .*rope_type 'linear'.*only default RoPE \(no scaling\) is implemented"),
    (dict(rope_theta=1e6, rope_scaling={"type": "dynamic", "factor": 2.0}), r"rope_type 'dynamic'.*only default RoPE"),
    (dict(rope_theta=1e6, rope_scaling={"factor": 2.0}), r"rope_type None.*only default RoPE"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}),
     r"rope_parameters = .*rope_type 'llama3'.*only default RoPE"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}), r"rope_type 'yarn'"),
    (dict(), r"no rope_theta \(neither at the top level nor in rope_parameters\)"),
    (dict(rope_parameters={"rope_type": "default"}), r"no rope_theta"),
    (dict(rope_theta=5e5, rope_parameters={"rope_type": "default", "rope_theta": 1e6}), "conflicting rope_theta"),
    (dict(rope_theta=1e6, model_type="mistral"), r"model_type 'mistral', expected 'llama'"),
    (dict(rope_theta=1e6, architectures=["LlamaForSequenceClassification"]), r"architectures \['LlamaFor"),
    (dict(rope_theta=1e6, tie_word_embeddings=True), "tie_word_embeddings is true"),
    (dict(rope_theta=1e6, hidden_act="gelu"), r"hidden_act 'gelu', only 'silu'"),
    (dict(rope_theta=1e6, attention_bias=True), "attention_bias is true"),
    (dict(rope_theta=1e6, mlp_bias=True), "mlp_bias is true"),
    (dict(rope_theta=1e6, head_dim=32), r"head_dim 32 != hidden_size / num_attention_heads = 16"),
    (dict(rope_theta=1e6, vocab_size=None), r"lacks required field\(s\) \['vocab_size'\]"),
])
def test_config_from_hf_refuses(fields, msg):
  with pytest.raises(ValueError, match=msg):
    convert.config_from_hf({**BASE_HF, **fields})


def test_save_rejects_mismatched_params(loaded, tmp_path):
  _, cfg, params = loaded
  other = llama.LlamaConfig(vocab_size=VOCAB, dim=DIM, n_layers=LAYERS, n_heads=HEADS, n_kv_heads=1, ffn_dim=FFN)
  with pytest.raises(ValueError, match=r"params\['layers', 0, 'attn', 'k'\] has shape \(64, 2, 16\), cfg implies "
                                       r"\(64, 1, 16\)"):
    convert.save_hf_checkpoint(params, other, tmp_path)
  assert not (tmp_path / "config.json").exists()
