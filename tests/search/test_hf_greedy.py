"""Greedy continuations equal HF transformers `generate` on the same converted checkpoint (torch CPU, fp32)."""

import dataclasses

import jax
import numpy as np
import pytest
import torch
import transformers

from tsp_jax.model import convert, llama
from tsp_jax.search import host, tree

NEW_TOKENS = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A random tiny HF Llama (GQA, rope_theta 1e6) saved as a sharded safetensors checkpoint."""
  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                                    rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
  model = transformers.LlamaForCausalLM(hf_cfg).eval()
  with torch.no_grad():  # sharper distributions than the 0.02 init, so greedy paths are not near-ties
    model.lm_head.weight.mul_(30.0)
  path = tmp_path_factory.mktemp("hf_greedy")
  model.save_pretrained(path, max_shard_size="100KB")
  assert (path / "model.safetensors.index.json").exists()
  cfg, params = convert.load_hf_checkpoint(path)
  return model, cfg, params


PROMPTS = [[1, 17, 42, 99, 5, 6], [1, 77, 3], [1, 8, 8, 8, 8, 8, 8, 8, 120]]


def hf_greedy(model, prompt: list[int]) -> list[int]:
  ids = torch.tensor([prompt])
  with torch.inference_mode():
    out = model.generate(ids, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                         eos_token_id=None, pad_token_id=0)
  return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def hf_continuations(checkpoint) -> list[list[int]]:
  return [hf_greedy(checkpoint[0], prompt) for prompt in PROMPTS]


def padded(prompts: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
  lens = np.array([len(p) for p in prompts], np.int32)
  out = np.zeros((len(prompts), lens.max()), np.int32)
  for i, p in enumerate(prompts):
    out[i, :len(p)] = p
  return out, lens


@pytest.mark.parametrize("kernel", llama.KERNELS)
def test_tree_search_greedy_equals_hf_generate(checkpoint, hf_continuations, kernel):
  _, cfg, params = checkpoint
  cfg = dataclasses.replace(cfg, kernel=kernel)
  prompts, lens = padded(PROMPTS)
  scfg = tree.SearchConfig(slots_per_prefix=1, max_new_tokens=NEW_TOKENS, temperature=0.0, stop_ids=())
  tr = host.to_host(tree.tree_search(params, cfg, prompts, lens, jax.random.key(0), scfg))
  for i, want in enumerate(hf_continuations):
    assert host.generated_tokens(tr, i).tolist() == want, f"prompt {i}"
