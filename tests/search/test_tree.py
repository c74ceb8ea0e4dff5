"""Tree search: exactness against uncached forwards, tree invariants, sampling distribution, determinism."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding

from tsp_jax.model import llama, sharding
from tsp_jax.search import host, sampling, tree

CFG = llama.LlamaConfig(vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=128)
CPU_CFG = dataclasses.replace(CFG, kernel="cpu")  # CFG has the default "xla" kernel
PREFIXES = np.array([[1, 5, 6, 7, 8], [1, 9, 0, 0, 0], [1, 3, 4, 0, 0]], np.int32)
PREFIX_LENS = np.array([5, 2, 3], np.int32)

# window_step 4: the generated-token cache grows twice during each search, forks included.
POLICY_CONFIGS = {
    "none": tree.SearchConfig(slots_per_prefix=3, max_new_tokens=10, policy="none", top_p=0.9, window_step=4),
    "root_k": tree.SearchConfig(slots_per_prefix=4, max_new_tokens=10, policy="root_k", k=3, temperature=0.8,
                                window_step=4),
    # top_k 2 < k: two distinct first tokens per prefix, the other two branches sampled on their own.
    "root_fill": tree.SearchConfig(slots_per_prefix=4, max_new_tokens=10, policy="root_k", k=4, top_k=2,
                                   root_fill=True, window_step=4),
    "entropy": tree.SearchConfig(slots_per_prefix=6, max_new_tokens=12, policy="entropy", entropy_threshold=1.0,
                                 fork_width=2, max_depth=2, min_fork_distance=2, top_k=20, window_step=4),
}


@pytest.fixture(scope="module")
def params():
  p = llama.init_params(CFG, jax.random.key(0))
  # Sharper next-token distributions than the 0.02 init gives, so EOS and filtering actually matter.
  p["lm_head"] = p["lm_head"] * 40.0
  return p


@pytest.fixture(scope="module")
def trees(params):
  return {name: host.to_host(tree.tree_search(params, CFG, PREFIXES, PREFIX_LENS, jax.random.key(7), scfg))
          for name, scfg in POLICY_CONFIGS.items()}


@pytest.fixture(scope="module")
def cpu_kernel_tree(params):
  """The entropy tree (forks, shared prefixes, growing caches) decoded with the "cpu" kernel."""
  return host.to_host(tree.tree_search(params, CPU_CFG, PREFIXES, PREFIX_LENS, jax.random.key(7),
                                       POLICY_CONFIGS["entropy"]))


def uncached_logits(params, tokens: np.ndarray) -> np.ndarray:
  logits, _ = llama.forward(params, CFG, jnp.asarray(tokens[None]), jnp.arange(len(tokens))[None])
  return np.asarray(logits[0])


# Every policy with the default ("xla") kernel; the entropy tree, which exercises everything, with the "cpu" one too.
@pytest.mark.parametrize("policy, kernel", [*((p, "xla") for p in POLICY_CONFIGS), ("entropy", "cpu")])
def test_recorded_logprobs_equal_uncached_forward(request, params, trees, policy, kernel):
  tr = request.getfixturevalue("cpu_kernel_tree") if kernel == "cpu" else trees[policy]
  scfg = POLICY_CONFIGS[policy]
  slots = host.branch_slots(tr)
  assert len(slots) >= len(PREFIXES)
  for s in slots:
    toks = host.full_tokens(tr, s)
    pl, n = int(tr.prefix_lens[s]), int(tr.lengths[s])
    assert n > pl
    np.testing.assert_array_equal(toks[:pl], PREFIXES[tr.prefix_index[s], :pl])
    logits = uncached_logits(params, toks)[pl - 1:n - 1]  # predicts positions pl..n-1
    raw = jax.nn.log_softmax(logits, axis=-1)[np.arange(n - pl), toks[pl:]]
    np.testing.assert_allclose(tr.raw_logprobs[s, pl:n], raw, atol=1e-4)
    pol = sampling.policy_logprobs(jnp.asarray(logits), scfg.temperature, scfg.top_k, scfg.top_p)
    np.testing.assert_allclose(tr.logprobs[s, pl:n], np.asarray(pol)[np.arange(n - pl), toks[pl:]], atol=1e-4)
    ent = sampling.entropy(jnp.asarray(logits))
    np.testing.assert_allclose(tr.entropy[s, pl:n], ent, atol=1e-4)
    assert np.all(tr.raw_logprobs[s, n:] == 0) and np.all(tr.raw_logprobs[s, :pl] == 0)
    assert np.all(tr.tokens[s, n:] == 0)


def test_kernels_give_the_same_tree(trees, cpu_kernel_tree):
  """The "cpu" kernel's tree equals the "xla" one: same tokens and structure, records up to float rounding."""
  xla_tree = trees["entropy"]
  assert xla_tree.depth.max() >= 1  # the tree forked
  for name in ("tokens", "lengths", "parent", "fork_pos", "prefix_index", "depth", "valid", "finish"):
    np.testing.assert_array_equal(getattr(cpu_kernel_tree, name), getattr(xla_tree, name), err_msg=name)
  for name in ("logprobs", "raw_logprobs", "entropy"):
    np.testing.assert_allclose(getattr(cpu_kernel_tree, name), getattr(xla_tree, name), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("policy", ["root_k", "entropy"])
def test_children_share_prefix_and_differ_at_fork(trees, policy):
  tr = trees[policy]
  kids = host.children(tr)
  n_children = sum(len(c) for c in kids.values())
  assert n_children >= 2
  for parent, cs in kids.items():
    for c in cs:
      f = int(tr.fork_pos[c])
      assert tr.prefix_index[c] == tr.prefix_index[parent]
      assert f >= tr.prefix_lens[c]
      np.testing.assert_array_equal(tr.tokens[c, :f], tr.tokens[parent, :f])
      assert tr.tokens[c, f] != tr.tokens[parent, f]
      assert tr.depth[c] == tr.depth[parent] + 1


def test_root_k_first_tokens_distinct(trees):
  tr, k = trees["root_k"], POLICY_CONFIGS["root_k"].k
  for p, pl in enumerate(PREFIX_LENS):
    slots = [s for s in host.branch_slots(tr) if tr.prefix_index[s] == p]
    assert len(slots) == k
    firsts = [int(tr.tokens[s, pl]) for s in slots]
    assert len(set(firsts)) == k


def test_root_fill_keeps_k_branches_past_the_support(trees):
  tr, k = trees["root_fill"], POLICY_CONFIGS["root_fill"].k
  for p, pl in enumerate(PREFIX_LENS):
    slots = [s for s in host.branch_slots(tr) if tr.prefix_index[s] == p]
    assert len(slots) == k  # without root_fill two would be dropped (support of 2 tokens)
    children = [s for s in slots if tr.parent[s] >= 0]
    lone = [s for s in slots if tr.parent[s] < 0 and s % k]  # filled slots: roots besides slot 0
    assert len(children) == 1 and len(lone) == 2
    root = int(tr.parent[children[0]])
    assert tr.tokens[children[0], pl] != tr.tokens[root, pl]
    assert len({int(tr.tokens[s, pl]) for s in slots}) == 2  # top_k 2: every first token is one of the two
    assert all(tr.depth[s] == 0 and tr.fork_pos[s] == -1 for s in lone)


def test_entropy_tree_respects_budget_depth_and_distance(trees):
  tr, scfg = trees["entropy"], POLICY_CONFIGS["entropy"]
  assert np.all(tr.valid.reshape(len(PREFIXES), -1).sum(axis=1) <= scfg.slots_per_prefix)
  assert tr.depth.max() <= scfg.max_depth and tr.depth.max() >= 1
  for s in host.branch_slots(tr):
    # Fork positions along a lineage are at least min_fork_distance apart.
    forks, node = [], s
    while tr.parent[node] >= 0:
      forks.append(int(tr.fork_pos[node]))
      node = int(tr.parent[node])
    assert all(a - b >= scfg.min_fork_distance for a, b in zip(forks, forks[1:])), forks


def test_finish_reasons(trees):
  for name, tr in trees.items():
    scfg = POLICY_CONFIGS[name]
    for s in host.branch_slots(tr):
      gen = host.generated_tokens(tr, s)
      if tr.finish[s] == tree.STOP_TOKEN:
        assert gen[-1] in scfg.stop_ids and not np.isin(gen[:-1], scfg.stop_ids).any()
      else:
        assert tr.finish[s] == tree.MAX_NEW_TOKENS and len(gen) == scfg.max_new_tokens
        assert not np.isin(gen, scfg.stop_ids).any()
  assert any((tr.finish == tree.STOP_TOKEN).any() for tr in trees.values())


def test_cache_capacity_stops_branches(params):
  scfg = tree.SearchConfig(slots_per_prefix=2, max_new_tokens=50, stop_ids=(), cache_len=9)
  tr = host.to_host(tree.tree_search(params, CFG, PREFIXES, PREFIX_LENS, jax.random.key(0), scfg))
  assert np.all(tr.lengths == 9) and np.all(tr.finish == tree.CACHE_FULL)


def test_greedy_is_argmax_of_uncached_forward(params):
  scfg = tree.SearchConfig(slots_per_prefix=2, max_new_tokens=8, temperature=0.0, stop_ids=())
  tr = host.to_host(tree.tree_search(params, CFG, PREFIXES, PREFIX_LENS, jax.random.key(0), scfg))
  for s in host.branch_slots(tr):
    toks, pl = host.full_tokens(tr, s), int(tr.prefix_lens[s])
    assert list(np.argmax(uncached_logits(params, toks)[pl - 1:-1], axis=-1)) == list(toks[pl:])
    assert np.all(tr.logprobs[s, pl:len(toks)] == 0)  # probability 1 under the greedy policy
  np.testing.assert_array_equal(tr.tokens[0], tr.tokens[1])


def test_rollout_temperature_zero_is_greedy_after_the_decision_token(params):
  # root_k draws distinct first tokens at temperature 1; every later token is the argmax (rollout_temperature 0).
  scfg = tree.SearchConfig(slots_per_prefix=4, max_new_tokens=8, policy="root_k", k=4, rollout_temperature=0.0,
                           stop_ids=())
  tr = host.to_host(tree.tree_search(params, CFG, PREFIXES, PREFIX_LENS, jax.random.key(3), scfg))
  slots = host.branch_slots(tr)
  assert len(slots) == 4 * len(PREFIXES)
  for s in slots:
    toks, pl = host.full_tokens(tr, s), int(tr.prefix_lens[s])
    assert list(np.argmax(uncached_logits(params, toks)[pl:-1], axis=-1)) == list(toks[pl + 1:])
    assert np.all(tr.logprobs[s, pl + 1:len(toks)] == 0) and tr.logprobs[s, pl] < 0
  for p in range(len(PREFIXES)):  # still K distinct decision tokens per prefix
    assert len({int(tr.tokens[s, tr.prefix_lens[s]]) for s in slots if tr.prefix_index[s] == p}) == 4
  # The same search without a rollout temperature samples after the first token too.
  sampled = host.to_host(tree.tree_search(params, CFG, PREFIXES, PREFIX_LENS, jax.random.key(3),
                                          dataclasses.replace(scfg, rollout_temperature=-1.0)))
  assert not np.array_equal(sampled.tokens, tr.tokens)


def test_same_rng_same_tree_and_different_rng_differs(params, trees):
  scfg = POLICY_CONFIGS["entropy"]
  again = host.to_host(tree.tree_search(params, CFG, PREFIXES, PREFIX_LENS, jax.random.key(7), scfg))
  jax.tree.map(np.testing.assert_array_equal, again, trees["entropy"])
  other = host.to_host(tree.tree_search(params, CFG, PREFIXES, PREFIX_LENS, jax.random.key(8), scfg))
  assert not np.array_equal(other.tokens, trees["entropy"].tokens)


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2)])
def test_same_tree_on_eight_device_mesh(params, trees, mesh_shape):
  mesh = sharding.make_mesh(mesh_shape)
  rules = sharding.SAMPLE_RULES
  sharded = jax.device_put(params, llama.param_shardings(CFG, mesh, rules))
  scfg = POLICY_CONFIGS["entropy"]
  # 3 prefixes x 6 slots = 18 slots: not divisible by 8, so pad the prefix batch to 4 prefixes (24 slots).
  prefixes = np.concatenate([PREFIXES, PREFIXES[:1]])
  lens = np.concatenate([PREFIX_LENS, PREFIX_LENS[:1]])
  with jax.set_mesh(mesh):
    tr = tree.tree_search(sharded, CFG, prefixes, lens, jax.random.key(7), scfg, rules=rules)
  assert isinstance(tr.tokens.sharding, NamedSharding)
  ref = host.to_host(tree.tree_search(params, CFG, prefixes, lens, jax.random.key(7), scfg))
  got = host.to_host(tr)
  # Same tokens and structure exactly; float records up to the reduction order of sharded matmuls.
  for name in ("tokens", "lengths", "parent", "fork_pos", "prefix_index", "depth", "valid", "finish"):
    np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
  for name in ("logprobs", "raw_logprobs", "entropy"):
    np.testing.assert_allclose(getattr(got, name), getattr(ref, name), atol=1e-5, err_msg=name)


