r"""Benchmark of the tree-search engine against peers, on the same weights in one run.

    python -m tsp_jax.bench.search            # tiny model (dim 256, 6 layers, vocab 4096), CPU
    python -m tsp_jax.bench.search --preset=codellama_7b --dtype=bfloat16 --new_tokens=256   # GPU / TPU

Prints three tables:
  1. throughput of two workloads: sampling (`policy=none`, B branches x T new tokens from one short prompt) and
     TSP's node expansion (`policy=root_k`, K branches from each of several long node prefixes), each vs HF
     transformers `generate(do_sample=True, num_return_sequences=...)` on torch CPU (same weights, converted with
     `convert.save_hf_checkpoint`), plus the HBM roofline fraction of sampling on an accelerator;
  2. cost of a decode step that forks (copies KV rows) vs one that does not, and vs the fork-free `none` step;
  3. decode work per completed leaf: an `entropy` tree vs independent sampling of the same number of leaves.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from tsp_jax import chips
from tsp_jax.model import convert, llama
from tsp_jax.search import host, tree

@dataclasses.dataclass(frozen=True)
class Settings:
  """The benchmark's sizes (the command line's flags, same names and defaults)."""
  preset: str = "tiny"
  dtype: str = "float32"
  branches: int = 64
  new_tokens: int = 128
  prompt_len: int = 32
  repeats: int = 5
  hf: bool = True
  fork_prefixes: int = 8
  nodes: int = 8
  node_prefix_len: int = 256
  node_branches: int = 8
  node_new_tokens: int = 64


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int, settle: float = 1.0
                        ) -> dict[str, float]:
  """Median wall time of each `runs[name]()` (which must block until its result is ready) over `repeats` rounds.

  Each round runs every entry once, in turn, so that load drifting on a shared machine hits all of them alike.
  Each run starts after a pause of `settle` seconds: worker threads of the previous run (torch's OpenMP pool,
  XLA's) spin for a while after their work ends and would otherwise slow the next run down by 10-20%.
  """
  times = {name: [] for name in runs}
  for _ in range(repeats):
    for name, fn in runs.items():
      time.sleep(settle)
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return {name: float(np.median(t)) for name, t in times.items()}


@dataclasses.dataclass(frozen=True)
class Workload:
  """`branches` continuations of `new_tokens` tokens from each of `prompts` prompts of `prompt_len` tokens."""
  name: str
  policy: str  # the engine's policy: `none` (independent samples) or `root_k` (distinct first tokens)
  prompts: int
  prompt_len: int
  branches: int
  new_tokens: int

  @property
  def tokens(self) -> int:
    return self.prompts * self.branches * self.new_tokens


def workload_prompts(cfg, w: Workload) -> np.ndarray:
  """Random prompts [prompts, prompt_len] of a workload (fixed seed)."""
  return np.asarray(jax.random.randint(jax.random.key(1), (w.prompts, w.prompt_len), 3, cfg.vocab_size), np.int32)


def engine_runner(params, cfg, w: Workload) -> Callable[[], object]:
  """`tree_search` decoding a workload (no stop token); compiled and checked once here."""
  scfg = tree.SearchConfig(slots_per_prefix=w.branches, k=w.branches, max_new_tokens=w.new_tokens, policy=w.policy,
                           stop_ids=())
  prompts, lens = workload_prompts(cfg, w), np.full((w.prompts,), w.prompt_len, np.int32)
  run = lambda: jax.block_until_ready(tree.tree_search(params, cfg, prompts, lens, jax.random.key(0), scfg))
  tr = host.to_host(run())
  assert int((tr.lengths - tr.prefix_lens).sum()) == w.tokens
  return run


def load_hf(params, cfg, device: str = "cpu"):
  """The same weights as an HF `LlamaForCausalLM` in the model's activation dtype on a torch device ("cpu": all
  cores; "cuda")."""
  import torch  # the peer: imported only here
  import transformers

  torch.set_num_threads(os.cpu_count() or 1)
  with tempfile.TemporaryDirectory() as d:
    convert.save_hf_checkpoint(params, cfg, d)
    return transformers.LlamaForCausalLM.from_pretrained(d, dtype=getattr(torch, cfg.dtype)).to(device).eval()


def hf_runner(model, cfg, w: Workload) -> Callable[[], object]:
  """HF `generate` sampling `branches` sequences per prompt of a workload; warmed up and checked once here."""
  import torch

  ids = torch.tensor(workload_prompts(cfg, w), dtype=torch.long, device=model.device)
  kwargs = dict(do_sample=True, num_return_sequences=w.branches, max_new_tokens=w.new_tokens,
                min_new_tokens=w.new_tokens, top_p=1.0, top_k=0, temperature=1.0, pad_token_id=0)

  def run():
    with torch.inference_mode():
      out = model.generate(ids, **kwargs).cpu()  # waits for the device
    assert out.shape == (w.prompts * w.branches, w.prompt_len + w.new_tokens)

  run()  # warm-up
  return run


def step_costs(params, cfg, num_prefixes: int, slots: int, repeats: int) -> dict[str, float]:
  """Seconds per decode step inside one compiled loop, for three step kinds.

  `fork`: the entropy policy with a threshold every step exceeds: each prefix forks one branch per step (one KV
  row copied per prefix per step) until its `slots` are full. `no fork`: the same program with a threshold no
  step exceeds (lax.cond skips the copy). `none`: the fork-free sampler's step. Per-step time is
  (T(n steps) - T(1 step)) / (n - 1), so prefill and dispatch cancel out.
  """
  n = slots - 1  # the `fork` program forks at every one of its n steps
  prefixes = jnp.ones((num_prefixes, 128), jnp.int32)
  lens = jnp.full((num_prefixes,), 128, jnp.int32)
  cache_len = 128 + n + 1
  base = tree.SearchConfig(slots_per_prefix=slots, max_new_tokens=n + 1, stop_ids=(), cache_len=cache_len,
                           policy="entropy", min_fork_distance=0, max_depth=n)
  kinds = {"fork": dataclasses.replace(base, entropy_threshold=-1.0),
           "no fork": dataclasses.replace(base, entropy_threshold=1e9),
           "none": dataclasses.replace(base, policy="none")}

  @functools.partial(jax.jit, static_argnames=("scfg", "steps"))
  def loop(params, scfg, steps):
    state = tree.init_state(params, cfg, scfg, prefixes, lens, cache_len, None)
    body = lambda i, st: tree.step(params, cfg, scfg, num_prefixes, None, jax.random.key(0), st)
    return jax.lax.fori_loop(0, steps, body, state).tree

  runs = {}
  for name, scfg in kinds.items():
    for steps in (1, n):
      runs[name, steps] = functools.partial(lambda sc, k: jax.block_until_ready(loop(params, sc, k)), scfg, steps)
      tr = host.to_host(runs[name, steps]())
      if steps == n and name == "fork":
        assert tr.valid.all(), "the fork program should have filled every slot"
      elif steps == n and name == "no fork":
        assert tr.valid.sum() == num_prefixes
  timed = interleaved_medians(runs, max(repeats, 7))
  return {name: (timed[name, n] - timed[name, 1]) / (n - 1) for name in kinds}


def tree_work(params, cfg, new_tokens: int) -> dict[str, float]:
  """Decode work of an entropy tree vs independent sampling of as many leaves (tokens decoded per leaf)."""
  prefixes = np.asarray(jax.random.randint(jax.random.key(1), (4, 32), 3, cfg.vocab_size), np.int32)
  scfg = tree.SearchConfig(slots_per_prefix=8, max_new_tokens=new_tokens, policy="entropy", stop_ids=(),
                           entropy_threshold=2.0, fork_width=1, max_depth=3, min_fork_distance=new_tokens // 4)
  tr = host.to_host(tree.tree_search(params, cfg, prefixes, np.full((4,), 32, np.int32), jax.random.key(2), scfg))
  slots = host.branch_slots(tr)
  leaves = len(slots)
  independent = int((tr.lengths[slots] - tr.prefix_lens[slots]).sum())  # each leaf decoded from its prefix
  decoded = host.decoded_tokens(tr)
  return {"leaves": leaves, "tree tokens/leaf": decoded / leaves, "independent tokens/leaf": independent / leaves,
          "ratio": decoded / independent}


def roofline_fraction(cfg, branches: int, prompt_len: int, new_tokens: int, tokens_per_s: float,
                      hbm_bw: float | None = None) -> float | None:
  """Achieved fraction of the HBM-bandwidth bound of decoding `branches` continuations of one prompt.

  A step reads the weights, the prompt's keys/values once (shared by the branches) and each branch's generated
  keys/values (new_tokens / 2 on average). `hbm_bw` (bytes/s) defaults to the first device's published figure
  (`tsp_jax.chips`); None when it has none.
  """
  chip = chips.for_device_kind(jax.devices()[0].device_kind)
  if hbm_bw is None and chip is None:
    return None
  hbm_bw = hbm_bw or chip.hbm_bw
  kv_per_token = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize
  bytes_per_step = (cfg.num_params() * jnp.dtype(cfg.param_dtype).itemsize
                    + kv_per_token * (prompt_len + branches * new_tokens / 2))
  return tokens_per_s / (branches * hbm_bw / bytes_per_step)


def run(s: Settings) -> None:
  """Measures and prints the three tables."""
  cfg = llama.LlamaConfig.from_preset(s.preset, dtype=s.dtype, param_dtype=s.dtype,
                                      kernel=llama.kernel_for_platform(jax.default_backend()))
  params = llama.init_params(cfg, jax.random.key(0))
  b, t = s.branches, s.new_tokens
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} | model {s.preset} "
        f"({cfg.num_params() / 1e6:.1f}M params, {cfg.dtype}) | {b} branches x {t} new tokens, "
        f"prompt {s.prompt_len}")

  workloads = [Workload("sampling", "none", 1, s.prompt_len, b, t),
               Workload("node expansion", "root_k", s.nodes, s.node_prefix_len, s.node_branches,
                        s.node_new_tokens)]
  runs = {("ours", w): engine_runner(params, cfg, w) for w in workloads}
  if s.hf:
    model = load_hf(params, cfg)
    runs.update({("hf", w): hf_runner(model, cfg, w) for w in workloads})
  tokens_per_s = {key: key[1].tokens / sec for key, sec in interleaved_medians(runs, s.repeats).items()}
  print("\n| workload | sampler | new tokens/s | vs HF generate |\n|---|---|---|---|")
  for w in workloads:
    shape = f"{w.name}: {w.prompts} x {w.prompt_len}-token prompts, {w.branches} branches each, {w.new_tokens} new"
    ours, hf = tokens_per_s["ours", w], tokens_per_s.get(("hf", w))
    print(f"| {shape} | tsp_jax tree_search (policy {w.policy}) | {ours:,.0f} | "
          f"{f'{ours / hf:.2f}x' if hf else 'n/a'} |")
    if hf:
      print(f"| {shape} | HF transformers generate (torch CPU) | {hf:,.0f} | 1.00x |")
  print("| | Tunix sampler | not run | google-tunix 0.1.7 pins safetensors<0.8 (we pin 0.8.0), pulls "
        "tensorflow-datasets, and ports Llama 3 only |")
  ours = tokens_per_s["ours", workloads[0]]
  frac = roofline_fraction(cfg, b, s.prompt_len, t, ours)
  if frac is not None:
    print(f"\nHBM roofline fraction: {frac:.1%}")

  costs = step_costs(params, cfg, s.fork_prefixes, 8, s.repeats)
  print("\n| decode step | ms/step | vs no-fork step |\n|---|---|---|")
  for name, sec in costs.items():
    print(f"| {name} | {sec * 1e3:.2f} | {sec / costs['no fork']:.2f}x |")

  work = tree_work(params, cfg, t)
  print("\n| decode work | leaves | tokens decoded / leaf | ratio |\n|---|---|---|---|")
  print(f"| entropy tree | {work['leaves']} | {work['tree tokens/leaf']:.1f} | {work['ratio']:.2f} |")
  print(f"| independent sampling | {work['leaves']} | {work['independent tokens/leaf']:.1f} | 1.00 |")


def _cli_main() -> None:
  """Defines the flags here, not at import (importing this module registers no flags); defaults: `Settings`."""
  d = Settings()
  flags.DEFINE_string("preset", d.preset, "Model preset (weights are random).")
  flags.DEFINE_string("dtype", d.dtype, "Activation and parameter dtype.")
  flags.DEFINE_integer("branches", d.branches, "Branches (sequences) decoded at once.")
  flags.DEFINE_integer("new_tokens", d.new_tokens, "New tokens per branch.")
  flags.DEFINE_integer("prompt_len", d.prompt_len, "Prompt length.")
  flags.DEFINE_integer("repeats", d.repeats, "Timed rounds per measurement (median reported; the samplers "
                       "compared run in turn within each round).")
  flags.DEFINE_bool("hf", d.hf, "Run the HF transformers peer (torch CPU).")
  flags.DEFINE_integer("fork_prefixes", d.fork_prefixes, "Prefixes in the fork-step measurement.")
  flags.DEFINE_integer("nodes", d.nodes, "Node expansion workload (TSP's): prefixes ending at decision nodes.")
  flags.DEFINE_integer("node_prefix_len", d.node_prefix_len, "Node expansion: tokens per node prefix.")
  flags.DEFINE_integer("node_branches", d.node_branches, "Node expansion: branches (root_k k) per node.")
  flags.DEFINE_integer("node_new_tokens", d.node_new_tokens, "Node expansion: new tokens per branch.")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    run(Settings(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(Settings)}))

  app.run(main)


if __name__ == "__main__":
  _cli_main()
