"""A random tiny Llama saved as an HF folder (config.json, safetensors, tokenizer.model), built by the tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import jax
import numpy as np

from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.model import convert, llama


def tiny_hf_checkpoint(root: str | os.PathLike, texts: Sequence[str], max_seq_len: int = 512) -> str:
  """`<root>/export`: a 2-layer Llama with a SentencePiece tokenizer trained on `texts`; returns its path."""
  root = os.fspath(root)
  tok = tokenizer_lib.train_tokenizer(texts, tokenizer_lib.min_vocab_size(texts) + 200,
                                      os.path.join(root, "tok.model"))
  cfg = llama.LlamaConfig.tiny(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                               ffn_dim=64, max_seq_len=max_seq_len)
  rng = np.random.default_rng(0)  # numpy init: jitting init_params costs ~15 s on 2 busy cores
  params = jax.tree_util.tree_map_with_path(
      lambda path, s: (np.ones(s.shape, s.dtype) if path[-1].key == "scale"
                       else rng.normal(0.0, 0.02, s.shape).astype(s.dtype)),
      jax.eval_shape(lambda k: llama.init_params(cfg, k), jax.random.key(0)))
  export = os.path.join(root, "export")
  convert.save_hf_checkpoint(params, cfg, export)
  shutil.copy(os.path.join(root, "tok.model"), os.path.join(export, "tokenizer.model"))
  return export
