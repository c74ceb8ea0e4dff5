r"""Benchmark of the TSP train step: dense pairs vs packed node rows, same weights and same pairs, in one run.

    python -m tsp_jax.bench.train_step            # tiny model, the TSP workload scaled to CPU
    python -m tsp_jax.bench.train_step --quick    # a small version (< 1 minute on 2 cores)
    python -m tsp_jax.bench.train_step --kernels  # the pre-training step: "xla" vs "cpu" kernel attention

The workload is TSP's: nodes with a long prefix (prompt + golden code up to the node) and K = 4 sampled branches
besides the golden continuation, labelled 2 secure / 2 vulnerable, paired as the pair source does (golden vs each
rejected branch, each secure branch vs each rejected one: 6 pairs per node); prefix : continuation = 4 : 1 as in
the 7B config (1,024 : 256). Micro-batches of `batch_size` pairs in the packed trainer's order (a node's pairs
together); the dense step gets the same pairs. Packed rows are tree rows (`packing.tree_layout` of the pairs: a
prefix region for the longest prefix, `--chunks` chunks for the longest continuation; the "cpu" kernel computes
their attention block by block), or flat rows of `--packed_length` tokens. Printed: train-step time per pair (dense
and packed steps timed in alternation), tokens forwarded per pair (the columns each forward computes, padding
included) and the step's temporary memory (XLA memory analysis), dense / packed as ratios (memory: the largest over
the compiled shapes), and the largest loss difference between the two on the same pairs.

`--kernels`: the pre-training (SFT) step on rows of `--row_len` tokens bin-packed with random documents of 40 to
`--row_len` tokens (the synth experiment's pre-training rows: 352, ~1.8 programs per row), `batch_size` rows per
step, under the "xla" kernel (whole-row masked attention, the reference) and the "cpu" kernel (causal query blocks,
`llama.causal_block_attention`), timed in alternation: step time, temporary memory, xla / cpu, and the largest
loss difference.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import app, flags

from tsp_jax import batches, objective, packing, pairs, train_step
from tsp_jax.model import convert, llama


@dataclasses.dataclass(frozen=True)
class Settings:
  """The benchmark's sizes (the command line's flags, same names and defaults)."""
  dim: int = 128
  layers: int = 4
  vocab: int = 2048
  nodes: int = 16
  prefix_len: int = 384
  cont_len: int = 96
  batch_size: int = 8
  steps: int = 4
  packed_length: int = 0  # tokens per flat packed row; 0: tree rows (`packing.tree_layout` of the pairs)
  chunks: int = 5  # continuation chunks per tree row (a node's K = 4 branches + golden)
  row_len: int = 352  # --kernels: tokens per packed pre-training row


QUICK = Settings(dim=64, layers=2, vocab=512, nodes=8, prefix_len=128, cont_len=32, steps=3)
K, SECURE = 4, 2  # branches per node, of which secure


def tsp_pairs(s: Settings, seed: int = 0) -> pairs.PairSet:
  """Node-level pairs of random trees (lengths vary +-25% around the settings)."""
  rng = np.random.default_rng(seed)
  vary = lambda n: int(rng.integers(max(1, int(0.75 * n)), int(1.25 * n) + 1))
  plist, prefix_lens = [], []
  for _ in range(s.nodes):
    prefix = np.concatenate([[1], rng.integers(3, s.vocab, vary(s.prefix_len) - 1)]).astype(np.int32)
    conts = [rng.integers(3, s.vocab, vary(s.cont_len)).astype(np.int32) for _ in range(K + 1)]
    labels = [pairs.SECURE] * SECURE + [pairs.VULNERABLE] * (K - SECURE)
    prompt = pairs.NodePrompt(node=None, prefix_ids=prefix, chosen_ids=conts[0], prefix_text="")
    found = pairs.node_pairs(prompt, conts[1:], labels, max_pairs=8)
    plist += found
    prefix_lens += [len(prefix)] * len(found)
  length = int(1.25 * s.prefix_len) + int(1.25 * s.cont_len) + 2
  ps = pairs.pair_arrays(plist, prefix_lens, length, pad_id=0)
  ps.ref_logps = rng.normal(-2.0 * s.cont_len, 5.0, (len(ps), 2)).astype(np.float32)
  return ps


def _shapes(batch_list) -> dict:
  """One batch of each distinct shape (a compiled program each)."""
  return {jax.tree.map(np.shape, b): b for b in batch_list}


def median_step(step: Callable, state: object, batch_list: list, repeats: int) -> tuple[float, object]:
  """Median seconds of one step over the batches (after compiling and warming up every shape), and the state."""
  states = {"run": state}
  seconds = alternating_medians(step, states, {"run": batch_list}, repeats)["run"]
  return seconds, states["run"]


def alternating_medians(step: Callable | dict[str, Callable], states: dict[str, object], runs: dict[str, list],
                        repeats: int) -> dict[str, float]:
  """Median seconds of one step of each run (name -> its batches), timed in alternation (step i of every run, then
  step i + 1: a load change on shared cores hits them alike), after compiling and warming up every shape.
  step: `step(state, batch, ref) -> (state, metrics)`, one for every run or name -> the run's own.
  states: name -> train state, updated in place."""
  steps = step if isinstance(step, dict) else dict.fromkeys(runs, step)
  for name, bl in runs.items():
    for b in _shapes(bl).values():
      states[name], m = steps[name](states[name], *b)
      jax.block_until_ready(m)
  times = {name: [] for name in runs}
  for i in range(repeats):
    for name, bl in runs.items():
      t0 = time.perf_counter()
      states[name], m = steps[name](states[name], *bl[i % len(bl)])
      jax.block_until_ready(m)
      times[name].append(time.perf_counter() - t0)
  return {name: float(np.median(t)) for name, t in times.items()}


def run(s: Settings) -> dict[str, float]:
  """Measures dense vs packed on the same random weights and generated TSP pairs; returns the figures."""
  cfg = llama.LlamaConfig(vocab_size=s.vocab, dim=s.dim, n_layers=s.layers, n_heads=4, n_kv_heads=2,
                          ffn_dim=3 * s.dim, max_seq_len=4 * (s.prefix_len + s.cont_len),
                          kernel=llama.kernel_for_platform(jax.default_backend()))
  ps = tsp_pairs(s)
  return compare(cfg, llama.init_params(cfg, jax.random.key(0)), ps, layout(s, ps, cfg), s.batch_size, s.steps)


def layout(s: Settings, ps: pairs.PairSet, cfg: llama.LlamaConfig) -> int | packing.TreeLayout:
  """The packed rows of the settings: flat rows of `packed_length` tokens, or (0) tree rows of `chunks` chunks
  sized to the pairs, as the trainer chooses them for `cfg`."""
  return s.packed_length or packing.tree_layout(ps, s.chunks, score_cost=packing.score_cost(cfg))


def compare(cfg: llama.LlamaConfig, params: llama.Params, ps: pairs.PairSet, length: int | packing.TreeLayout,
            batch_size: int, steps: int, optimizer: str = "adamw") -> dict[str, float]:
  """Dense vs packed train steps over the pairs `ps` (with reference log-probs) in the packed trainer's order,
  packed into flat rows of `length` tokens or tree rows: median step time, tokens forwarded, row length and
  temporary memory of each, and their largest loss difference (`optimizer`: `train_step.OptimConfig.optimizer`)."""
  s = dataclasses.replace(Settings(), batch_size=batch_size, steps=steps)
  order = packing.grouped_order(ps, seed=0, epochs=1)
  chunks = [order[i:i + s.batch_size] for i in range(0, len(order) - s.batch_size + 1, s.batch_size)]
  layout = batches.Packed(length)
  loss_cfg = objective.LossConfig(name="tsp")
  tx = train_step.make_optimizer(train_step.OptimConfig(lr=1e-5, total_steps=100, optimizer=optimizer))
  step = train_step.make_train_step(cfg, loss_cfg, tx)
  dense = [batches.to_batch(ps, idx, s.batch_size, "tsp") for idx in chunks]
  packed = [batches.make_batch(ps, idx, s.batch_size, "tsp", layout) for idx in chunks]
  fn = jax.jit(objective.loss_fn("tsp"), static_argnums=(1, 4))  # one program per batch layout, not op by op
  diff = max(abs(float(fn(params, cfg, d[0], d[1], loss_cfg)[0]) - float(fn(params, cfg, p[0], p[1], loss_cfg)[0]))
             for d, p in zip(dense, packed))
  out = {"pairs_per_step": s.batch_size, "max_abs_loss_diff": diff}
  runs = {"dense": dense, "packed": packed}
  states = {}
  for name, bl in runs.items():
    state = train_step.init_state(params, tx)
    mems = [step.lower(state, *b).compile().memory_analysis() for b in _shapes(bl).values()]
    out[f"{name}_temp_mib"] = max(m.temp_size_in_bytes if m is not None else float("nan") for m in mems) / 2 ** 20
    states[name] = state
    columns = [b.tokens.size if name == "packed" else 2 * b.chosen.size for b, _ in bl]
    out[f"{name}_tokens_per_pair"] = float(np.mean(columns)) / s.batch_size
    out[f"{name}_row_len"] = bl[0][0].tokens.shape[1] if name == "packed" else bl[0][0].chosen.shape[1]
  for name, seconds in alternating_medians(step, states, runs, max(s.steps, len(dense))).items():
    out[f"{name}_step_s"] = seconds
  out["speedup_per_pair"] = out["dense_step_s"] / out["packed_step_s"]
  out["memory_ratio"] = out["dense_temp_mib"] / out["packed_temp_mib"]
  out["tokens_ratio"] = out["dense_tokens_per_pair"] / out["packed_tokens_per_pair"]
  return out


def kernel_compare(s: Settings, seed: int = 0) -> dict[str, float]:
  """The pre-training step on packed documents under the "xla" and "cpu" kernels (same weights, same batches):
  median step time and temporary memory of each, and their largest loss difference."""
  rng = np.random.default_rng(seed)
  seqs = [rng.integers(3, s.vocab, n).astype(np.int32) for n in rng.integers(40, s.row_len + 1, 24 * s.batch_size)]
  ps = pairs.packed_sequence_set(seqs, [1] * len(seqs), s.row_len, pad_id=0, seed=seed)
  bl = [batches.to_batch(ps, np.arange(i, i + s.batch_size), s.batch_size, "sft")
        for i in range(0, len(ps) - s.batch_size + 1, s.batch_size)]
  tx = train_step.make_optimizer(train_step.OptimConfig(lr=1e-4, total_steps=100))
  loss_cfg = objective.LossConfig(name="sft")
  cfgs = {kern: llama.LlamaConfig(vocab_size=s.vocab, dim=s.dim, n_layers=s.layers, n_heads=4, n_kv_heads=2,
                                  ffn_dim=3 * s.dim, max_seq_len=s.row_len, kernel=kern) for kern in ("xla", "cpu")}
  params = llama.init_params(cfgs["xla"], jax.random.key(0))
  steps = {kern: train_step.make_train_step(cfg, loss_cfg, tx) for kern, cfg in cfgs.items()}
  fns = {kern: jax.jit(functools.partial(objective.loss_fn("sft"), cfg=cfg, loss_cfg=loss_cfg))
         for kern, cfg in cfgs.items()}
  out = {"rows_per_step": s.batch_size, "docs_per_row": len(seqs) / len(ps),
         "max_abs_loss_diff": max(abs(float(fns["xla"](params, batch=b)[0]) - float(fns["cpu"](params, batch=b)[0]))
                                  for b, _ in bl)}
  states = {kern: train_step.init_state(params, tx) for kern in cfgs}
  for kern, step in steps.items():
    mems = [step.lower(states[kern], *b).compile().memory_analysis() for b in _shapes(bl).values()]
    out[f"{kern}_temp_mib"] = max(m.temp_size_in_bytes if m is not None else float("nan") for m in mems) / 2 ** 20
  for kern, seconds in alternating_medians(steps, states, dict.fromkeys(cfgs, bl), max(s.steps, 2 * len(bl))).items():
    out[f"{kern}_step_s"] = seconds
  return out


def kernel_table(s: Settings, r: dict[str, float]) -> str:
  """The Markdown table of `kernel_compare`'s figures."""
  rows = [("pre-training step, ms", 1e3 * r["xla_step_s"], 1e3 * r["cpu_step_s"]),
          ("step temporary memory, MiB (XLA)", r["xla_temp_mib"], r["cpu_temp_mib"])]
  lines = ["| measurement | xla (whole rows) | cpu (causal blocks) | xla / cpu |", "|---|---:|---:|---:|"]
  lines += [f"| {name} | {x:,.1f} | {c:,.1f} | {x / c:.2f}x |" for name, x, c in rows]
  lines.append(f"\nmodel dim {s.dim}, {s.layers} layers, vocab {s.vocab}; {s.batch_size} rows of {s.row_len} tokens "
               f"per step, {r['docs_per_row']:.2f} documents per row; {jax.default_backend()}; max |loss xla - cpu| "
               f"{r['max_abs_loss_diff']:.1e}")
  return "\n".join(lines)