def expected_policy(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
  """softmax(logits / T) restricted to the nucleus, computed independently in numpy (float64)."""
  z = logits.astype(np.float64) / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  order = np.argsort(-p)
  mass_before = np.cumsum(p[order]) - p[order]
  keep = np.zeros_like(p, bool)
  keep[order[mass_before < top_p]] = True
  q = np.where(keep, p, 0)
  return q / q.sum()


def test_sampler_matches_filtered_softmax():
  """20k draws per setting; every frequency within 5 binomial standard errors, none outside the nucleus."""
  logits = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0], np.float32)
  n = 20000
  for temperature, top_p in [(1.0, 1.0), (0.7, 0.8), (1.5, 0.5)]:
    pol = sampling.policy_logprobs(jnp.broadcast_to(logits, (n, 8)), temperature, 0, top_p)
    draws = np.asarray(sampling.sample(pol, jax.random.key(0)))
    freq = np.bincount(draws, minlength=8) / n
    want = expected_policy(logits, temperature, top_p)
    se = np.sqrt(np.maximum(want * (1 - want), 1e-12) / n)
    assert np.all(np.abs(freq - want) <= 5 * se + 1e-9), (temperature, top_p, freq, want)
    assert np.all(freq[want == 0] == 0)
    np.testing.assert_allclose(np.exp(np.asarray(pol[0])), want, atol=1e-6)


