r"""Trainer: SFT, sequence-level self-play (SPIN) and Tree-like Self-Play, with checkpoints and resume.

    python -m tsp_jax.train --config=configs/tsp.py:tiny --workdir=runs/tsp [--config.rounds=2 ...]

One round of `tsp`: risk nodes (offline, from the security patches) -> prefixes -> `tree_search` (root_k: K
branches per node) -> verifier pool labels every branch -> node-level pairs -> reference log-probs (once, on the
round's starting model) -> epochs of the TSP loss with AdamW -> checkpoint. `selfplay` pairs the golden function
with one full sample from the prompt alone; `sft` trains on prompt + golden function.

Everything a round produces is written under `<workdir>/rounds/<r>/` before training starts (pairs + reference
log-probs), and orbax checkpoints hold the train state with the round and the position in the round's data
order, so a killed run restarted with the same command resumes exactly where it stopped. The workdir may be a
`gs://` URI (files through `etils.epath`; metrics as in `tsp_jax.metrics_log`, with TensorBoard event files).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags
from tqdm import tqdm

from tsp_jax import data, distributed, metrics_log, objective, pairs, train_step
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.model import convert, llama, sharding
from tsp_jax.search import host, tree
from tsp_jax.verify import VerifierPool, assemble_program, node_task
from tsp_jax.verify import types as verify_types


MODES = ("sft", "selfplay", "tsp")


# ----------------------------------------------------------------------------------------------------------
# Set-up.


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError on an inconsistent config before any work starts."""
  if config.mode not in MODES:
    raise ValueError(f"unknown mode {config.mode!r}; expected one of {MODES}")
  if not config.data_dir:
    raise ValueError("config.data_dir is empty: pass --config.data_dir=/path/to/shared/data")
  if config.search.k > config.search.slots_per_prefix:
    raise ValueError(f"search.k={config.search.k} exceeds the slot budget search.slots_per_prefix="
                     f"{config.search.slots_per_prefix}")
  if config.rounds < 1 or config.optim.epochs < 1 or config.batch_size < 1:
    raise ValueError("rounds, optim.epochs and batch_size must be >= 1")
  if config.loss.reference not in ("previous", "initial"):
    raise ValueError(f"loss.reference must be 'previous' or 'initial', got {config.loss.reference!r}")


def load_tokenizer(config, workdir: str | epath.PathLike) -> tokenizer_lib.Tokenizer:
  """The checkpoint's tokenizer.model, or (small-model mode) one trained on the training split."""
  if config.init_checkpoint:
    return tokenizer_lib.Tokenizer.from_dir(config.init_checkpoint)
  path = epath.Path(workdir) / "tokenizer.model"
  if path.exists():  # trained before a restart
    return tokenizer_lib.Tokenizer(path)
  records = data.read_records(data.split_files(config.data_dir, config.train_split))
  texts = [t for r in records for t in (data.model_prompt(r), r.golden, r.vulnerable) if t]
  return tokenizer_lib.train_tokenizer(texts, config.tokenizer_vocab_size, path, seed=config.seed)


def initial_params(config, cfg: llama.LlamaConfig, mesh) -> llama.Params:
  """The starting model: the HF checkpoint, or a seeded random init (small-model mode)."""
  if config.init_checkpoint:
    _, params = convert.load_hf_checkpoint(config.init_checkpoint, dtype=jnp.float32, mesh=mesh)
    return params
  return llama.init_params(cfg, jax.random.key(config.seed), mesh=mesh)


def model_config(config, tok: tokenizer_lib.Tokenizer) -> llama.LlamaConfig:
  if config.init_checkpoint:
    hf_config = json.loads((epath.Path(config.init_checkpoint) / "config.json").read_text())
    cfg = convert.config_from_hf(hf_config, remat=config.model.overrides.get("remat", False))
  else:
    cfg = llama.LlamaConfig.from_preset(config.model.preset, vocab_size=tok.vocab_size, **config.model.overrides)
  return dataclasses.replace(cfg, dtype=config.model.dtype)


# ----------------------------------------------------------------------------------------------------------
# Building a round's pairs.