def table(s: Settings, r: dict[str, float], workload: str | None = None) -> str:
  """The Markdown table of `run`'s figures; `workload` describes the pairs (default: the generated ones of `s`)."""
  rows = [("train-step time per pair, ms", 1e3 * r["dense_step_s"] / s.batch_size,
           1e3 * r["packed_step_s"] / s.batch_size, r["speedup_per_pair"]),
          ("tokens forwarded per pair", r["dense_tokens_per_pair"], r["packed_tokens_per_pair"], r["tokens_ratio"]),
          ("step temporary memory, MiB (XLA)", r["dense_temp_mib"], r["packed_temp_mib"], r["memory_ratio"])]
  lines = ["| measurement | dense | packed | dense / packed |", "|---|---:|---:|---:|"]
  lines += [f"| {name} | {d:,.1f} | {p:,.1f} | {ratio:.2f}x |" for name, d, p, ratio in rows]
  workload = workload or (f"model dim {s.dim}, {s.layers} layers, vocab {s.vocab}; {s.nodes} nodes, prefix "
                          f"~{s.prefix_len}, continuations ~{s.cont_len}, K = {K} + golden")
  lines.append(f"\n{workload}; {s.batch_size} pairs per step; {jax.default_backend()}; max |loss dense - packed| on "
               f"the same pairs {r['max_abs_loss_diff']:.1e}")
  return "\n".join(lines)