def test_engine_first_tokens_follow_policy(params):
  """The engine's own draws: 512 slots of one prefix, first generated token vs the filtered softmax."""
  small = llama.LlamaConfig(vocab_size=16, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32, max_seq_len=16)
  p = llama.init_params(small, jax.random.key(3))
  p["lm_head"] = p["lm_head"] * 10.0  # 7 of 16 tokens in the 0.85 nucleus
  prefix = np.array([[1, 4, 5]], np.int32)
  n = 1024
  scfg = tree.SearchConfig(slots_per_prefix=n, max_new_tokens=1, temperature=0.9, top_p=0.85, stop_ids=())
  tr = host.to_host(tree.tree_search(p, small, prefix, np.array([3]), jax.random.key(11), scfg))
  freq = np.bincount(tr.tokens[:, 3], minlength=16) / n
  logits, _ = llama.forward(p, small, jnp.asarray(prefix), jnp.arange(3)[None])
  want = expected_policy(np.asarray(logits[0, -1]), 0.9, 0.85)
  se = np.sqrt(np.maximum(want * (1 - want), 1e-12) / n)
  assert (want > 0).sum() >= 3
  assert np.all(np.abs(freq - want) <= 5 * se + 1e-9), (freq, want)
  assert np.all(freq[want == 0] == 0)


