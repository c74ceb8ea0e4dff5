r"""Small-model demo: tokenizer -> model -> HF checkpoint round trip -> cached greedy decoding of dev prompts.

    python -m tsp_jax.demo --config=configs/demo.py:tiny --workdir=runs/demo

With `:codellama_7b --config.checkpoint=/path/to/CodeLlama-7b-Instruct-hf` the same code loads the real model
(sharded over all devices) and its `tokenizer.model`. Writes `<workdir>/demo.json` with the samples and timings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.model import convert, decode, llama, sharding

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py:tiny", "Demo config file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Output directory.")


def demo_prompts(data_dir: str, split: str, n: int) -> list[str]:
  """The first n prompts of a split as code-completion prompts: the task as a comment, then the signature."""
  prompts = []
  for source in sorted(os.listdir(data_dir)):
    path = os.path.join(data_dir, source, f"{split}.jsonl")
    if not os.path.exists(path):
      continue
    with open(path, encoding="utf-8") as f:
      for line in f:
        record = json.loads(line)
        signature = record.get("signature")
        prompts.append(f"# {record['prompt']}\n{signature}" if signature else record["prompt"])
        if len(prompts) == n:
          return prompts
  if not prompts:
    raise FileNotFoundError(f"no {split}.jsonl under {data_dir!r}")
  return prompts


def build_tiny_checkpoint(config, workdir: str) -> str:
  """Trains the tokenizer on local code and writes a randomly initialised model as an HF folder."""
  ckpt = os.path.join(workdir, "hf_init")
  if os.path.exists(os.path.join(ckpt, "config.json")):
    logging.info("reusing %s", ckpt)
    return ckpt
  os.makedirs(ckpt, exist_ok=True)
  t0 = time.time()
  tok = tokenizer_lib.train_tokenizer(tokenizer_lib.iter_code_texts(config.data_dir), config.tokenizer.vocab_size,
                                      os.path.join(ckpt, "tokenizer.model"), seed=config.seed)
  logging.info("trained a %d-piece tokenizer in %.1fs", tok.vocab_size, time.time() - t0)
  cfg = llama.LlamaConfig.from_preset(config.model.preset, vocab_size=tok.vocab_size)
  params = llama.init_params(cfg, jax.random.key(config.seed))
  convert.save_hf_checkpoint(params, cfg, ckpt)
  return ckpt


def run(config, workdir: str) -> dict:
  """Runs the demo and returns its summary (also written to `<workdir>/demo.json`)."""
  if not config.data_dir:
    raise ValueError("config.data_dir is empty: pass --config.data_dir=/path/to/shared/data")
  os.makedirs(workdir, exist_ok=True)
  ckpt = config.checkpoint or build_tiny_checkpoint(config, workdir)
  mesh = sharding.make_mesh(config.mesh_shape)
  logging.info("process %d/%d, devices %s, mesh %s", jax.process_index(), jax.process_count(), jax.devices(),
               dict(mesh.shape))
  t0 = time.time()
  cfg, params = convert.load_hf_checkpoint(ckpt, dtype=jnp.float32, mesh=mesh, rules=sharding.SAMPLE_RULES)
  cfg = dataclasses.replace(cfg, dtype=config.model.dtype)
  load_s = time.time() - t0
  tok = tokenizer_lib.Tokenizer.from_dir(ckpt)

  texts = demo_prompts(config.data_dir, config.split, config.num_prompts)
  ids = [tok.encode(t)[-config.max_prompt_len:] for t in texts]  # keep the tail (the signature) when long
  lens = np.array([len(x) for x in ids], np.int32)
  prompts = np.full((len(ids), int(lens.max())), tok.pad_id, np.int32)
  for i, x in enumerate(ids):
    prompts[i, :len(x)] = x
  args = (params, cfg, jnp.asarray(prompts), jnp.asarray(lens))
  kwargs = dict(max_new_tokens=config.max_new_tokens, eos_id=tok.eos_id)
  t0 = time.time()
  jax.block_until_ready(decode.greedy_decode(*args, **kwargs))
  compile_s = time.time() - t0
  t0 = time.time()
  out, count = jax.block_until_ready(decode.greedy_decode(*args, **kwargs))
  decode_s = time.time() - t0
  new_tokens = int(np.asarray(count).sum())

  samples = [{"prompt": p, "completion": tok.decode(np.asarray(out[i, :count[i]]))} for i, p in enumerate(texts)]
  summary = {"checkpoint": ckpt, "num_params": cfg.num_params(), "load_s": load_s, "compile_s": compile_s,
             "decode_s": decode_s, "new_tokens": new_tokens, "tokens_per_s": new_tokens / decode_s,
             "samples": samples}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "demo.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)
  for s in samples[:3]:
    print(f"--- prompt ---\n{s['prompt']}\n--- completion ---\n{s['completion']}\n")
  print(f"model {cfg.num_params():,} params | load {load_s:.2f}s | compile {compile_s:.1f}s | "
        f"{new_tokens} tokens in {decode_s:.2f}s = {new_tokens / decode_s:.0f} tokens/s (greedy, KV cache)")
  return summary


def main(argv):
  del argv
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
