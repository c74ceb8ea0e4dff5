"""Tree search: decode and fork many branches of many prefixes inside `jax.lax.while_loop`s (one compiled program).

S = P * N fixed slots (N = `slots_per_prefix`); slot s belongs to prefix s // N. Every slot holds one branch:
its prefix followed by its generated tokens, a KV-cache row for the generated tokens, and tree metadata; the
prefixes' keys/values are computed once and shared by their N slots (`llama.PrefixKV`). Each loop step samples
one token for every live slot and runs one cached decode step over all S rows. The cache grows with the
branches (`SearchConfig.window_step` tokens at a time, one while loop per length), so a step reads little more
than what has been filled. Forking a branch copies its state and its KV-cache row into a free slot of the same
prefix; steps without a fork skip the copy (`lax.cond`).

Policies (`SearchConfig.policy`):
  none     N independent samples per prefix (greedy when temperature == 0): the evaluation sampler.
  root_k   K branches per prefix whose first tokens are distinct draws (without replacement) from the policy:
           TSP's risk-node expansion. Slot 0 of the prefix is the root; the others are its children forked at
           the prefix end. Where the policy's support holds fewer than K first tokens, the extra branches are
           dropped, or with `root_fill` sampled on their own (roots: they part from the others later, where
           the model is unsure, e.g. inside the line a risk node starts).
  entropy  one root per prefix; a live branch whose next-token entropy exceeds a threshold forks into its
           top alternatives (tokens other than the one it sampled), while free slots of its prefix remain,
           subject to a maximum fork depth and a minimum distance between forks of one lineage.

Exactness: `raw_logprobs[s, t]` is the log-prob of `tokens[s, t]` under the model (no temperature / top-p), from
the cached decode step; it equals an uncached forward over the branch (tested).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from tsp_jax.model import decode, llama, sharding
from tsp_jax.search import sampling

POLICIES = ("none", "root_k", "entropy")

# Finish reasons recorded in `Tree.finish`.
RUNNING, STOP_TOKEN, MAX_NEW_TOKENS, CACHE_FULL = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Static settings of one compiled search program (hashable)."""
  slots_per_prefix: int = 4  # N: slots (branches, leaves) per prefix; also the per-prefix slot budget
  max_new_tokens: int = 128
  policy: str = "none"
  k: int = 4  # root_k: branches per prefix (<= slots_per_prefix)
  root_fill: bool = False  # root_k: branches beyond the support's distinct first tokens are independent samples
  temperature: float = 1.0
  # Temperature of every token after the first generated one (step 0: root_k's decision tokens); < 0: the same
  # as `temperature`. Lower, branches part at the decision token and continue near the model's mode.
  rollout_temperature: float = -1.0
  top_p: float = 1.0
  top_k: int = 0
  stop_ids: tuple[int, ...] = (2,)  # EOS and any other stop tokens
  cache_len: int = 0  # tokens per branch, prefix included; 0 = prefix width + max_new_tokens
  entropy_threshold: float = 2.0  # entropy policy: fork where the model's entropy (nats) exceeds this
  fork_width: int = 1  # entropy policy: children per fork event
  max_depth: int = 3  # entropy policy: forks along one lineage
  min_fork_distance: int = 4  # entropy policy: tokens from the prefix end to a fork, and between two forks
  max_forks_per_step: int = 0  # bound on KV rows copied per step; 0 = one fork event per prefix
  window_step: int = 32  # the generated-token cache grows by this many slots at a time (one compiled loop per
  #                        length: a step reads the filled part rounded up); 0 = full length from the start

  def validate(self) -> None:
    """Raises ValueError on an inconsistent config."""
    if self.policy not in POLICIES:
      raise ValueError(f"unknown fork policy {self.policy!r}; expected one of {POLICIES}")
    if self.slots_per_prefix < 1 or self.max_new_tokens < 1:
      raise ValueError("slots_per_prefix and max_new_tokens must be >= 1")
    if self.policy == "root_k" and not 1 <= self.k <= self.slots_per_prefix:
      raise ValueError(f"root_k needs 1 <= k <= slots_per_prefix, got k={self.k}, "
                       f"slots_per_prefix={self.slots_per_prefix}")
    if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
      raise ValueError(f"bad sampling settings: temperature={self.temperature} (>= 0), top_p={self.top_p} "
                       f"(in (0, 1]), top_k={self.top_k} (>= 0)")
    if self.fork_width < 1 or self.max_depth < 0 or self.min_fork_distance < 0 or self.max_forks_per_step < 0:
      raise ValueError("fork_width >= 1, max_depth >= 0, min_fork_distance >= 0, max_forks_per_step >= 0")
    if self.window_step < 0:
      raise ValueError(f"window_step must be >= 0, got {self.window_step}")

  @property
  def rest_temperature(self) -> float:
    """The temperature of a branch's tokens after its first."""
    return self.temperature if self.rollout_temperature < 0 else self.rollout_temperature

  def phases(self, gen_len: int) -> list[tuple[int, int]]:
    """(end step, cache length) of each decode loop, for a branch capacity of `gen_len` generated tokens.

    Step i writes a branch's generated token number <= i, so the steps before `end` need min(gen_len, end) slots.
    """
    c = self.window_step or self.max_new_tokens
    ends = list(range(c, self.max_new_tokens, c)) + [self.max_new_tokens]
    return [(end, min(gen_len, end)) for end in ends]