def test_growing_cache_does_not_change_the_tree(params, trees):
  """A cache allocated at full length from the start (window_step 0) gives the same tree."""
  scfg = dataclasses.replace(POLICY_CONFIGS["entropy"], window_step=0)
  full = host.to_host(tree.tree_search(params, CFG, PREFIXES, PREFIX_LENS, jax.random.key(7), scfg))
  grown = trees["entropy"]
  for name in ("tokens", "lengths", "parent", "fork_pos", "valid", "finish"):
    np.testing.assert_array_equal(getattr(full, name), getattr(grown, name), err_msg=name)
  np.testing.assert_allclose(full.raw_logprobs, grown.raw_logprobs, atol=1e-5, rtol=0)


def test_phases_cover_the_steps_with_growing_caches():
  scfg = tree.SearchConfig(max_new_tokens=10, window_step=4)
  assert scfg.phases(10) == [(4, 4), (8, 8), (10, 10)]
  assert scfg.phases(6) == [(4, 4), (8, 6), (10, 6)]  # capacity (cache_len - 1) below max_new_tokens
  assert dataclasses.replace(scfg, window_step=0).phases(10) == [(10, 10)]


def test_top_k_restricts_support():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 50)), jnp.float32)
  pol = np.asarray(sampling.policy_logprobs(logits, 1.0, 5, 1.0))
  assert np.all(np.isfinite(pol).sum(axis=1) == 5)
  top5 = np.argsort(-np.asarray(logits), axis=1)[:, :5]
  assert all(set(np.flatnonzero(np.isfinite(pol[r]))) == set(top5[r]) for r in range(4))