def search_config(config, tok, policy: str, slots: int) -> tree.SearchConfig:
  """The round's sampler: `root_k` / `entropy` trees at nodes, or `none` (one sample per prompt)."""
  s = config.search
  return tree.SearchConfig(slots_per_prefix=slots, max_new_tokens=s.max_new_tokens, policy=policy, k=min(s.k, slots),
                           temperature=s.temperature, top_p=s.top_p, stop_ids=(tok.eos_id,),
                           cache_len=s.max_prefix + s.max_new_tokens, entropy_threshold=s.entropy_threshold,
                           max_depth=s.max_depth, min_fork_distance=s.min_fork_distance)


@dataclasses.dataclass
class Branches:
  """The branches of one prompt's tree: generated ids, and the tree structure in local branch indices."""
  ids: list[np.ndarray]
  parent: np.ndarray  # [n] int: local index of the parent branch, -1 for roots
  fork_pos: np.ndarray  # [n] int


def sample_branches(params, cfg, prompts: list[np.ndarray], scfg: tree.SearchConfig, rng: jax.Array,
                    batch: int, desc: str) -> list[Branches]:
  """Every prompt's tree (the prompts are searched `batch` at a time, padded to one compiled shape)."""
  out = []
  width = scfg.cache_len - scfg.max_new_tokens
  for start in tqdm(range(0, len(prompts), batch), desc=desc, disable=jax.process_index() != 0):
    chunk = prompts[start:start + batch]
    padded = chunk + [chunk[0]] * (batch - len(chunk))
    ids = np.zeros((batch, width), np.int32)
    for i, p in enumerate(padded):
      ids[i, :len(p)] = p
    lens = np.array([len(p) for p in padded], np.int32)
    tr = distributed.to_host(tree.tree_search(params, cfg, ids, lens, jax.random.fold_in(rng, start), scfg,
                                              rules=sharding.SAMPLE_RULES))  # numpy leaves, whole on every host
    for i in range(len(chunk)):
      slots = [int(s) for s in host.branch_slots(tr) if tr.prefix_index[s] == i]
      local = {s: j for j, s in enumerate(slots)}
      out.append(Branches(ids=[host.generated_tokens(tr, s) for s in slots],
                          parent=np.array([local.get(int(tr.parent[s]), -1) for s in slots]),
                          fork_pos=np.array([int(tr.fork_pos[s]) for s in slots])))
  return out


LABELS = (pairs.SECURE, pairs.VULNERABLE, pairs.BROKEN, pairs.DROP)


def verdict_label(verdict) -> str:
  """A branch's pair label from its verdict: broken (does not parse), drop (tests timed out or crashed, or
  secure but failing its functional tests), vulnerable, or secure."""
  if verdict.status == "syntax_error":
    return pairs.BROKEN
  if verdict.status != "ok":
    return pairs.DROP
  if not verdict.secure:
    return pairs.VULNERABLE
  return pairs.SECURE if verdict.functional is not False else pairs.DROP


def verify_branches(pool, tok, prefixes: list[np.ndarray], branches: list[list[np.ndarray]], tasks: list,
                    prefix_texts: list[str]) -> list[list[tuple[str, int | None]]]:
  """(label, token of the first counted finding) for every branch of every prefix, in one pool batch.

  A branch the token budget cut inside its function is judged on the lines it wrote (`close_truncated`).

  Args:
    prefixes: each prompt's ids [Lp] (BOS first) as the sampler saw them (possibly cut from the left).
    branches: each prompt's generated ids per branch.
    tasks: per prompt, the verifier Task of its branches (a node task's `node_offset` is `len(prefix_text)`).
    prefix_texts: each prompt's whole text: the program is this text + the branch, so a prefix the sampler
      saw cut from the left still gives a whole program.
  """
  jobs, programs, where = [], [], []
  for i, (prefix_ids, bs, task, prefix) in enumerate(zip(prefixes, branches, tasks, prefix_texts)):
    for j, ids in enumerate(bs):
      truncated = not len(ids) or int(ids[-1]) != tok.eos_id  # the token budget ended it, not EOS
      programs.append(assemble_program(prefix, host.decode_continuation(prefix_ids, ids, tok), truncated))
      jobs.append(task)
      where.append((i, j, len(prefix)))
  # Each process verifies its share of the branches with its own pool; every process then holds all labels.
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


