"""Per-module parity with HF transformers' Llama (torch CPU, fp32): RMSNorm, RoPE, attention, decoder layer.

The weight mapping here is written independently of `convert.py` (HF Linear weights are [out, in]).
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from transformers.models.llama import modeling_llama as hf

from tsp_jax.model import llama

B, T, DIM, HEADS = 2, 12, 64, 4


def make_configs(n_kv_heads: int):
  ours = llama.LlamaConfig(vocab_size=256, dim=DIM, n_layers=1, n_heads=HEADS, n_kv_heads=n_kv_heads, ffn_dim=96,
                           rope_theta=1e6, norm_eps=1e-5, max_seq_len=128)
  theirs = transformers.LlamaConfig(vocab_size=256, hidden_size=DIM, num_hidden_layers=1,
                                    num_attention_heads=HEADS, num_key_value_heads=n_kv_heads,
                                    intermediate_size=96, rms_norm_eps=1e-5, max_position_embeddings=128,
                                    rope_parameters={"rope_type": "default", "rope_theta": 1e6})
  theirs._attn_implementation = "eager"
  return ours, theirs


def t2n(x: torch.Tensor) -> np.ndarray:
  return x.detach().numpy()


def load_attention(module: llama.Attention, attn: hf.LlamaAttention, cfg: llama.LlamaConfig):
  d, dh = cfg.dim, cfg.head_dim
  module.q[...] = jnp.asarray(t2n(attn.q_proj.weight).T.reshape(d, cfg.n_heads, dh))
  module.k[...] = jnp.asarray(t2n(attn.k_proj.weight).T.reshape(d, cfg.n_kv_heads, dh))
  module.v[...] = jnp.asarray(t2n(attn.v_proj.weight).T.reshape(d, cfg.n_kv_heads, dh))
  module.o[...] = jnp.asarray(t2n(attn.o_proj.weight).T.reshape(cfg.n_heads, dh, d))


def hf_causal_mask(t: int) -> torch.Tensor:
  """Additive [1, 1, T, T] causal mask as HF's eager attention expects."""
  return torch.triu(torch.full((t, t), torch.finfo(torch.float32).min), diagonal=1)[None, None]


@pytest.fixture(autouse=True)
def _seed():
  torch.manual_seed(0)


def test_rms_norm():
  norm = hf.LlamaRMSNorm(DIM, eps=1e-5)
  with torch.no_grad():
    norm.weight.copy_(torch.randn(DIM))
  x = torch.randn(B, T, DIM) * 3
  ours = llama.rms_norm(jnp.asarray(t2n(x)), jnp.asarray(t2n(norm.weight)), 1e-5)
  np.testing.assert_allclose(ours, t2n(norm(x)), atol=1e-5, rtol=1e-5)


def test_rope_matches_hf_rotate_half():
  _, hf_cfg = make_configs(HEADS)
  rotary = hf.LlamaRotaryEmbedding(hf_cfg)
  positions = torch.tensor([[0, 1, 2, 7, 100, 4000], [5, 6, 7, 8, 9, 16383]])
  q = torch.randn(2, HEADS, 6, DIM // HEADS)
  k = torch.randn(2, 2, 6, DIM // HEADS)
  cos, sin = rotary(q, positions)
  q_ref, k_ref = hf.apply_rotary_pos_emb(q, k, cos, sin)
  our_cos, our_sin = llama.rope_cos_sin(jnp.asarray(t2n(positions)), DIM // HEADS, 1e6)
  np.testing.assert_allclose(our_cos, t2n(cos), atol=1e-5)
  np.testing.assert_allclose(our_sin, t2n(sin), atol=1e-5)
  # Ours takes [B, T, N, Dh]; HF [B, N, T, Dh].
  q_ours = llama.apply_rope(jnp.asarray(t2n(q.transpose(1, 2))), our_cos, our_sin)
  k_ours = llama.apply_rope(jnp.asarray(t2n(k.transpose(1, 2))), our_cos, our_sin)
  np.testing.assert_allclose(q_ours, t2n(q_ref.transpose(1, 2)), atol=1e-4)
  np.testing.assert_allclose(k_ours, t2n(k_ref.transpose(1, 2)), atol=1e-4)


def test_rope_theta_is_used():
  cos_a, _ = llama.rope_cos_sin(jnp.arange(8)[None], 16, 1e6)
  cos_b, _ = llama.rope_cos_sin(jnp.arange(8)[None], 16, 1e4)
  assert float(jnp.abs(cos_a - cos_b).max()) > 1e-3


@pytest.mark.parametrize("n_kv_heads", [1, 2, HEADS])
def test_attention(n_kv_heads):
  cfg, hf_cfg = make_configs(n_kv_heads)
  attn = hf.LlamaAttention(hf_cfg, layer_idx=0).eval()
  rotary = hf.LlamaRotaryEmbedding(hf_cfg)
  x = torch.randn(B, T, DIM)
  positions = torch.arange(T)[None].expand(B, T)
  with torch.no_grad():
    ref, _ = attn(x, position_embeddings=rotary(x, positions), attention_mask=hf_causal_mask(T))
  module = llama.Attention(cfg, rngs=nnx.Rngs(0))
  load_attention(module, attn, cfg)
  out, _ = module(jnp.asarray(t2n(x)), jnp.asarray(t2n(positions)), None, None)
  np.testing.assert_allclose(out, t2n(ref), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_kv_heads", [1, HEADS])
def test_decoder_layer(n_kv_heads):
  cfg, hf_cfg = make_configs(n_kv_heads)
  layer = hf.LlamaDecoderLayer(hf_cfg, layer_idx=0).eval()
  with torch.no_grad():
    layer.input_layernorm.weight.copy_(1 + 0.1 * torch.randn(DIM))
    layer.post_attention_layernorm.weight.copy_(1 + 0.1 * torch.randn(DIM))
  rotary = hf.LlamaRotaryEmbedding(hf_cfg)
  x = torch.randn(B, T, DIM)
  positions = torch.arange(T)[None].expand(B, T)
  with torch.no_grad():
    ref = layer(x, attention_mask=hf_causal_mask(T), position_ids=positions,
                position_embeddings=rotary(x, positions))
  block = llama.Block(cfg, rngs=nnx.Rngs(0))
  load_attention(block.attn, layer.self_attn, cfg)
  block.attn_norm.scale[...] = jnp.asarray(t2n(layer.input_layernorm.weight))
  block.mlp_norm.scale[...] = jnp.asarray(t2n(layer.post_attention_layernorm.weight))
  block.mlp.gate[...] = jnp.asarray(t2n(layer.mlp.gate_proj.weight).T)
  block.mlp.up[...] = jnp.asarray(t2n(layer.mlp.up_proj.weight).T)
  block.mlp.down[...] = jnp.asarray(t2n(layer.mlp.down_proj.weight).T)
  out, _ = block(jnp.asarray(t2n(x)), jnp.asarray(t2n(positions)), None, None)
  np.testing.assert_allclose(out, t2n(ref), atol=1e-5, rtol=1e-4)
