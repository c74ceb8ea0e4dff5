r"""Prefill forward throughput vs HF transformers (torch CPU), and HF checkpoint load time / peak RSS.

    python -m tsp_jax.bench.forward [--batch=8 --seq_len=512 --runs=5] [--results=tsp_jax/bench/RESULTS.md]

(a) Forward: random weights are written with `convert.save_hf_checkpoint`, then loaded by
`convert.load_hf_checkpoint` (ours) and by `transformers.LlamaForCausalLM.from_pretrained` (peer); both run the
same [batch, seq_len] prefill without a KV cache (ours jitted, after warmup, `block_until_ready`; theirs under
`torch.inference_mode` with as many torch threads as cores). Reports the median tokens/s of `--runs` runs, the
ratio, and the max-abs difference of the two logit arrays as a sanity check.

(b) Load: writes a random checkpoint of about `--load_gb` GB (fp32, sharded HF style), then loads it in fresh
subprocesses with `load_hf_checkpoint` and with HF `from_pretrained`, reporting wall time and peak RSS next to
the peak RSS of the bare imports (`import jax` / `import torch, transformers`). Peak RSS is the child's VmHWM
from /proc/self/status: `ru_maxrss` is unusable here because Linux carries the parent's RSS high-water mark over
fork + exec (a child of this 600 MB process would report at least 600 MB). transformers leaves the weights
memory-mapped (read lazily), so its peak is taken after one read of every weight, with that read's time shown
separately. The file was just written, so the page cache is warm for both loaders. On CPU the loaded
parameters themselves live in host memory, so baseline + checkpoint size is the floor for both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags, logging

SECTION = "## forward and checkpoint load"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Settings:
  """The benchmark's sizes and outputs (the command line's flags, same names and defaults)."""
  jax_platform: str = "cpu"
  vocab_size: int = 4096
  dim: int = 256
  n_layers: int = 6
  n_heads: int = 8
  n_kv_heads: int = 4
  ffn_dim: int = 688
  batch: int = 8
  seq_len: int = 512
  runs: int = 5
  load_gb: float = 1.0
  shard_mb: int = 512
  results: str = ""


def _cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ----------------------------------------------------------------------------------------------------------
# (a) forward


def bench_forward(workdir: Path, s: Settings) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  from tsp_jax.model import convert, llama  # pylint: disable=g-import-not-at-top

  b, t = s.batch, s.seq_len
  cfg = llama.LlamaConfig(vocab_size=s.vocab_size, dim=s.dim, n_layers=s.n_layers, n_heads=s.n_heads,
                          n_kv_heads=s.n_kv_heads, ffn_dim=s.ffn_dim, max_seq_len=max(2048, t))
  convert.save_hf_checkpoint(llama.init_params(cfg, jax.random.key(0)), cfg, workdir)
  cfg, params = convert.load_hf_checkpoint(workdir)
  cfg = dataclasses.replace(cfg, kernel=llama.kernel_for_platform(jax.default_backend()))
  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, size=(b, t)).astype(np.int32)
  positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t))
  tokens_d, positions_d = jax.device_put(tokens), jax.device_put(positions)

  def ours():
    return llama.forward(params, cfg, tokens_d, positions_d)[0].block_until_ready()

  ours()  # compile
  ours()  # warm
  ours_times = []
  for _ in range(s.runs):
    start = time.perf_counter()
    ours_logits = ours()
    ours_times.append(time.perf_counter() - start)

  torch.set_num_threads(_cores())
  model = transformers.LlamaForCausalLM.from_pretrained(workdir, dtype=torch.float32).eval()
  input_ids = torch.as_tensor(tokens, dtype=torch.long)

  def theirs():
    with torch.inference_mode():
      return model(input_ids, use_cache=False).logits

  theirs()  # warm (oneDNN kernel selection, allocator)
  theirs()
  hf_times = []
  for _ in range(s.runs):
    start = time.perf_counter()
    hf_logits = theirs()
    hf_times.append(time.perf_counter() - start)

  ours_tps = b * t / statistics.median(ours_times)
  hf_tps = b * t / statistics.median(hf_times)
  return dict(ours_tps=ours_tps, hf_tps=hf_tps, cfg=cfg, params=cfg.num_params(),
              max_abs_diff=float(np.abs(np.asarray(ours_logits) - hf_logits.float().numpy()).max()),
              device=str(jax.devices()[0].platform), attn=model.config._attn_implementation,
              torch_threads=torch.get_num_threads())


# ----------------------------------------------------------------------------------------------------------
# (b) checkpoint load

_MEASURE = """
import json, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
def peak():  # MiB. VmHWM: ru_maxrss would include the parent's RSS, which Linux carries over fork + exec
  try:
    with open("/proc/self/status") as f:
      return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
  except (OSError, StopIteration):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if mode in ("jax", "ours"):
  import jax
  jax.devices()
  if mode == "ours":
    from tsp_jax.model import convert
    before = peak()
    start = time.perf_counter()
    cfg, params = convert.load_hf_checkpoint(path)
    jax.block_until_ready(params)
