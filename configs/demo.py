"""Small-model demo config: `--config=configs/demo.py:tiny` (CPU, minutes) or `:codellama_7b` (needs weights).

The demo trains a SentencePiece tokenizer on the local training code (tiny variant), builds or loads a Llama,
round-trips it through the HF safetensors format, and greedy-decodes dev-split prompts with the KV cache.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the demo config of a variant (`tiny` or `codellama_7b`)."""
  variant = variant or "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0
  c.data_dir = ""  # "": ../shared/data (tsp_jax.config.shared_dir)
  c.split = "dev"
  c.num_prompts = 8
  c.max_prompt_len = 96
  c.max_new_tokens = 64
  c.branches = 4  # root_k branches per prompt
  c.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices
  c.model = ml_collections.ConfigDict()
  c.tokenizer = ml_collections.ConfigDict()
  if variant == "tiny":
    c.checkpoint = ""  # empty: random init of the preset below, saved and reloaded as an HF checkpoint
    c.model.preset = "tiny"
    c.model.dtype = "float32"
    c.tokenizer.vocab_size = 4096
  elif variant == "codellama_7b":
    c.checkpoint = ml_collections.config_dict.placeholder(str)  # HF folder with config.json + safetensors
    c.model.preset = "codellama_7b"
    c.model.dtype = "bfloat16"
    c.tokenizer.vocab_size = 32016
  else:
    raise ValueError(f"unknown demo variant {variant!r}; expected 'tiny' or 'codellama_7b'")
  c.lock()
  return c