@flax.struct.dataclass
class Tree:
  """Search output; S slots, L = cache length. Slots with valid == False hold nothing."""
  tokens: jax.Array  # [S, L] int32: prefix (its own length, unpadded) then the generated tokens, then 0
  logprobs: jax.Array  # [S, L] float32: log-prob under the sampling policy; 0 where not generated
  raw_logprobs: jax.Array  # [S, L] float32: log-prob under the model (T=1, no filtering); 0 where not generated
  entropy: jax.Array  # [S, L] float32: model entropy of the distribution each token was drawn from
  lengths: jax.Array  # [S] int32: prefix length + generated count
  prefix_lens: jax.Array  # [S] int32
  prefix_index: jax.Array  # [S] int32: which prefix the slot expands
  parent: jax.Array  # [S] int32: slot this branch forked from, -1 for roots
  fork_pos: jax.Array  # [S] int32: first position where the branch differs from its parent, -1 for roots
  depth: jax.Array  # [S] int32: number of forks along the lineage
  valid: jax.Array  # [S] bool: slot holds a branch
  finish: jax.Array  # [S] int32: RUNNING (never for valid slots at the end), STOP_TOKEN, MAX_NEW_TOKENS, CACHE_FULL


@flax.struct.dataclass
class SearchState:
  """The while-loop carry: the tree so far, the KV caches and per-slot decode state."""
  tree: Tree
  prefix: llama.PrefixKV  # the P prefixes' keys/values (read only)
  cache: llama.KVCache  # S rows: each slot's generated tokens' keys/values
  logits: jax.Array  # [S, V] float32: next-token logits of each slot
  alive: jax.Array  # [S] bool
  last_fork: jax.Array  # [S] int32: position of the latest fork on the lineage (prefix end for roots)
  step: jax.Array  # [] int32


def _group_rank(mask: jax.Array, groups: int) -> jax.Array:
  """0-based rank of each True entry among the True entries of its group. mask: [G*M] -> [G*M] int32."""
  m = mask.reshape(groups, -1).astype(jnp.int32)
  return (jnp.cumsum(m, axis=1) - 1).reshape(-1)