def label_branches(pool, tok, prompts: list[pairs.NodePrompt], branches: list[list[np.ndarray]],
                   strict: bool) -> list[list[str]]:
  """secure / vulnerable / broken / drop for every branch of every risk node, from the verifier's verdicts."""
  tasks = [node_task(p.node, node_offset=len(p.node.prefix), strict=strict) for p in prompts]
  return [[lab for lab, _ in bs] for bs in verify_branches(pool, tok, [p.prefix_ids for p in prompts], branches,
                                                            tasks, [p.node.prefix for p in prompts])]


def rollout_pairs(config, tok, params, cfg, records: list[data.Record], tasks: dict, rng: jax.Array, pool
                  ) -> tuple[list, list[int], dict[str, Any]]:
  """Pairs at verifier-localized nodes in rollouts from the prompts of records without a vulnerable twin.

  Each prompt gets a tree (the round's policy); the verifier labels the leaves with the record's own tests where
  it has them (CodeGuard+ unit tests) and the static composite; `pairs.localized_pairs` pairs secure leaves (and
  the golden function) with vulnerable ones that part from them at or before the first finding's token.
  """
  s = config.search
  mode = verify_types.MODE_STRICT if config.verify.strict else verify_types.MODE_CWE
  prompts, goldens, jobs, texts = [], [], [], []
  for r in records:
    p = np.asarray(tok.encode(data.model_prompt(r), bos=True), np.int32)
    if len(p) > s.max_prefix:
      continue
    prompts.append(p)
    texts.append(data.model_prompt(r))
    goldens.append(None if r.golden is None else
                   np.asarray((tok.encode(data.model_prompt(r) + r.golden, bos=True) + [tok.eos_id])[len(p):]
                              [:s.max_new_tokens], np.int32))
    base_task = tasks.get(r.id) or verify_types.Task(id=r.id, cwe=r.cwe)
    jobs.append(dataclasses.replace(base_task, mode=mode))
  counts: dict[str, Any] = {"rollout_prompts": len(prompts), "rollout_too_long": len(records) - len(prompts)}
  if not prompts:
    return [], [], counts
  scfg = search_config(config, tok, s.policy, s.slots_per_prefix)
  trees = sample_branches(params, cfg, prompts, scfg, rng, s.prefixes_per_batch, "rollouts")
  labelled = verify_branches(pool, tok, prompts, [t.ids for t in trees], jobs, texts)
  plist, prefix_lens = [], []
  for p, golden, t, labs in zip(prompts, goldens, trees, labelled):
    found = pairs.localized_pairs(p, t.ids, [lab for lab, _ in labs], [at for _, at in labs], golden,
                                  config.max_pairs_per_node)
    plist += found
    prefix_lens += [len(p)] * len(found)
  flat = [lab for labs in labelled for lab, _ in labs]
  counts.update({f"rollout_{k}": flat.count(k) for k in (pairs.SECURE, pairs.VULNERABLE, pairs.BROKEN, pairs.DROP)})
  return plist, prefix_lens, counts


