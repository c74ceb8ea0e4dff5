"""The "cudnn" kernel on CPU: which calls it sends to cuDNN's fused attention is a static function of the config
and shapes (never the backend), the fused call computes what the einsum path does, and everything it does not
take runs exactly as "xla"."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsp_jax.model import llama

CFG = llama.LlamaConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)


@pytest.mark.parametrize("t, dtype, dh, shared, applies", [
    (5, jnp.bfloat16, 8, False, True), (5, jnp.float16, 128, False, True), (1, jnp.bfloat16, 8, False, False),
    (5, jnp.float32, 8, False, False), (5, jnp.bfloat16, 256, False, False), (5, jnp.bfloat16, 12, False, False),
    (5, jnp.bfloat16, 8, True, False)])
def test_cudnn_applies(t, dtype, dh, shared, applies):
  q = jax.ShapeDtypeStruct((2, t, 4, dh), dtype)  # [B, T, H, Dh]
  assert llama.cudnn_applies(q, () if shared else None) is applies


def test_fused_attention_equals_the_einsum_path():
  """Grouped-query heads, an empty key slot, packed segments and a padding query (whose output is free)."""
  b, t, h, kv, dh = 2, 6, 4, 2, 8
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in
             ((b, t, h, dh), (b, kv, dh, t), (b, kv, t, dh)))
  pos = jnp.asarray([[0, 1, 2, 0, 1, -1], [0, 1, 2, 3, 4, 5]], jnp.int32)  # [B, T]: two documents, then padding
  ids = jnp.asarray([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]], jnp.int32)
  seg = llama.Segments.documents(ids)
  ref = llama.attend(q, k, v, pos, pos, kernel="xla", segments=seg)  # [B, T, H, Dh]
  visible = (pos[:, None, :] <= pos[:, :, None]) & (pos[:, None, :] >= 0) & (ids[:, None, :] == ids[:, :, None])
  got = jax.jit(llama.fused_attention, static_argnames="implementation")(q, k, v, visible, implementation="xla")
  real = np.asarray(pos >= 0)  # [B, T]
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(ref)[real], atol=1e-5, rtol=0)
  assert np.isfinite(np.asarray(got)).all()


def _lower(cfg: llama.LlamaConfig, t: int) -> str:
  tok = jnp.zeros((2, t), jnp.int32)
  return llama.forward.trace(llama.abstract_params(cfg), cfg, tok, tok).lower().as_text()


def test_cudnn_is_chosen_by_the_config_not_the_backend(monkeypatch):
  """On this CPU the "cudnn" kernel of a bf16 model asks for cuDNN (and fails: there is none) in a T > 1 forward;
  its decode steps and an fp32 model's calls are the "xla" programs, and the backend is never asked."""
  monkeypatch.setattr(jax, "default_backend", lambda: pytest.fail("the model asked for jax.default_backend()"))
  bf16 = dataclasses.replace(CFG, dtype="bfloat16", max_seq_len=62)  # configs no other test traced
  with pytest.raises(RuntimeError, match="cuDNN"):
    _lower(dataclasses.replace(bf16, kernel="cudnn"), 5)
  assert _lower(dataclasses.replace(bf16, kernel="xla"), 5)  # the same model under "xla" lowers here
  cache = lambda cfg: llama.init_cache(cfg, 2, 8)
  tok = jnp.zeros((2, 1), jnp.int32)
  decode = {kernel: llama.forward.trace(llama.abstract_params(c), c, tok, tok, cache(c)).lower().as_text()
            for kernel in ("xla", "cudnn") for c in [dataclasses.replace(bf16, kernel=kernel)]}
  assert decode["cudnn"] == decode["xla"]
  fp32 = dataclasses.replace(CFG, max_seq_len=61)
  assert _lower(dataclasses.replace(fp32, kernel="cudnn"), 5) == _lower(fp32, 5)