else:
  import torch, transformers
  torch.set_num_threads(int(sys.argv[3]))
  if mode == "hf":
    before = peak()
    start = time.perf_counter()
    model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
if mode == "hf":  # transformers leaves the weights memory-mapped: read each once to make them resident
  wall, lazy_peak = time.perf_counter() - start, peak()
  start = time.perf_counter()
  with torch.no_grad():
    total = sum(float(p.sum()) for p in model.parameters())
  print(json.dumps(dict(wall_s=wall, lazy_peak_mb=lazy_peak, touch_s=time.perf_counter() - start,
                        peak_mb=peak(), before_mb=before)))
elif mode == "ours":
  print(json.dumps(dict(wall_s=time.perf_counter() - start, peak_mb=peak(), before_mb=before)))
else:
  print(json.dumps(dict(peak_mb=peak())))
"""


def _measure(mode: str, path: Path | str = "") -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
      [str(_REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
  out = subprocess.run([sys.executable, "-c", _MEASURE, mode, str(path), str(_cores())], env=env, check=True,
                       capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def load_config(target_gb: float):
  """A Llama config of about `target_gb` GB of fp32 weights (vocab 32000, dim 1024, GQA), by layer count."""
  from tsp_jax.model import llama  # pylint: disable=g-import-not-at-top
  base = dict(vocab_size=32000, dim=1024, n_heads=16, n_kv_heads=8, ffn_dim=2816)
  one = llama.LlamaConfig(n_layers=1, **base).num_params()
  two = llama.LlamaConfig(n_layers=2, **base).num_params()
  layers = max(1, round((target_gb * 1e9 / 4 - (one - (two - one))) / (two - one)))
  return llama.LlamaConfig(n_layers=layers, **base)


def write_random_checkpoint(cfg, path: Path, max_shard_bytes: int) -> None:
  """Random fp32 weights written with save_hf_checkpoint (numpy leaves, made one tensor at a time)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from tsp_jax.model import convert, llama  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape, dtype=np.float32) * np.float32(0.02),
                        llama.abstract_params(cfg))
  convert.save_hf_checkpoint(params, cfg, path, max_shard_bytes=max_shard_bytes)