def build_round_pairs(config, tok, params, cfg, nodes: list[data.Node], records: list[data.Record],
                      rng: jax.Array, pool, rollouts: list[data.Record] = (), tasks: dict | None = None
                      ) -> tuple[pairs.PairSet, dict[str, Any]]:
  """The pairs of one round for the config's mode, and counts for the log.

  TSP mode: trees at the risk `nodes`, plus rollouts from the prompts of `rollouts` (records without a
  vulnerable twin), verified with `tasks` (record id -> verifier Task carrying the record's tests).
  """
  s = config.search
  length = s.max_prefix + s.max_new_tokens
  if config.mode == "sft":
    seqs, prompt_lens = [], []
    for prompt, golden in data.golden_texts(records, config.sft_include_vulnerable):
      p = tok.encode(prompt, bos=True)
      seqs.append(np.asarray((p + tok.encode(golden, bos=False) + [tok.eos_id])[:length], np.int32))
      prompt_lens.append(len(p))
    ps = pairs.sequence_set(seqs, prompt_lens, length, tok.pad_id)
    return ps, {"examples": len(ps)}

  if config.mode == "selfplay":
    items = []
    for r in records:
      if r.golden is None:
        continue
      p = tok.encode(data.model_prompt(r), bos=True)[-s.max_prefix:]
      golden = np.asarray((p + tok.encode(r.golden, bos=False) + [tok.eos_id]), np.int32)
      items.append((np.asarray(p, np.int32), golden))
    scfg = search_config(config, tok, "none", 1)
    samples = sample_branches(params, cfg, [p for p, _ in items], scfg, rng, s.prefixes_per_batch, "selfplay")
    plist = [(golden, np.concatenate([p, smp.ids[0]]), pairs.KIND_SEQUENCE) for (p, golden), smp in zip(items, samples)]
    return pairs.pair_arrays(plist, [len(p) for p, _ in items], length, tok.pad_id), {"pairs": len(plist)}

  prompts, skipped = [], 0
  for n in nodes:
    np_ = pairs.tokenize_node(tok, n, s.max_prefix, s.max_new_tokens)
    if np_ is None:
      skipped += 1
    else:
      prompts.append(np_)
  scfg = search_config(config, tok, s.policy, s.slots_per_prefix)
  trees = sample_branches(params, cfg, [p.prefix_ids for p in prompts], scfg, rng, s.prefixes_per_batch, "trees")
  t0 = time.time()
  labels = label_branches(pool, tok, prompts, [t.ids for t in trees], config.verify.strict)
  verify_s = time.time() - t0
  plist, prefix_lens = [], []
  for prompt, t, labs in zip(prompts, trees, labels):
    found = pairs.node_pairs(prompt, t.ids, labs, config.max_pairs_per_node)
    forks = pairs.subtree_pairs(t.parent, t.fork_pos, list(range(len(t.ids))), dict(enumerate(labs)))
    found += [(np.concatenate([prompt.prefix_ids, t.ids[a]]), np.concatenate([prompt.prefix_ids, t.ids[b]]),
               pairs.KIND_SUBTREE) for a, b in forks[:config.max_pairs_per_node]]
    plist += found
    prefix_lens += [len(prompt.prefix_ids)] * len(found)
  flat = [lab for labs in labels for lab in labs]
  counts = {"nodes": len(prompts), "boundary_skipped": skipped, "branches": len(flat), "verify_s": verify_s,
            **{f"label_{k}": flat.count(k) for k in (pairs.SECURE, pairs.VULNERABLE, pairs.BROKEN, pairs.DROP)}}
  if rollouts:
    found, lens, rollout_counts = rollout_pairs(config, tok, params, cfg, rollouts, tasks or {},
                                                jax.random.fold_in(rng, 1 << 21), pool)
    plist += found
    prefix_lens += lens
    counts.update(rollout_counts)
  ps = pairs.pair_arrays(plist, prefix_lens, length, tok.pad_id)
  counts.update({f"pairs_{k}": v for k, v in ps.counts().items()})
  return ps, counts


def to_batch(ps: pairs.PairSet, idx: np.ndarray, batch_size: int, mode: str):
  """The device batch of pair indices `idx` (padded to batch_size with zero-weight pairs) and its ref log-probs."""
  n = len(idx)
  full = np.concatenate([idx, np.full(batch_size - n, idx[0])]) if n < batch_size else idx
  weight = (np.arange(batch_size) < n).astype(np.float32)
  if mode == "sft":
    return objective.SeqBatch(tokens=ps.chosen[full], mask=ps.chosen_mask[full] * weight[:, None]), None
  batch = objective.PairBatch(chosen=ps.chosen[full], rejected=ps.rejected[full], chosen_mask=ps.chosen_mask[full],
                              rejected_mask=ps.rejected_mask[full], weight=weight)
  return batch, ps.ref_logps[full]


