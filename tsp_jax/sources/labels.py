"""Verifier glue: branch programs to the pool, verdicts to pair labels and to the token of the first finding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tsp_jax import distributed, pairs
from tsp_jax.search import host
from tsp_jax.verify import Task, Verdict, assemble_program, node_task

LABELS = (pairs.SECURE, pairs.VULNERABLE, pairs.BROKEN, pairs.DROP)


def verdict_label(verdict: Verdict) -> str:
  """A branch's pair label from its verdict: broken (does not parse, or fails its functional tests and its
  security judge: a program that does not work is no evidence of a security decision), drop (tests timed out
  or crashed, or secure but failing its functional tests), vulnerable (functional or untested, and flagged),
  or secure."""
  if verdict.status == "syntax_error":
    return pairs.BROKEN
  if verdict.status != "ok":
    return pairs.DROP
  if not verdict.secure:
    return pairs.BROKEN if verdict.functional is False else pairs.VULNERABLE
  return pairs.SECURE if verdict.functional is not False else pairs.DROP


def label_counts(labels: Sequence[str], prefix: str) -> dict[str, int]:
  """`{prefix}{label}`: how many branches got each label."""
  return {f"{prefix}{k}": list(labels).count(k) for k in LABELS}


def verify_branches(pool, tok, prefixes: Sequence[np.ndarray], branches: Sequence[Sequence[np.ndarray]],
                    tasks: Sequence[Task], prefix_texts: Sequence[str]) -> list[list[tuple[str, int | None]]]:
  """(label, token of the first counted finding) for every branch of every prefix, in one pool batch.

  A branch the token budget cut inside its function is judged on the lines it wrote (`close_truncated`). Each
  process verifies its share of the branches with its own pool; every process then holds all labels.

  Args:
    pool: a `VerifierPool` (anything with `verify(tasks, programs) -> verdicts`).
    tok: the tokenizer (decodes branches in the context of their prefix; `eos_id` marks a finished branch).
    prefixes: each prompt's ids [Lp] (BOS first) as the sampler saw them (possibly cut from the left).
    branches: each prompt's generated ids per branch.
    tasks: per prompt, the verifier Task of its branches (a node task's `node_offset`: where its line begins).
    prefix_texts: each prompt's whole text: the program is this text + the branch, so a prefix the sampler
      saw cut from the left still gives a whole program.
  """
  jobs, programs, where = [], [], []
  for i, (prefix_ids, bs, task, prefix) in enumerate(zip(prefixes, branches, tasks, prefix_texts)):
    for j, ids in enumerate(bs):
      truncated = not len(ids) or int(ids[-1]) != tok.eos_id  # the token budget ended it, not EOS
      programs.append(assemble_program(prefix, host.decode_continuation(prefix_ids, ids, tok), truncated,
                                       task.language))
      jobs.append(task)
      where.append((i, j, len(prefix)))
  share = distributed.process_share(len(jobs))
  codes = np.full((len(share), 2), -1, np.int32)  # [share, (label index, finding token or -1)]
  for row, (k, verdict) in enumerate(zip(share, pool.verify([jobs[k] for k in share], [programs[k] for k in share]))):
    i, j, start = where[k]
    codes[row, 0] = LABELS.index(verdict_label(verdict))
    if verdict.first_finding_offset is not None:
      at = host.token_at_offset(prefixes[i], branches[i][j], verdict.first_finding_offset - start, tok)
      codes[row, 1] = -1 if at is None else at
  codes = distributed.gather_shares(codes, len(jobs))  # [n, 2]
  out: list[list[tuple[str, int | None]]] = [[(pairs.DROP, None)] * len(b) for b in branches]
  for (i, j, _), (label, at) in zip(where, codes.tolist()):
    out[i][j] = (LABELS[label], None if at < 0 else at)
  return out


def label_node_branches(pool, tok, prompts: Sequence[pairs.NodePrompt], branches: Sequence[Sequence[np.ndarray]],
                        strict: bool, record_tasks: Mapping[str, Task] | None = None) -> list[list[str]]:
  """secure / vulnerable / broken / drop for every branch of every risk node, from the verifier's verdicts
  (`record_tasks`: record id -> its Task; a record's executable tests judge the branches of its nodes)."""
  record_tasks = record_tasks or {}
  tasks = [node_task(p.node, node_offset=len(p.node.prefix), strict=strict,
                     record_task=record_tasks.get(p.node.record_id)) for p in prompts]
  return [[lab for lab, _ in bs] for bs in verify_branches(pool, tok, [p.prefix_ids for p in prompts], branches,
                                                            tasks, [p.prefix_text for p in prompts])]
