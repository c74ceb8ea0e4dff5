"""Node-level probe on risk nodes: does the model prefer the fix at the node, and what does it write there?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from tsp_jax import data, objective
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.evaluation.decoding import Decoding, encode_prompts, generate
from tsp_jax.evaluation.metrics import parse_rate, parseable, ratio
from tsp_jax.model import llama
from tsp_jax.verify import static
from tsp_jax.verify.program import assemble_program, node_task


def probe_pair(tok: tokenizer_lib.Tokenizer, node: data.Node, max_len: int
               ) -> tuple[np.ndarray, np.ndarray, int] | None:
  """(fixed ids, vulnerable ids, prefix length) of a node: prefix + fixed lines + rest of the golden function,
  and prefix + vulnerable lines + the same rest; each at most `max_len` tokens (prefix cut from the left after
  BOS, continuations to half of max_len). None when the tokenizer merges across the node boundary."""
  conts = [node.golden_rest, node.vulnerable_rest]
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
  programs = [assemble_program(prefixes[i], c, truncated=True, language=t.language)
              for i, c, t in zip(kept, completions, tasks)]
  verdicts = pool.verify(tasks, programs)
  ok = [(nodes[i], v) for i, v in zip(kept, verdicts) if parseable(v)]
  # Static flags of the node's CWE family (the verifier's counting rules, without the patch oracle).
  flagged = sum(bool(static.counted_findings(t, [f for f in v.findings if f.tool != "oracle"], p))
                for t, p, v in zip(tasks, programs, verdicts) if parseable(v))
  out.update(samples=len(kept), prompt_too_long=len(nodes) - len(kept), parse_rate=parse_rate(verdicts),
             flag_rate=ratio(flagged, len(ok)),
             oracle_vulnerable_rate=ratio(sum(v.oracle == "vulnerable" for _, v in ok), len(ok)),
             oracle_secure_rate=ratio(sum(v.oracle == "secure" for _, v in ok), len(ok)),
             vulnerable_rate=ratio(sum(not v.secure for _, v in ok), len(ok)))
  return out