def reference_logps(params, cfg, ps: pairs.PairSet, loss_cfg, batch_size: int) -> np.ndarray:
  """Reference log-probs of every pair, [N, 2], computed once (jitted, batch by batch)."""
  ref_fn = jax.jit(lambda p, b: objective.reference_logps(p, cfg, b, loss_cfg))
  out = []
  for start in range(0, len(ps), batch_size):
    idx = np.arange(start, min(start + batch_size, len(ps)))
    batch, _ = to_batch(dataclasses.replace(ps, ref_logps=np.zeros((len(ps), 2), np.float32)), idx, batch_size,
                        "tsp")
    out.append(distributed.to_host(ref_fn(params, batch))[:len(idx)])
  return np.concatenate(out).astype(np.float32)


def pair_metrics(params, cfg, ps: pairs.PairSet, loss_cfg, batch_size: int) -> dict[str, float]:
  """Implicit-reward accuracy / margin vs the pairs' reference, and the policy's own preference accuracy
  (mean log-prob per scored token: chosen > rejected), over a whole PairSet."""
  loss = jax.jit(lambda p, b, r: objective.tsp_loss(p, cfg, b, r, loss_cfg)[1])
  logps = jax.jit(lambda p, b: objective.pair_logps(p, cfg, b, loss_cfg))
  sums, total, pref = {}, 0, 0.0
  for start in range(0, len(ps), batch_size):
    idx = np.arange(start, min(start + batch_size, len(ps)))
    batch, ref = to_batch(ps, idx, batch_size, "tsp")
    m = distributed.to_host(loss(params, batch, ref))
    for k in ("dpo_loss", "reward_accuracy", "margin"):
      sums[k] = sums.get(k, 0.0) + float(m[k]) * len(idx)
    c, r = distributed.to_host(logps(params, batch))
    per_c = c[:len(idx)] / np.maximum(ps.chosen_mask[idx].sum(1), 1)
    per_r = r[:len(idx)] / np.maximum(ps.rejected_mask[idx].sum(1), 1)
    pref += float(np.sum(per_c > per_r))
    total += len(idx)
  return {**{k: v / total for k, v in sums.items()}, "preference_accuracy": pref / total}


# ----------------------------------------------------------------------------------------------------------
# The loop.


def checkpoint_manager(config, workdir: str | epath.PathLike) -> ocp.CheckpointManager:
  """Orbax checkpoints in `config.checkpoint_dir`, default `<workdir>/checkpoints` (local or gs://)."""
  path = config.checkpoint_dir or str(epath.Path(workdir) / "checkpoints")
  if not metrics_log.is_remote(path):
    path = os.path.abspath(path)
  return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                                                          create=True))


def round_schedule(config, num_pairs: int) -> tuple[train_step.OptimConfig, grain.MapDataset]:
  """The round's optimizer settings and its data order: pair indices, shuffled per epoch, batched."""
  epochs = config.optim.epochs
  if config.optim.steps:  # a fixed budget of micro-batches, whatever the number of pairs (equal-compute arms)
    epochs = math.ceil(config.optim.steps * config.batch_size / num_pairs)
  order = grain.MapDataset.range(num_pairs).shuffle(seed=config.seed).repeat(epochs).batch(config.batch_size)
  if config.optim.steps:
    order = order[:config.optim.steps]
  updates = max(1, math.ceil(len(order) / config.optim.grad_accum))
  o = config.optim
  ocfg = train_step.OptimConfig(lr=o.lr, warmup_steps=int(o.warmup_ratio * updates), total_steps=updates,
                                weight_decay=o.weight_decay, clip_norm=o.clip_norm, grad_accum=o.grad_accum)
  return ocfg, order