def _cli_main() -> None:
  """Defines the flags here, not at import."""
  d = Settings()
  quick = flags.DEFINE_bool("quick", False, "A small version (< 1 minute on 2 cores).")
  kernels = flags.DEFINE_bool("kernels", False, "Time the pre-training step under the 'xla' and 'cpu' kernels.")
  pairs_path = flags.DEFINE_string("pairs", None, "A trainer round's pairs.npz (with its reference log-probs) to "
                                   "time instead of generated pairs; needs --checkpoint.")
  checkpoint = flags.DEFINE_string("checkpoint", None, "HF folder of the model the round trained (--pairs).")
  sizes = {f.name: flags.DEFINE_integer(f.name, getattr(d, f.name), f"Workload / model size: {f.name}.")
           for f in dataclasses.fields(Settings)}

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    s = QUICK if quick.value else Settings(**{k: v.value for k, v in sizes.items()})
    if kernels.value:
      r = kernel_compare(s)
      print(kernel_table(s, r))
      print(f"speedup={r['xla_step_s'] / r['cpu_step_s']:.2f}x max_abs_loss_diff={r['max_abs_loss_diff']:.0e}")
      return
    if pairs_path.value:
      if not checkpoint.value:
        raise app.UsageError("--pairs needs --checkpoint")
      cfg, params = convert.load_hf_checkpoint(checkpoint.value)
      cfg = dataclasses.replace(cfg, kernel=llama.kernel_for_platform(jax.default_backend()))
      ps = pairs.PairSet.load(pairs_path.value)
      rows = layout(s, ps, cfg)
      r = compare(cfg, params, ps, rows, s.batch_size, s.steps)
      workload = (f"{len(ps)} pairs of {pairs_path.value}, model {checkpoint.value} (dim {cfg.dim}, {cfg.n_layers} "
                  f"layers), rows {rows}")
      print(table(s, r, workload))
    else:
      r = run(s)
      print(table(s, r))
    for key in ("speedup_per_pair", "memory_ratio"):
      print(f"{key}={r[key]:.2f}x")
    print(f"max_abs_loss_diff={r['max_abs_loss_diff']:.0e}")

  app.run(main)


if __name__ == "__main__":
  _cli_main()