def _plan_forks(loop: SearchState, tok: jax.Array, policy_logp: jax.Array, ent: jax.Array, num_prefixes: int,
                scfg: SearchConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Decides this step's forks (entropy policy).

  Returns dst [F], src [F], child_tok [F] int32: child slot, parent slot, the child's token; dst == S marks an
  unused entry (F = max forks per step).
  """
  s = tok.shape[0]
  n, w = scfg.slots_per_prefix, scfg.fork_width
  tree = loop.tree
  pos = tree.lengths
  wants = (loop.alive & (ent > scfg.entropy_threshold) & (tree.depth < scfg.max_depth)
           & (pos - loop.last_fork >= scfg.min_fork_distance))  # [S]
  # Alternatives: the best `w` tokens other than the one the parent sampled, if inside the policy's support.
  excl = policy_logp.at[jnp.arange(s), tok].set(-jnp.inf)
  alt_logp, alt_tok = jax.lax.top_k(excl, w)  # [S, W]
  requests = (wants[:, None] & jnp.isfinite(alt_logp)).reshape(-1)  # [S*W], slot-major
  req_rank = _group_rank(requests, num_prefixes)  # rank within the prefix
  free = ~tree.valid
  free_rank = _group_rank(free, num_prefixes)
  # Destination slot (g, i) takes the request of group g whose rank equals its free rank.
  req_g = requests.reshape(num_prefixes, n * w)
  match = (req_g[:, None, :] & (req_rank.reshape(num_prefixes, 1, n * w)
                                == free_rank.reshape(num_prefixes, n, 1)))  # [P, N, N*W]
  receives = free & match.any(axis=-1).reshape(-1)  # [S]
  req_local = jnp.argmax(match, axis=-1).reshape(-1)  # [S]: request index within the group
  group = jnp.arange(s) // n
  src_all = group * n + req_local // w  # [S]
  alt_all = alt_tok[src_all, req_local % w]  # [S]
  max_forks = min(s, scfg.max_forks_per_step or num_prefixes * w)
  dst = jnp.nonzero(receives, size=max_forks, fill_value=s)[0].astype(jnp.int32)  # [F]
  safe = jnp.minimum(dst, s - 1)
  return dst, src_all[safe], alt_all[safe]


def _apply_forks(loop: SearchState, dst: jax.Array, src: jax.Array) -> SearchState:
  """Copies the state and KV-cache rows of slots `src` [F] into slots `dst` [F] (dst == S: skipped)."""
  def copy_rows(x):
    return x.at[dst].set(x[src], mode="drop")

  tree = loop.tree
  pos = tree.lengths[src]
  tree = jax.tree.map(copy_rows, tree)
  tree = tree.replace(parent=tree.parent.at[dst].set(src, mode="drop"),
                      fork_pos=tree.fork_pos.at[dst].set(pos, mode="drop"),
                      depth=tree.depth.at[dst].add(1, mode="drop"))
  last_fork = loop.last_fork.at[dst].set(pos, mode="drop").at[src].set(pos, mode="drop")
  # Logits need no copy: the step that forks replaces every row's logits with its own forward.
  return loop.replace(tree=tree, cache=jax.tree.map(copy_rows, loop.cache), alive=copy_rows(loop.alive),
                      last_fork=last_fork)


def _policy_logprobs(logits: jax.Array, raw_logp: jax.Array, temperature: float, scfg: SearchConfig) -> jax.Array:
  """The sampling policy's log-probs at `temperature` with the config's top-k / top-p. [S, V] -> [S, V]."""
  if temperature == 1.0 and scfg.top_k == 0 and scfg.top_p == 1.0:
    return raw_logp
  return sampling.policy_logprobs(logits, temperature, scfg.top_k, scfg.top_p)


def step(params: llama.Params, cfg: llama.LlamaConfig, scfg: SearchConfig, num_prefixes: int,
          rules: sharding.Rules | None, rng: jax.Array, loop: SearchState) -> SearchState:
  """One decode step for all slots: sample, maybe fork, record, advance the cache (the loop body)."""
  s, cache_len = loop.tree.tokens.shape
  rng_sample, rng_root = jax.random.split(jax.random.fold_in(rng, loop.step))
  raw_logp = jax.nn.log_softmax(loop.logits, axis=-1)  # [S, V]
  first = _policy_logprobs(loop.logits, raw_logp, scfg.temperature, scfg)
  if scfg.rest_temperature == scfg.temperature:
    policy_logp = first  # [S, V]
  else:  # one of the two per step: step 0 holds every branch's first token
    policy_logp = jax.lax.cond(loop.step == 0, lambda: first,
                               lambda: _policy_logprobs(loop.logits, raw_logp, scfg.rest_temperature, scfg))
  tok = sampling.sample(policy_logp, rng_sample)  # [S]
  ent = sampling.entropy_of_logprobs(raw_logp)  # [S]
  alive = loop.alive
  rows = jnp.arange(s)
  dist_row = rows  # the row of policy_logp / raw_logp / ent each slot's token is drawn from

  if scfg.policy == "root_k":
    def distinct(_):
      n = scfg.slots_per_prefix
      first = policy_logp.reshape(num_prefixes, n, -1)[:, 0]  # all slots of a prefix are copies at step 0
      picks = sampling.distinct_samples(first, rng_root, scfg.k)  # [P, K]
      return jnp.pad(picks, ((0, 0), (0, n - scfg.k))).reshape(-1)
    picks = jax.lax.cond(loop.step == 0, distinct, lambda _: tok, None)
    # Fewer than K tokens in the policy's support (step 0 only: a sampled token is always in it).
    in_support = jnp.isfinite(policy_logp[rows, picks])
    if scfg.root_fill:  # the extra branches keep their own sample and become roots
      tok = jnp.where(in_support, picks, tok)
      lone = alive & ~in_support
      t = loop.tree
      loop = loop.replace(tree=t.replace(parent=jnp.where(lone, -1, t.parent),
                                         fork_pos=jnp.where(lone, -1, t.fork_pos),
                                         depth=jnp.where(lone, 0, t.depth)))
    else:  # the extra branches are dropped
      tok = picks
      alive = alive & in_support
      loop = loop.replace(tree=loop.tree.replace(valid=loop.tree.valid & (in_support | ~loop.alive)))

  if scfg.policy == "entropy":
    dst, src, child_tok = _plan_forks(loop.replace(alive=alive), tok, policy_logp, ent, num_prefixes, scfg)
    forked = jax.lax.cond(jnp.any(dst < s), lambda lp: _apply_forks(lp, dst, src), lambda lp: lp,
                          loop.replace(alive=alive))
    tok = tok.at[dst].set(child_tok, mode="drop")
    dist_row = dist_row.at[dst].set(src, mode="drop")  # a child draws from its parent's distribution
    loop, alive = forked, forked.alive

  tree = loop.tree
  pos = tree.lengths  # [S]: where this step's token goes
  write = jnp.where(alive, pos, cache_len)  # out of range -> dropped

  def put(buf, val):
    return buf.at[rows, write].set(val, mode="drop")

  generated = pos + 1 - tree.prefix_lens
  stop = jnp.isin(tok, jnp.asarray(scfg.stop_ids, jnp.int32))
  finish = jnp.where(stop, STOP_TOKEN,
                     jnp.where(generated >= scfg.max_new_tokens, MAX_NEW_TOKENS,
                               jnp.where(pos + 1 >= cache_len, CACHE_FULL, RUNNING)))
  tree = tree.replace(
      tokens=put(tree.tokens, tok), logprobs=put(tree.logprobs, policy_logp[dist_row, tok]),
      raw_logprobs=put(tree.raw_logprobs, raw_logp[dist_row, tok]), entropy=put(tree.entropy, ent[dist_row]),
      lengths=pos + alive.astype(jnp.int32), finish=jnp.where(alive, finish, tree.finish))
  logits, cache = llama.forward(params, cfg, tok[:, None], jnp.where(alive, pos, -1)[:, None], loop.cache,
                                rules=rules, prefix=loop.prefix)
  logits = sharding.constrain(logits[:, 0], ("batch", "vocab"), rules)
  return loop.replace(tree=tree, cache=cache, logits=logits, alive=alive & (finish == RUNNING),
                      step=loop.step + 1)


def init_state(params: llama.Params, cfg: llama.LlamaConfig, scfg: SearchConfig, prefixes: jax.Array,
               prefix_lens: jax.Array, cache_len: int, rules: sharding.Rules | None) -> SearchState:
  """Prefills each prefix once (its keys/values shared by its N slots) and lays out the slots (the loop's initial
  state): slots of a prefix start as copies with an empty generated-token cache.

  prefixes: [P, Lp] int32 right-padded; prefix_lens: [P] int32; cache_len: tokens per branch (static).
  """
  p, lp = prefixes.shape
  n = scfg.slots_per_prefix
  s = p * n
  logits, prefix_cache = decode.prefill(params, cfg, prefixes, prefix_lens, llama.init_cache(cfg, p, lp), rules)
  lp_mask = jnp.arange(lp)[None, :] < prefix_lens[:, None]
  tokens = jnp.pad(jnp.where(lp_mask, prefixes, 0), ((0, 0), (0, cache_len - lp)))  # [P, L]

  def per_slot(x):
    return sharding.constrain(jnp.repeat(x, n, axis=0), ("batch",) + (None,) * (x.ndim - 1), rules)

  slot_in_prefix = jnp.arange(s) % n
  if scfg.policy == "none":
    valid = jnp.ones((s,), bool)
  elif scfg.policy == "root_k":
    valid = slot_in_prefix < scfg.k
  else:
    valid = slot_in_prefix == 0
  root = jnp.arange(s) - slot_in_prefix
  is_child = (scfg.policy == "root_k") & (slot_in_prefix > 0)
  lengths = per_slot(prefix_lens)
  zeros_f = jnp.zeros((s, cache_len), jnp.float32)
  tree = Tree(tokens=per_slot(tokens), logprobs=zeros_f, raw_logprobs=zeros_f, entropy=zeros_f,
              lengths=lengths, prefix_lens=lengths, prefix_index=jnp.arange(s) // n,
              parent=jnp.where(is_child & valid, root, -1), fork_pos=jnp.where(is_child & valid, lengths, -1),
              depth=(is_child & valid).astype(jnp.int32), valid=valid, finish=jnp.zeros((s,), jnp.int32))
  cache = _constrain_cache(llama.init_cache(cfg, s, scfg.phases(generated_capacity(scfg, cache_len))[0][1]), rules)
  return SearchState(tree=tree, prefix=llama.PrefixKV(cache=prefix_cache, lens=prefix_lens), cache=cache,
                     logits=per_slot(logits), alive=valid, last_fork=lengths, step=jnp.zeros((), jnp.int32))


def _constrain_cache(cache: llama.KVCache, rules: sharding.Rules | None) -> llama.KVCache:
  return llama.KVCache(k=tuple(sharding.constrain(k, llama.CACHE_K_AXES, rules) for k in cache.k),
                       v=tuple(sharding.constrain(v, llama.CACHE_V_AXES, rules) for v in cache.v))


def generated_capacity(scfg: SearchConfig, cache_len: int) -> int:
  """KV slots per branch for generated tokens: a branch stops at max_new_tokens, or at cache_len tokens in all."""
  return min(scfg.max_new_tokens, cache_len - 1)


@functools.partial(jax.jit, static_argnames=("cfg", "scfg", "cache_len", "rules"))
def _search(params, cfg, prefixes, prefix_lens, rng, scfg, cache_len, rules) -> Tree:
  loop = init_state(params, cfg, scfg, prefixes, prefix_lens, cache_len, rules)
  body = functools.partial(step, params, cfg, scfg, prefixes.shape[0], rules, rng)
  # One while loop per cache length: the cache grows with the branches, so early steps read a short one.
  for end, length in scfg.phases(generated_capacity(scfg, cache_len)):
    loop = loop.replace(cache=_constrain_cache(llama.grow_cache(loop.cache, length), rules))
    loop = jax.lax.while_loop(lambda lp, end=end: (lp.step < end) & jnp.any(lp.alive), body, loop)
  return loop.tree


def tree_search(params: llama.Params, cfg: llama.LlamaConfig, prefixes: jax.Array | np.ndarray,
                prefix_lens: jax.Array | np.ndarray, rng: jax.Array, search_cfg: SearchConfig, *,
                rules: sharding.Rules | None = None) -> Tree:
  """Grows a tree of continuations from each prefix (one compiled program per static config and shape).

  Args:
    params, cfg: the model.
    prefixes: [P, Lp] int32 token ids, right-padded.
    prefix_lens: [P] int32, each in [1, Lp].
    rng: a PRNG key; the same key gives the same tree.
    search_cfg: static search settings.
    rules: logical-axis rules for sharding constraints (use under `jax.set_mesh(mesh)`; slots shard as `batch`).
  Returns:
    A `Tree` with S = P * slots_per_prefix slots and L = cache length.
  """
  search_cfg.validate()
  if prefixes.ndim != 2 or prefix_lens.shape != prefixes.shape[:1]:
    raise ValueError(f"prefixes must be [P, Lp] and prefix_lens [P]; got {prefixes.shape}, {prefix_lens.shape}")
  lens = np.asarray(prefix_lens)
  width = prefixes.shape[1]
  if lens.min(initial=1) < 1:
    raise ValueError(f"zero-length prefix at index {int(np.argmin(lens))}: every prefix needs >= 1 token "
                     "(e.g. BOS)")
  if lens.max(initial=0) > width:
    raise ValueError(f"prefix_lens {int(lens.max())} exceeds the prefixes' width {width}")
  cache_len = search_cfg.cache_len or width + search_cfg.max_new_tokens
  if cache_len < width + 1:
    raise ValueError(f"prefixes of width {width} do not fit a cache of {cache_len} slots with room to generate")
  if cache_len > cfg.max_seq_len:
    raise ValueError(f"cache length {cache_len} exceeds the model's max_seq_len {cfg.max_seq_len}")
  return _search(params, cfg, jnp.asarray(prefixes, jnp.int32), jnp.asarray(lens, jnp.int32), rng, search_cfg,
                 cache_len, rules)
