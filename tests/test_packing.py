"""Packed node rows against the dense pair path: loss, metrics, gradients and reference log-probs on random
trees (variable prefix and continuation lengths, several nodes per row, nodes split over rows), in flat rows and
in tree rows (`packing.TreeLayout`, whose block attention `llama.tree_attention` the "cpu" kernel runs)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsp_jax import batches, objective, packing, pairs
from tsp_jax.model import llama

CFG = llama.LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=128)


@pytest.fixture(scope="module")
def params():
  return llama.init_params(CFG, jax.random.key(0))


def random_tree_pairs(seed: int, nodes: int = 6) -> pairs.PairSet:
  """Nodes with a random prefix, a golden continuation and 2-4 branches (some sharing their first tokens with the
  golden one); pairs golden vs every branch and branch vs branch, as the TSP pair sources build them."""
  rng = np.random.default_rng(seed)
  plist, prefix_lens = [], []
  for _ in range(nodes):
    prefix = np.concatenate([[1], rng.integers(3, 64, int(rng.integers(2, 14)))]).astype(np.int32)
    golden = rng.integers(3, 64, int(rng.integers(1, 9))).astype(np.int32)
    branches = []
    for _ in range(int(rng.integers(2, 5))):
      b = rng.integers(3, 64, int(rng.integers(1, 9))).astype(np.int32)
      if rng.random() < 0.4:  # parts from the golden continuation a few tokens after the node
        b = np.concatenate([golden[:int(rng.integers(1, len(golden) + 1))], b])
      branches.append(b)
    seq = lambda cont: np.concatenate([prefix, cont])
    found = [(seq(golden), seq(b), pairs.KIND_GOLDEN_VS_VULNERABLE) for b in branches]
    found += [(seq(branches[0]), seq(b), pairs.KIND_BRANCH_VS_REJECTED) for b in branches[1:]]
    plist += found
    prefix_lens += [len(prefix)] * len(found)
  ps = pairs.pair_arrays(plist, prefix_lens, 32, pad_id=0)
  ps.ref_logps = rng.normal(-20.0, 3.0, (len(ps), 2)).astype(np.float32)
  return ps


LOSS_CONFIGS = [objective.LossConfig(name="tsp"),
                objective.LossConfig(name="tsp", first_token_weight=3.0, first_tokens=2, sft_weight=0.5),
                objective.LossConfig(name="dpo"), objective.LossConfig(name="dpo", sft_weight=1.0)]


@pytest.mark.parametrize("loss_cfg", LOSS_CONFIGS, ids=["tsp", "tsp_first_token_sft", "dpo", "dpo_sft"])
@pytest.mark.parametrize("seed", [0, 1])
def test_packed_loss_metrics_and_gradients_equal_dense(params, loss_cfg, seed):
  ps = random_tree_pairs(seed)
  idx = np.random.default_rng(seed).permutation(len(ps))
  dense, dense_ref = batches.to_batch(ps, idx, len(ps), "tsp")
  packed, packed_ref = batches.to_packed_batch(ps, idx, 48, slots=len(ps))
  loss = objective.loss_fn(loss_cfg.name)
  grad = jax.value_and_grad(lambda p, b, r: loss(p, CFG, b, r, loss_cfg), has_aux=True)
  (d_loss, d_metrics), d_grad = grad(params, dense, dense_ref)
  (p_loss, p_metrics), p_grad = grad(params, packed, packed_ref)
  np.testing.assert_allclose(float(p_loss), float(d_loss), atol=1e-5, rtol=1e-5)
  assert set(p_metrics) == set(d_metrics)
  for k in d_metrics:
    np.testing.assert_allclose(float(p_metrics[k]), float(d_metrics[k]), atol=1e-5, rtol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5), p_grad, d_grad)


# Tree layouts of `random_tree_pairs` (prefixes 3-14 tokens, continuations 1-16): 2 chunks split every node over
# rows; a prefix region of 32 holds several nodes' prefixes per row, and chunks of 20 several continuations.
TREES = [packing.TreeLayout(prefix_len=16, chunk_len=16, chunks=2),
         packing.TreeLayout(prefix_len=32, chunk_len=20, chunks=4)]


@pytest.mark.parametrize("kernel", ["cpu", "xla"])
@pytest.mark.parametrize("tree", TREES, ids=["split_nodes", "shared_rows"])
def test_tree_rows_loss_metrics_and_gradients_equal_dense(params, kernel, tree):
  cfg = dataclasses.replace(CFG, kernel=kernel)
  loss_cfg = LOSS_CONFIGS[1]  # tsp with first-token weights and the SFT term
  ps = random_tree_pairs(7)
  idx = np.random.default_rng(7).permutation(len(ps))
  dense, dense_ref = batches.to_batch(ps, idx, len(ps), "tsp")
  packed, packed_ref = batches.to_packed_batch(ps, idx, tree, slots=len(ps))
  assert packed.tokens.shape[1] == tree.length and packed.chunk_len == tree.chunk_len
  loss = objective.loss_fn(loss_cfg.name)
  grad = jax.value_and_grad(lambda p, b, r: loss(p, cfg, b, r, loss_cfg), has_aux=True)
  (d_loss, d_metrics), d_grad = grad(params, dense, dense_ref)
  (p_loss, p_metrics), p_grad = grad(params, packed, packed_ref)
  np.testing.assert_allclose(float(p_loss), float(d_loss), atol=1e-5, rtol=1e-5)
  for k in d_metrics:
    np.testing.assert_allclose(float(p_metrics[k]), float(d_metrics[k]), atol=1e-5, rtol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5), p_grad, d_grad)


@pytest.mark.parametrize("tree", TREES, ids=["split_nodes", "shared_rows"])
def test_tree_attention_equals_the_masked_whole_row(tree):
  """The "cpu" kernel's block attention against the "xla" kernel's masked attention over whole tree rows (random
  queries / keys / values, grouped-query heads), at every column that is not padding."""
  ps = random_tree_pairs(8)
  pk = packing.pack_pairs(ps, np.arange(len(ps)), tree)
  b, t = pk.tokens.shape
  kq, kk, kv = jax.random.split(jax.random.key(1), 3)
  q = jax.random.normal(kq, (b, t, 4, 8))  # [B, T, H, Dh]
  k = jax.random.normal(kk, (b, 2, 8, t))  # [B, KV, Dh, T]
  v = jax.random.normal(kv, (b, 2, t, 8))  # [B, KV, T, Dh]
  pos = jnp.asarray(pk.positions)
  seg = llama.Segments(ids=jnp.asarray(pk.ids), root=jnp.asarray(pk.root), prefix_len=pk.prefix_len,
                       chunk_len=pk.chunk_len)
  blocks = llama.attend(q, k, v, pos, pos, kernel="cpu", segments=seg)
  whole = llama.attend(q, k, v, pos, pos, kernel="xla", segments=seg)
  real = pk.ids > 0
  np.testing.assert_allclose(np.asarray(blocks)[real], np.asarray(whole)[real], atol=1e-5)


def test_tree_rows_keep_prefixes_and_continuations_in_their_blocks():
  ps = random_tree_pairs(9, nodes=8)
  for tree in TREES:
    pk = packing.pack_pairs(ps, np.arange(len(ps)), tree)
    assert sorted(pk.pair_index[pk.pair_index >= 0]) == list(range(len(ps)))  # every pair once
    is_prefix = (pk.ids > 0) & (pk.ids == pk.root)
    assert not is_prefix[:, tree.prefix_len:].any()  # prefixes in the prefix region
    assert not (pk.ids[:, :tree.prefix_len] != pk.root[:, :tree.prefix_len]).any()  # nothing else there
    chunks = pk.ids[:, tree.prefix_len:].reshape(len(pk.ids), tree.chunks, tree.chunk_len)
    for row in chunks:
      for s in set(row[row > 0].tolist()):
        assert len({c for c, chunk in enumerate(row) if s in chunk}) == 1  # a continuation within one chunk
  pk = packing.pack_pairs(ps, np.arange(len(ps)), TREES[1])
  assert max(len({int(s) for s, r in zip(ids, root) if s and s == r}) for ids, root in zip(pk.ids, pk.root)) >= 2
  node_rows = {}
  for r, slots in enumerate(packing.pack_pairs(ps, np.arange(len(ps)), TREES[0]).pair_index):
    for i in slots[slots >= 0]:
      node_rows.setdefault(ps.chosen[i, :ps.prefix_lens[i]].tobytes(), set()).add(r)
  assert max(len(v) for v in node_rows.values()) >= 2  # a node split over rows


def test_tree_layout_holds_the_longest_prefix_and_continuation():
  ps = random_tree_pairs(10)
  tree = packing.tree_layout(ps, 3, bucket=4)
  prefixes = [packing.shared_prefix(ps, i) for i in range(len(ps))]
  conts = [int(np.max(np.flatnonzero(m), initial=p - 1)) + 1 - p for i, p in enumerate(prefixes)
           for m in (ps.chosen_mask[i], ps.rejected_mask[i])]
  assert tree.prefix_len == -(-max(prefixes) // 4) * 4 and tree.chunk_len == -(-max(conts) // 4) * 4
  assert 2 <= tree.chunks <= 3 and tree.length == tree.prefix_len + tree.chunks * tree.chunk_len
  packing.pack_pairs(ps, np.arange(len(ps)), tree)  # every pair fits
  with pytest.raises(ValueError, match="row length"):
    packing.pack_pairs(ps, np.arange(len(ps)), dataclasses.replace(tree, prefix_len=tree.prefix_len - 4))
  with pytest.raises(ValueError, match="2 chunks"):
    packing.TreeLayout(prefix_len=8, chunk_len=8, chunks=1)


def test_tree_layout_is_the_cheapest_of_its_candidates():
  """Brute force over prefix regions of 1 or 2 prompts and 2..5 chunks: rows x (columns + score_cost x scores).
  Two continuations per prefix (self-play prompts): two prompts share a row where scores are cheap, one prompt
  and 2 chunks where they are dear; a golden continuation and 4 branches per prefix (TSP nodes), each filling a
  chunk: one prefix, 5 chunks."""
  prompts = [np.arange(1, 30 + 3 * i, dtype=np.int32) for i in range(6)]
  seq = lambda p, tok, n: np.concatenate([p, np.full(n, tok, np.int32)])
  two = [(p, seq(p, 5, 12), seq(p, 6, 9)) for p in prompts]
  five = [(p, seq(p, 5, 12), seq(p, b, 12)) for p in prompts for b in range(6, 10)]
  one, both = 48, 88  # prefix regions for the longest prompt (44 tokens) or two of them, rounded up to 8
  for found, score_cost, want in ((two, 0.0, (both, 4)), (two, 0.01, (one, 2)), (five, 0.0, (one, 5)),
                                  (five, 0.01, (one, 5))):
    plist = [(a, b, pairs.KIND_GOLDEN_VS_VULNERABLE) for _, a, b in found]
    ps = pairs.pair_arrays(plist, [len(p) for p, _, _ in found], 64, pad_id=0)
    tree = packing.tree_layout(ps, 5, score_cost=score_cost)

    def cost(t):
      rows = len(packing.pack_pairs(ps, np.arange(len(ps)), t).tokens)
      scores = t.prefix_len ** 2 + t.chunks * t.chunk_len * (t.prefix_len + t.chunk_len)
      return rows * (t.length + score_cost * scores)

    candidates = [dataclasses.replace(tree, prefix_len=lp, chunks=n) for lp in (one, both) for n in range(2, 6)]
    assert (tree.prefix_len, tree.chunks) == want
    assert cost(tree) == min(cost(t) for t in candidates)
  with pytest.raises(ValueError, match="2 chunks"):
    packing.tree_layout(ps, 1)


def test_a_tree_layout_must_tile_the_rows(params):
  tokens = jnp.ones((1, 10), jnp.int32)
  with pytest.raises(ValueError, match="tile"):
    llama.forward(params, CFG, tokens, jnp.zeros((1, 10), jnp.int32),
                  segments=llama.Segments(ids=tokens, root=tokens, prefix_len=4, chunk_len=4))


def test_packed_reference_logps_equal_dense(params):
  ps = random_tree_pairs(2)
  idx = np.arange(len(ps))
  loss_cfg = objective.LossConfig(name="tsp", first_token_weight=2.0)
  dense, _ = batches.to_batch(ps, idx, len(ps), "tsp")
  packed, _ = batches.to_packed_batch(ps, idx, 40)
  pk = packing.pack_pairs(ps, idx, 40)
  d_ref = np.asarray(objective.reference_logps(params, CFG, dense, loss_cfg))  # [N, 2]
  p_ref = np.asarray(objective.reference_logps(params, CFG, packed, loss_cfg))  # [R, M, 2]
  filled = pk.pair_index >= 0
  np.testing.assert_allclose(p_ref[filled], d_ref[pk.pair_index[filled]], atol=1e-5)
  assert np.all(p_ref[~filled] == 0)


def test_rows_share_prefixes_hold_several_nodes_and_split_big_ones():
  ps = random_tree_pairs(3, nodes=8)
  pk = packing.pack_pairs(ps, np.arange(len(ps)), 40)
  assert sorted(pk.pair_index[pk.pair_index >= 0]) == list(range(len(ps)))  # every pair once
  prefixes_per_row = [len({int(s) for s, r in zip(ids, root) if s and s == r}) for ids, root in zip(pk.ids, pk.root)]
  assert max(prefixes_per_row) >= 2  # several nodes in one row
  node_rows = {}
  for r, slots in enumerate(pk.pair_index):
    for i in slots[slots >= 0]:
      node_rows.setdefault(ps.chosen[i, :ps.prefix_lens[i]].tobytes(), set()).add(r)
  assert max(len(v) for v in node_rows.values()) >= 2  # a node split over rows (its prefix repeated)
  dense_tokens = int(np.sum(ps.chosen > 0) + np.sum(ps.rejected > 0))  # both sides of every pair (pad id 0)
  assert pk.tokens_forwarded() < dense_tokens / 2


def test_too_small_rows_or_slots_are_errors():
  ps = random_tree_pairs(4, nodes=2)
  with pytest.raises(ValueError, match="row length"):
    packing.pack_pairs(ps, np.arange(len(ps)), 8)
  with pytest.raises(ValueError, match="pair slots"):
    packing.pack_pairs(ps, np.arange(len(ps)), 64, slots=1)
  with pytest.raises(ValueError, match="prefix_lens"):
    packing.pack_pairs(dataclasses.replace(ps, prefix_lens=None), np.arange(len(ps)), 64)


@pytest.mark.parametrize("layout", [48, TREES[0]], ids=["flat", "tree"])
def test_round_passes_packed_equal_dense(params, layout):
  """The trainer's once-per-round passes: reference log-probs of every pair and the dev-pair metrics."""
  cfg = dataclasses.replace(CFG, kernel="cpu")
  ps = random_tree_pairs(5, nodes=5)
  loss_cfg = objective.LossConfig(name="tsp")
  dense_ref = batches.reference_logps(params, cfg, ps, loss_cfg, 4)
  np.testing.assert_allclose(batches.reference_logps(params, cfg, ps, loss_cfg, 4, packed_length=layout), dense_ref,
                             atol=1e-5)
  ps.ref_logps = dense_ref + np.random.default_rng(0).normal(0.0, 2.0, dense_ref.shape).astype(np.float32)
  dense = batches.pair_metrics(params, cfg, ps, loss_cfg, 4)
  packed = batches.pair_metrics(params, cfg, ps, loss_cfg, 4, packed_length=layout)
  assert set(packed) == set(dense)
  for k in dense:
    np.testing.assert_allclose(packed[k], dense[k], atol=1e-5, err_msg=k)


def test_grouped_order_keeps_groups_together_and_visits_every_pair_per_epoch():
  ps = random_tree_pairs(6, nodes=5)
  order = packing.grouped_order(ps, seed=3, epochs=2)
  n = len(ps)
  assert sorted(order[:n]) == sorted(order[n:]) == list(range(n))
  keys = [ps.chosen[i, :packing.shared_prefix(ps, int(i))].tobytes() for i in order[:n]]
  assert sum(a != b for a, b in zip(keys, keys[1:])) == len(set(keys)) - 1  # each group contiguous
  assert not np.array_equal(order[:n], order[n:]) or len(set(keys)) == 1