def bench_load(workdir: Path, load_gb: float, shard_mb: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  from tsp_jax.model import llama  # pylint: disable=g-import-not-at-top
  cfg = load_config(load_gb)
  start = time.perf_counter()
  write_random_checkpoint(cfg, workdir, shard_mb * 2**20)
  files = sorted(workdir.glob("*.safetensors"))
  logging.info("wrote %s in %.1f s", workdir, time.perf_counter() - start)
  largest = max(math.prod(x.shape) for x in jax.tree.leaves(llama.abstract_params(cfg))) * 4
  return dict(cfg=cfg, params=cfg.num_params(), size_mb=sum(f.stat().st_size for f in files) / 2**20,
              largest_mb=largest / 2**20,
              n_files=len(files), jax_base=_measure("jax"), hf_base=_measure("torch"),
              ours=_measure("ours", workdir), hf=_measure("hf", workdir))


# ----------------------------------------------------------------------------------------------------------
# Report.


def format_table(fwd: dict, load: dict | None, s: Settings) -> str:
  c = fwd["cfg"]
  rows = [
      "| measurement | tsp_jax | HF transformers (torch CPU) | tsp_jax / HF | check |",
      "|---|---:|---:|---:|---|",
      f"| prefill forward, tokens/s (batch {s.batch} x {s.seq_len}, median of {s.runs}) "
      f"| {fwd['ours_tps']:,.0f} | {fwd['hf_tps']:,.0f} | {fwd['ours_tps'] / fwd['hf_tps']:.2f}x "
      f"| max abs logit diff {fwd['max_abs_diff']:.1e} |",
  ]
  if load:
    o, h = load["ours"], load["hf"]
    jb, hb = load["jax_base"]["peak_mb"], load["hf_base"]["peak_mb"]
    rows += [
        f"| checkpoint load, wall s ({load['size_mb']:,.0f} MiB fp32, {load['n_files']} files, warm page cache) "
        f"| {o['wall_s']:.2f} | {h['wall_s']:.2f} | {o['wall_s'] / h['wall_s']:.2f}x "
        f"| HF weights stay memory-mapped: first read of all of them +{h['touch_s']:.2f} s |",
        f"| checkpoint load, peak RSS MiB, weights resident | {o['peak_mb']:,.0f} | {h['peak_mb']:,.0f} "
        f"| {o['peak_mb'] / h['peak_mb']:.2f}x | HF right after from_pretrained (lazy) {h['lazy_peak_mb']:,.0f}; "
        f"bare import: jax {jb:,.0f}, torch+transformers {hb:,.0f} |",
        f"| checkpoint load, peak RSS above bare import, MiB | {o['peak_mb'] - jb:,.0f} | {h['peak_mb'] - hb:,.0f} "
        f"| {(o['peak_mb'] - jb) / (h['peak_mb'] - hb):.2f}x | checkpoint {load['size_mb']:,.0f} MiB; largest "
        f"tensor {load['largest_mb']:,.0f} MiB |",
    ]
  lc = load["cfg"] if load else None
  notes = [
      "tsp_jax / HF = tsp_jax's value divided by HF's (tokens/s: higher is better; seconds and MiB: lower is "
      "better)",
      f"forward model: dim {c.dim}, {c.n_layers} layers, {c.n_heads} heads / {c.n_kv_heads} kv, ffn {c.ffn_dim}, "
      f"vocab {c.vocab_size} ({fwd['params'] / 1e6:.1f}M params), fp32; jax on {fwd['device']}, "
      f"HF attn_implementation={fwd['attn']}, torch threads {fwd['torch_threads']}",
  ]
  if lc:
    notes.append(f"load model: dim {lc.dim}, {lc.n_layers} layers, {lc.n_heads} heads / {lc.n_kv_heads} kv, "
                 f"ffn {lc.ffn_dim}, vocab {lc.vocab_size} ({load['params'] / 1e6:.0f}M params); each load in a "
                 f"fresh subprocess; peak RSS = VmHWM")
  return "\n".join(rows + [""] + notes)


def write_results(path: Path, table: str, command: str) -> None:
  section = (f"{SECTION}\n\nMachine: {_cores()} CPU cores. Command:\n\n    {command}\n\n{table}\n")
  text = path.read_text() if path.exists() else "# Benchmark results\n\n"
  if SECTION in text:
    head, rest = text.split(SECTION, 1)
    nxt = rest.find("\n## ")
    text = head + section + (rest[nxt + 1:] if nxt >= 0 else "")
  else:
    text = text.rstrip("\n") + "\n\n" + section
  path.write_text(text)


def run(s: Settings, command: str) -> None:
  """Runs (a) and (b), prints the table and, with `s.results`, writes it there under `command`."""
  if s.jax_platform:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_platforms", s.jax_platform)
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    fwd = bench_forward(Path(tmp) / "forward", s)
    load = bench_load(Path(tmp) / "load", s.load_gb, s.shard_mb) if s.load_gb > 0 else None
  table = format_table(fwd, load, s)
  print(table)
  print(f"\n(total {time.perf_counter() - start:.0f} s)")
  if s.results:
    write_results(Path(s.results), table, command.strip())


def _cli_main() -> None:
  """Defines the flags here, not at import (importing this module registers no flags); defaults: `Settings`."""
  d = Settings()
  flags.DEFINE_string("jax_platform", d.jax_platform, "JAX platform for the forward benchmark ('' = default).")
  flags.DEFINE_integer("vocab_size", d.vocab_size, "Forward model: vocabulary size.")
  flags.DEFINE_integer("dim", d.dim, "Forward model: hidden size.")
  flags.DEFINE_integer("n_layers", d.n_layers, "Forward model: layers.")
  flags.DEFINE_integer("n_heads", d.n_heads, "Forward model: attention heads.")
  flags.DEFINE_integer("n_kv_heads", d.n_kv_heads, "Forward model: key/value heads.")
  flags.DEFINE_integer("ffn_dim", d.ffn_dim, "Forward model: MLP hidden size.")
  flags.DEFINE_integer("batch", d.batch, "Prefill batch size.")
  flags.DEFINE_integer("seq_len", d.seq_len, "Prefill length.")
  flags.DEFINE_integer("runs", d.runs, "Timed runs per implementation (median reported).")
  flags.DEFINE_float("load_gb", d.load_gb, "Size of the load-benchmark checkpoint in GB (0 = skip (b)).")
  flags.DEFINE_integer("shard_mb", d.shard_mb, "max_shard_bytes of the load-benchmark checkpoint, in MiB.")
  flags.DEFINE_string("results", d.results, "If set, write the table into this markdown file (own section).")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    run(Settings(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(Settings)}),
        command="python -m tsp_jax.bench.forward " + " ".join(sys.argv[1:]))

  app.run(main)


if __name__ == "__main__":
  _cli_main()
