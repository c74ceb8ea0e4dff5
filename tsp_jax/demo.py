r"""Small-model demo: tokenizer -> model -> HF checkpoint round trip -> greedy decoding and a root_k tree.

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
from absl import app, flags, logging
from ml_collections import config_flags

from tsp_jax import config as config_lib
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.model import convert, llama, sharding
from tsp_jax.search import host, tree
from tsp_jax.verify import types


def demo_prompts(data_dir: str, split: str, n: int) -> list[str]:
  """The first n prompts of a split as code-completion prompts: the task as a comment, then the signature."""
  prompts = []
  for source in sorted(os.listdir(data_dir)):
    path = os.path.join(data_dir, source, f"{split}.jsonl")
    if not os.path.exists(path):
      continue
    for lineno, record in types.jsonl_records(path):
      if isinstance(record, ValueError):
        raise ValueError(f"{path}:{lineno}: malformed JSONL line ({record})")
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
  """Runs the demo and returns its summary (also written to `<workdir>/demo.json`). An empty `config.data_dir`
  is the default shared folder (`config_lib.shared_dir("data")`)."""
  config = config_lib.resolve_dirs(config, data_dir="data")
  os.makedirs(workdir, exist_ok=True)
  ckpt = config.checkpoint or build_tiny_checkpoint(config, workdir)
  mesh = sharding.make_mesh(config.mesh_shape)
  logging.info("process %d/%d, devices %s, mesh %s", jax.process_index(), jax.process_count(), jax.devices(),
               dict(mesh.shape))
  t0 = time.time()
  cfg, params = convert.load_hf_checkpoint(ckpt, dtype=jnp.float32, mesh=mesh, rules=sharding.SAMPLE_RULES)
  cfg = dataclasses.replace(cfg, dtype=config.model.dtype, kernel=llama.kernel_for_platform(jax.default_backend()))
  load_s = time.time() - t0
  tok = tokenizer_lib.Tokenizer.from_dir(ckpt)

  texts = demo_prompts(config.data_dir, config.split, config.num_prompts)
  ids = [tok.encode(t)[-config.max_prompt_len:] for t in texts]  # keep the tail (the signature) when long
  prompts, lens = tokenizer_lib.pad_sequences(ids, tok.pad_id)
  rng = jax.random.key(config.seed)
  timings = {}
  trees = {}
  for name, scfg in search_configs(config, tok.eos_id).items():
    t0 = time.time()
    jax.block_until_ready(tree.tree_search(params, cfg, prompts, lens, rng, scfg, rules=sharding.SAMPLE_RULES))
    compile_s = time.time() - t0
    t0 = time.time()
    trees[name] = host.to_host(jax.block_until_ready(
        tree.tree_search(params, cfg, prompts, lens, rng, scfg, rules=sharding.SAMPLE_RULES)))
    seconds = time.time() - t0
    new_tokens = host.decoded_tokens(trees[name])
    timings[name] = {"compile_s": compile_s, "seconds": seconds, "new_tokens": new_tokens,
                     "tokens_per_s": new_tokens / seconds, "branches": len(host.branch_slots(trees[name]))}

  greedy = host.branch_texts(trees["greedy"], tok)
  branches = host.branch_texts(trees["root_k"], tok)
  samples = []
  for i, prompt in enumerate(texts):
    slots = [int(s) for s in host.branch_slots(trees["root_k"]) if trees["root_k"].prefix_index[s] == i]
    samples.append({"prompt": prompt, "greedy": greedy[i], "branches": [branches[s] for s in slots]})
  summary = {"checkpoint": ckpt, "num_params": cfg.num_params(), "load_s": load_s, "decoding": timings,
             "samples": samples}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "demo.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)
  for sample in samples[:2]:
    print(f"--- prompt ---\n{sample['prompt']}\n--- greedy ---\n{sample['greedy'][:300]!r}")
    for b, text in enumerate(sample["branches"]):
      print(f"--- root_k branch {b} ---\n{text[:120]!r}")
    print()
  print(f"model {cfg.num_params():,} params | checkpoint load {load_s:.2f}s")
  for name, t in timings.items():
    print(f"{name:>7}: {t['branches']} branches, {t['new_tokens']} tokens decoded in {t['seconds']:.2f}s = "
          f"{t['tokens_per_s']:.0f} tokens/s (compile {t['compile_s']:.1f}s)")
  return summary


def search_configs(config, eos_id: int) -> dict[str, tree.SearchConfig]:
  """Greedy decoding (one branch per prompt) and a root_k tree (K sampled branches per prompt)."""
  common = dict(max_new_tokens=config.max_new_tokens, stop_ids=(eos_id,))
  return {"greedy": tree.SearchConfig(slots_per_prefix=1, temperature=0.0, **common),
          "root_k": tree.SearchConfig(slots_per_prefix=config.branches, policy="root_k", k=config.branches,
                                      temperature=1.0, top_p=0.95, **common)}


def _cli_main() -> None:
  """Defines the flags here, not at import (importing this module registers no flags)."""
  config = config_flags.DEFINE_config_file("config", "configs/demo.py:tiny", "Demo config file[:variant].")
  workdir = flags.DEFINE_string("workdir", "runs/demo", "Output directory.")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    run(config.value, workdir.value)

  app.run(main)


if __name__ == "__main__":
  _cli_main()