@pytest.mark.parametrize("kwargs, scfg, msg", [
    (dict(prefixes=np.ones((1, 130), np.int32), prefix_lens=np.array([130])), tree.SearchConfig(),
     "exceeds the model's max_seq_len"),
    (dict(prefixes=np.ones((1, 8), np.int32), prefix_lens=np.array([8])), tree.SearchConfig(cache_len=8),
     "do not fit a cache of 8"),
    (dict(prefixes=np.ones((2, 4), np.int32), prefix_lens=np.array([4, 0])), tree.SearchConfig(),
     "zero-length prefix at index 1"),
    (dict(prefixes=np.ones((1, 4), np.int32), prefix_lens=np.array([4])),
     tree.SearchConfig(policy="root_k", k=5, slots_per_prefix=4), "k <= slots_per_prefix"),
    (dict(prefixes=np.ones((1, 4), np.int32), prefix_lens=np.array([4])), tree.SearchConfig(policy="beam"),
     "unknown fork policy 'beam'"),
    (dict(prefixes=np.ones((1, 4), np.int32), prefix_lens=np.array([5])), tree.SearchConfig(),
     "exceeds the prefixes' width"),
    (dict(prefixes=np.ones((1, 4), np.int32), prefix_lens=np.array([4])), tree.SearchConfig(top_p=0.0),
     "bad sampling settings"),
    (dict(prefixes=np.ones((1, 4), np.int32), prefix_lens=np.array([4])), tree.SearchConfig(window_step=-1),
     "window_step must be >= 0"),
])
def test_bad_input(params, kwargs, scfg, msg):
  with pytest.raises(ValueError, match=msg):
    tree.tree_search(params, CFG, kwargs["prefixes"], kwargs["prefix_lens"], jax.random.key(0), scfg)


class _CharTokenizer:
  def decode(self, ids, *, stop_at_eos=True):
    return "".join(chr(ord("a") + int(i) % 26) for i in ids)


def test_host_helpers(trees):
  tr = trees["entropy"]
  texts = host.branch_texts(tr, _CharTokenizer())
  assert set(texts) == set(host.branch_slots(tr).tolist())
  for s, text in texts.items():
    assert len(text) == tr.lengths[s] - tr.prefix_lens[s]
  roots = [s for s in host.branch_slots(tr) if tr.parent[s] < 0]
  assert len(roots) == len(PREFIXES)
  # A tree decodes fewer tokens than its branches hold past the prefix (shared trunks are decoded once).
  gen_total = int(sum(tr.lengths[s] - tr.prefix_lens[s] for s in host.branch_slots(tr)))
  assert host.decoded_tokens(tr) < gen_total


@pytest.mark.parametrize("scale", [8.0, 0.3])  # sharp: nucleus inside the top-64 candidates; flat: full sort
def test_nucleus_matches_reference_on_both_paths(scale):
  logits = np.random.default_rng(1).normal(size=(6, 300)).astype(np.float32) * scale
  scaled = jnp.asarray(logits)
  top = np.sort(logits, axis=1)[:, ::-1][:, :64]
  covered = (np.exp(top - logits.max(1, keepdims=True)).sum(1) /
             np.exp(logits - logits.max(1, keepdims=True)).sum(1)) >= 0.9
  assert covered.all() if scale > 1 else not covered.all()
  pol = np.exp(np.asarray(sampling.policy_logprobs(scaled, 1.0, 0, 0.9)))
  for r in range(6):
    np.testing.assert_allclose(pol[r], expected_policy(logits[r], 1.0, 0.9), atol=1e-6)