def run(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> dict[str, Any]:
  """Trains for `config.rounds` rounds (resuming from `workdir` if it holds checkpoints); returns a summary."""
  validate(config)
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  log = metrics_log.MetricsLog(workdir, tensorboard=config.tensorboard, primary=distributed.is_primary())
  try:
    return _train(config, workdir, log)
  finally:
    log.close()  # a remote metrics file is written out even when training fails


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, log: metrics_log.MetricsLog) -> dict[str, Any]:
  """`run`'s body: data, model, resume, the rounds, export."""
  mesh = sharding.make_mesh(config.mesh_shape)
  logging.info("process %d/%d, %d devices, mesh %s", jax.process_index(), jax.process_count(), jax.device_count(),
               dict(mesh.shape))
  loss_cfg = objective.LossConfig(name={"sft": "sft", "selfplay": "dpo", "tsp": "tsp"}[config.mode],
                                  beta=config.loss.beta, sft_weight=config.loss.sft_weight,
                                  first_token_weight=config.loss.first_token_weight,
                                  first_tokens=config.loss.first_tokens)
  stats = data.LoadStats()
  records, nodes = data.load_nodes(data.split_files(config.data_dir, config.train_split), stats)
  dev_records, dev_nodes = data.load_nodes(data.split_files(config.data_dir, config.dev_split))
  log.write({"event": "data", **stats.as_dict(), "nodes": len(nodes), "dev_nodes": len(dev_nodes)})
  # Every process holds the whole round (identical pairs everywhere); the verifier work is split by process.
  nodes = data.take(data.shuffled(nodes, config.seed), config.nodes_per_round or None)
  dev_nodes = data.take(data.shuffled(dev_nodes, config.seed), config.dev_nodes or None) if dev_nodes else []
  rollouts, tasks = [], {}
  if config.mode == "tsp" and config.rollout_records and data.rollout_records(records):
    rollouts = data.take(data.shuffled(data.rollout_records(records), config.seed),
                         None if config.rollout_records < 0 else config.rollout_records)
    tasks = {t.id: t for path in data.split_files(config.data_dir, config.train_split)
             for t in verify_types.load_tasks(path, strict=False)}
  tok = load_tokenizer(config, workdir)
  cfg = model_config(config, tok)

  manager = checkpoint_manager(config, workdir)
  params = initial_params(config, cfg, mesh)
  initial = params if config.loss.reference == "initial" else None
  meta, restored = {"round": 0, "step_in_round": 0, "global_step": 0}, None
  latest = manager.latest_step()
  if latest is not None:
    meta = manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    # The optimizer state's structure does not depend on the schedule: any round's tx gives the target.
    tx = train_step.make_optimizer(train_step.OptimConfig(grad_accum=config.optim.grad_accum))
    shardings = train_step.state_shardings(cfg, tx, mesh)
    target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                          jax.eval_shape(lambda p: train_step.init_state(p, tx), params), shardings)
    restored = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    meta.setdefault("global_step", 0)  # checkpoints written before the global step was recorded
    params = restored.params
    logging.info("resumed from checkpoint %d: %s", latest, meta)

  summary: dict[str, Any] = {"rounds": []}
  global_step = meta["global_step"]  # train steps over all rounds (TensorBoard's step axis)
  pool = None
  if config.mode == "tsp":
    pool = VerifierPool(num_workers=config.verify.num_workers)
  try:
    for r in range(meta["round"], config.rounds):
      resume_step = meta["step_in_round"] if r == meta["round"] else 0
      round_dir = workdir / "rounds" / str(r)
      round_dir.mkdir(parents=True, exist_ok=True)
      rng = jax.random.fold_in(jax.random.key(config.seed), r)
      ps_path, dev_path = round_dir / "pairs.npz", round_dir / "dev_pairs.npz"
      if ps_path.exists():  # built before a restart: the same pairs and reference log-probs
        ps = pairs.PairSet.load(ps_path)
      else:
        t0 = time.time()
        ps, counts = build_round_pairs(config, tok, params, cfg, nodes, records, rng, pool, rollouts, tasks)
        if len(ps) == 0:
          raise ValueError(f"round {r} produced no training pairs: {counts}")
        ref_params = initial if initial is not None else params
        if config.mode != "sft":
          ps.ref_logps = reference_logps(ref_params, cfg, ps, loss_cfg, config.batch_size)
        if config.mode == "tsp" and dev_nodes:
          dev, dev_counts = build_round_pairs(config, tok, params, cfg, dev_nodes, dev_records,
                                              jax.random.fold_in(rng, 1 << 20), pool)
          counts.update({f"dev_{k}": v for k, v in dev_counts.items()})
          if len(dev):
            dev.ref_logps = reference_logps(ref_params, cfg, dev, loss_cfg, config.batch_size)
            dev.save(dev_path)
        ps.save(ps_path)
        log.write({"event": "round_data", "round": r, "seconds": time.time() - t0, **counts}, global_step)

      ocfg, order = round_schedule(config, len(ps))
      tx = train_step.make_optimizer(ocfg)
      shardings = train_step.state_shardings(cfg, tx, mesh)
      if resume_step > 0:
        state = restored  # mid-round: params, optimizer state and step as checkpointed
      else:
        state = train_step.init_state(params, tx, shardings)
      step_fn = train_step.make_train_step(cfg, loss_cfg, tx, shardings)
      dev = pairs.PairSet.load(dev_path) if dev_path.exists() else None
      if dev is not None and resume_step == 0:
        log.write({"event": "dev_before", "round": r, **pair_metrics(state.params, cfg, dev, loss_cfg,
                                                                      config.batch_size)}, global_step)

      t_round = time.time()
      for i in range(resume_step, len(order)):
        t0 = time.time()
        batch, ref = to_batch(ps, np.asarray(order[i]), config.batch_size, config.mode)
        tokens = float(np.sum(batch.mask if config.mode == "sft" else batch.chosen_mask + batch.rejected_mask))
        # Every process holds the whole batch: each puts its devices' rows (multi-host safe).
        state, metrics = step_fn(state, *distributed.global_batch((batch, ref), mesh))
        metrics = distributed.to_host(metrics)
        seconds = time.time() - t0
        done = i + 1 - resume_step
        global_step += 1
        log.write({"event": "train", "round": r, "step": i + 1, "steps": len(order), "global_step": global_step,
                   **metrics,
                   "lr": float(train_step.schedule(ocfg)(min(i // ocfg.grad_accum, ocfg.total_steps))),
                   "step_s": seconds, "tokens_per_s": tokens / max(seconds, 1e-9),
                   "eta_s": (time.time() - t_round) / done * (len(order) - i - 1)}, global_step)
        if (i + 1) % config.checkpoint_every == 0 or i + 1 == len(order):
          next_meta = {"round": r, "step_in_round": i + 1} if i + 1 < len(order) else {"round": r + 1,
                                                                                       "step_in_round": 0}
          manager.save(int(manager.latest_step() or 0) + 1, args=ocp.args.Composite(
              state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({**next_meta, "global_step": global_step})))
          manager.wait_until_finished()
          log.flush()
      params = state.params
      round_summary = {"round": r, "pairs": len(ps)}
      if dev is not None:
        after = pair_metrics(params, cfg, dev, loss_cfg, config.batch_size)
        log.write({"event": "dev_after", "round": r, **after}, global_step)
        round_summary["dev_after"] = after
      summary["rounds"].append(round_summary)
      latest = manager.latest_step()
  finally:
    if pool is not None:
      pool.close()
    manager.close()
  if config.export:
    export = workdir / "export"
    convert.save_hf_checkpoint(params, cfg, export)  # every process takes part; process 0 writes
    if distributed.is_primary() and epath.Path(tok.model_path).exists():
      (export / "tokenizer.model").write_bytes(epath.Path(tok.model_path).read_bytes())
    distributed.sync("export")
    summary["export"] = str(export)
  return summary


def _cli_main() -> None:
  """Defines the flags here, not at import, so that modules importing the trainer keep their own flag names."""
  config = config_flags.DEFINE_config_file("config", None, "Trainer config file[:variant].", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None,
                                "Output directory, local or gs:// (checkpoints, metrics, rounds, export).")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if workdir.value is None or config.value is None:
      raise app.UsageError("--config and --workdir are required")
    distributed.maybe_initialize()  # multi-host TPU slices only (see tsp_jax.distributed)
    run(config.value, workdir.value)

  app.run(main)


if __name__ == "__main__":
  _cli_main()
