"""Records, risk nodes and pair construction, on real SVEN/SafeCoder pairs (tests/fixtures, from the train split)."""

import ast
import json
import os

import numpy as np
import pytest

from tsp_jax import data, pairs
from tsp_jax import tokenizer as tokenizer_lib

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "sven_train_sample.jsonl")


@pytest.fixture(scope="module")
def records():
  return data.read_records([FIXTURE])


@pytest.fixture(scope="module")
def tok(tmp_path_factory, records):
  texts = [t for r in records for t in (data.prompt_text(r.prompt), r.golden, r.vulnerable)]
  path = tmp_path_factory.mktemp("tok") / "tok.model"
  return tokenizer_lib.train_tokenizer(texts, tokenizer_lib.min_vocab_size(texts) + 200, path)


def raw_records():
  with open(FIXTURE, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_nodes_are_the_patched_lines(records):
  """Each node sits on a line the security fix added (or right after a deleted one), per the record's own
  line_changes; every added line is covered by some node's hunk."""
  for raw, rec in zip(raw_records(), records):
    nodes = data.risk_nodes(rec)
    assert nodes, rec.id
    added = {c["line"].strip() for c in raw["line_changes"]["added"]}
    deleted = {c["line"].strip() for c in raw["line_changes"]["deleted"]}
    golden_lines = rec.golden.split("\n")
    covered, covered_deleted = set(), set()
    for n in nodes:
      assert rec.golden.startswith(n.prefix[len(data.prompt_text(rec.prompt)):])
      assert n.golden_rest.split("\n")[0] == golden_lines[n.line]
      covered |= {l.strip() for l in n.fixed_lines}
      covered_deleted |= {l.strip() for l in n.vulnerable_lines}
    # (SVEN's line_changes come from a character diff: a line that only gained characters is "added" only.)
    assert {a for a in added if a} <= covered, rec.id
    assert {d for d in deleted if d} <= covered_deleted, rec.id
    # Undoing every hunk on the golden function gives back the vulnerable one: the nodes are the whole patch.
    rebuilt, cursor = [], 0
    for n in nodes:
      rebuilt += golden_lines[cursor:n.line] + list(n.vulnerable_lines)
      cursor = n.line + len(n.fixed_lines)
    rebuilt += golden_lines[cursor:]
    assert [l.rstrip() for l in rebuilt] == [l.rstrip() for l in rec.vulnerable.split("\n")], rec.id


def test_first_node_line_matches_line_changes(records):
  raw = raw_records()[0]
  node = data.risk_nodes(records[0])[0]
  first_added = min(c["line_no"] for c in raw["line_changes"]["added"])
  assert node.line == first_added - 1  # line_changes counts from 1


def test_node_tokens_start_at_the_node_line(records, tok):
  for rec in records:
    for n in data.risk_nodes(rec):
      np_ = pairs.tokenize_node(tok, n, max_prefix=4096, max_new_tokens=4096, at="line")
      assert np_ is not None
      assert np_.prefix_ids[0] == tok.bos_id and np_.chosen_ids[-1] == tok.eos_id
      assert tok.decode(np_.prefix_ids) == n.prefix == np_.prefix_text
      assert tok.decode(np_.chosen_ids) == n.golden_rest
      whole = tok.encode(n.prefix + n.golden_rest)
      assert list(np_.prefix_ids) + list(np_.chosen_ids[:-1]) == whole


def test_node_tokens_start_at_the_decision_token(records, tok):
  """at="token": the prefix is the longest run of ids the golden and the twin tokenizations share."""
  inside_line = 0
  for rec in records:
    for n in data.risk_nodes(rec):
      np_ = pairs.tokenize_node(tok, n, max_prefix=4096, max_new_tokens=4096)
      golden, twin = tok.encode(n.prefix + n.golden_rest), tok.encode(n.prefix + n.vulnerable_rest)
      prefix = list(np_.prefix_ids)
      assert golden[:len(prefix)] == twin[:len(prefix)] == prefix
      assert len(prefix) >= len(tok.encode(n.prefix))
      assert golden[len(prefix)] != twin[len(prefix)]  # the first sampled token is the decision
      assert prefix + list(np_.chosen_ids[:-1]) == golden
      assert np_.prefix_text.startswith(n.prefix) and tok.decode(prefix) == np_.prefix_text
      assert np_.prefix_text + tok.decode(np_.chosen_ids) == n.prefix + n.golden_rest
      inside_line += len(np_.prefix_text) > len(n.prefix)
  assert inside_line > 0  # some patches keep the start of their first line


def test_unknown_node_position_is_an_error(records, tok):
  with pytest.raises(ValueError, match="nodes_at='word'"):
    pairs.tokenize_node(tok, data.risk_nodes(records[0])[0], 4096, 4096, at="word")


def test_vulnerable_rest_rebuilds_the_twin(records):
  single = [(rec, nodes[0]) for rec in records if len(nodes := data.risk_nodes(rec)) == 1]
  assert single
  for rec, n in single:  # one hunk: golden lines before it + vulnerable_rest is the whole vulnerable function
    twin = n.prefix[len(data.model_prompt(rec)):] + n.vulnerable_rest
    assert [l.rstrip() for l in twin.split("\n")] == [l.rstrip() for l in rec.vulnerable.split("\n")], rec.id


def test_golden_functions_parse_after_normalisation(records):
  for rec in records:
    ast.parse(rec.golden)  # methods were dedented, CRLF normalised


class _MergingTokenizer:
  """Merges the last character of the prefix with the continuation: prefix ids are not a prefix of the whole."""
  bos_id, eos_id, pad_id = 1, 2, 2

  def encode(self, text, *, bos=True, eos=False):
    return ([1] if bos else []) + [hash(text[-3:]) % 100 + 3] * (len(text) // 3)


def test_boundary_mismatch_is_detected(records):
  node = data.risk_nodes(records[0])[0]
  assert pairs.tokenize_node(_MergingTokenizer(), node, 4096, 4096) is None


def test_long_prefix_keeps_bos_and_tail(records, tok):
  node = data.risk_nodes(records[0])[0]
  full = pairs.tokenize_node(tok, node, 4096, 4096)
  cut = pairs.tokenize_node(tok, node, 10, 5)
  assert len(cut.prefix_ids) == 10 and cut.prefix_ids[0] == tok.bos_id
  np.testing.assert_array_equal(cut.prefix_ids[1:], full.prefix_ids[-9:])
  np.testing.assert_array_equal(cut.chosen_ids, full.chosen_ids[:5])


def test_secure_branch_is_never_rejected(records, tok):
  prompt = pairs.tokenize_node(tok, data.risk_nodes(records[0])[0], 4096, 4096)
  golden = prompt.chosen_ids
  b_secure, b_vuln, b_broken, b_drop = (np.array([7, 8, 9]), np.array([10, 11]), np.array([12]),
                                        np.array([13, 14]))
  out = pairs.node_pairs(prompt, [b_secure, b_vuln, b_broken, b_drop],
                         [pairs.SECURE, pairs.VULNERABLE, pairs.BROKEN, pairs.DROP], max_pairs=10)
  prefix = list(prompt.prefix_ids)
  rejected = [list(r[len(prefix):]) for _, r, _ in out]
  chosen = [list(c[len(prefix):]) for c, _, _ in out]
  assert [7, 8, 9] not in rejected and [13, 14] not in rejected and [13, 14] not in chosen
  assert sorted(map(tuple, rejected)) == sorted([(10, 11), (12,), (10, 11), (12,)])
  assert chosen.count(list(golden)) == 2 and chosen.count([7, 8, 9]) == 2
  kinds = sorted(k for _, _, k in out)
  assert kinds == [pairs.KIND_GOLDEN_VS_VULNERABLE, pairs.KIND_GOLDEN_VS_BROKEN,
                   pairs.KIND_BRANCH_VS_REJECTED, pairs.KIND_BRANCH_VS_REJECTED]
  assert len(pairs.node_pairs(prompt, [b_vuln] * 5, [pairs.VULNERABLE] * 5, max_pairs=3)) == 3


def test_masks_start_at_first_divergence():
  prefix_len = 3
  chosen = np.array([1, 5, 6, 7, 8, 9, 2])
  rejected = np.array([1, 5, 6, 7, 4, 2])  # shares the node's first token 7, differs from position 4
  ps = pairs.pair_arrays([(chosen, rejected, 0)], [prefix_len], length=8, pad_id=0)
  np.testing.assert_array_equal(ps.chosen_mask[0], [0, 0, 0, 0, 1, 1, 1, 0])
  np.testing.assert_array_equal(ps.rejected_mask[0], [0, 0, 0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(ps.rejected[0], [1, 5, 6, 7, 4, 2, 0, 0])


def test_pairset_roundtrip(tmp_path):
  ps = pairs.pair_arrays([(np.array([1, 2, 3]), np.array([1, 4]), 1)], [1], 4, 0)
  ps.ref_logps = np.array([[-1.0, -2.0]], np.float32)
  ps.save(tmp_path / "p.npz")
  back = pairs.PairSet.load(tmp_path / "p.npz")
  np.testing.assert_array_equal(back.chosen, ps.chosen)
  np.testing.assert_array_equal(back.ref_logps, ps.ref_logps)
  assert back.counts()["golden_vs_broken"] == 1


def test_bad_input_is_counted_or_rejected(tmp_path):
  path = tmp_path / "bad.jsonl"
  good = raw_records()[0]
  no_golden = {**good, "id": "x/1", "reference_secure": None}
  no_cwe = {**good, "id": "x/2", "cwe": ""}
  path.write_text("\n".join([json.dumps(good), "{not json", "[1, 2]", json.dumps(no_golden), json.dumps(no_cwe)]))
  stats = data.LoadStats()
  records, nodes = data.load_nodes([path], stats)
  assert stats.malformed_lines == 2 and stats.missing_fields == 1 and stats.no_golden == 1
  assert stats.records == 2 and len(records) == 2 and nodes
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.read_records([tmp_path / "missing.jsonl"])
  with pytest.raises(ValueError, match="empty dataset"):
    data.shuffled([], seed=0)
  with pytest.raises(FileNotFoundError, match="no dev.jsonl"):
    data.split_files(tmp_path, "dev")


def test_shuffle_is_deterministic_and_sharded():
  items = list(range(20))
  a = data.take(data.shuffled(items, 3), None)
  assert a == data.take(data.shuffled(items, 3), None) and a != items and sorted(a) == items
  shards = [data.take(data.shuffled(items, 3, i, 2), None) for i in range(2)]
  assert sorted(shards[0] + shards[1]) == items and not set(shards[0]) & set(shards[1])


def test_round_windows_take_new_items_each_round_and_wrap():
  items = list("abcdefg")
  assert [data.round_window(items, r, 3) for r in range(4)] == [list("abc"), list("def"), list("gab"), list("cde")]
  assert data.round_window(items, 5, 3, fresh=False) == list("abc")
  assert data.round_window(items, 2, 0) == data.round_window(items, 2, 9) == items  # 0 or more than all: all


def test_subtree_pairs_at_decision_forks():
  # Slot 0 is the root; 1 forks from 0 at 10, 2 from 0 at 20, 3 from 1 at 15; slot 4 is unused.
  parent = np.array([-1, 0, 0, 1, -1])
  fork_pos = np.array([-1, 10, 20, 15, -1])
  slots = [0, 1, 2, 3]
  labels = {0: pairs.SECURE, 1: pairs.VULNERABLE, 2: pairs.SECURE, 3: pairs.VULNERABLE}
  # Only the fork at 10 separates an all-secure side ({0, 2}) from a side with vulnerable leaves ({1, 3}).
  assert sorted(pairs.subtree_pairs(parent, fork_pos, slots, labels)) == [(0, 1), (0, 3)]
  # If slot 3 is secure instead, the fork at 15 is a decision node too (3 clean vs 1 vulnerable).
  labels[3] = pairs.SECURE
  assert sorted(pairs.subtree_pairs(parent, fork_pos, slots, labels)) == [(0, 1), (3, 1)]
  # A broken leaf makes its side unclean but is not paired here (broken code is paired with the golden path).
  labels.update({1: pairs.BROKEN, 3: pairs.VULNERABLE})
  assert pairs.subtree_pairs(parent, fork_pos, slots, labels) == [(0, 3)]


def test_localized_pairs_keep_only_forks_at_or_before_the_finding():
  prefix = np.array([1, 9], np.int32)
  vuln = np.array([5, 6, 7, 8], np.int32)  # the finding is in token 2 (7)
  early = np.array([5, 4, 4], np.int32)  # parts from vuln at token 1, before the finding: a decision node
  late = np.array([5, 6, 7, 3], np.int32)  # parts at token 3, after the flagged token both share: no node
  golden = np.array([2, 2], np.int32)
  got = pairs.localized_pairs(prefix, [vuln, early, late], [pairs.VULNERABLE, pairs.SECURE, pairs.SECURE],
                              [2, None, None], golden, max_pairs=8)
  assert [(list(c), list(r), k) for c, r, k in got] == [
      ([1, 9, 2, 2], [1, 9, 5, 6, 7, 8], pairs.KIND_LOCALIZED), ([1, 9, 5, 4, 4], [1, 9, 5, 6, 7, 8],
                                                                 pairs.KIND_LOCALIZED)]
  ps = pairs.pair_arrays(got, [2, 2], 8, 0)
  assert ps.chosen_mask[1].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]  # from the fork token on
  # Not localized (no finding token): the whole branch; secure branches are never rejected.
  got = pairs.localized_pairs(prefix, [vuln, late], [pairs.VULNERABLE, pairs.SECURE], [None, None], None, 8)
  assert len(got) == 1 and list(got[0][0]) == [1, 9, 5, 6, 7, 3]
  assert pairs.localized_pairs(prefix, [vuln, late], [pairs.SECURE, pairs.SECURE], [1, None], golden, 8) == []


def test_rollout_records_and_code_prompts():
  recs = [data.Record(id="a", cwe="CWE-078", prompt="run it", golden="def f():\n  pass\n", vulnerable=None),
          data.Record(id="b", cwe="CWE-078", prompt="run it", golden="x\n", vulnerable="y\n"),
          data.Record(id="c", cwe="CWE-022", prompt="import os\ndef g(p):", golden=None, vulnerable=None,
                      source="codeguardplus")]
  assert [r.id for r in data.rollout_records(recs)] == ["a", "c"]
  assert data.model_prompt(recs[0]) == "# run it\n" and data.model_prompt(recs[2]) == "import os\ndef g(p):"


def test_token_at_offset_matches_brute_force(tok):
  from tsp_jax.search import host
  prefix = np.asarray(tok.encode("# read a file\ndef read(path):\n", bos=True), np.int32)
  gen = np.asarray(tok.encode("    with open(path) as f:\n        return f.read()\n", bos=False), np.int32)
  text = host.decode_continuation(prefix, gen, tok)
  for off in range(len(text)):
    brute = next(i for i in range(len(gen)) if len(host.decode_continuation(prefix, gen[:i + 1], tok)) > off)
    assert host.token_at_offset(prefix, gen, off, tok) == brute
  assert host.token_at_offset(prefix, gen, len(text), tok) is None


@pytest.mark.parametrize("status,secure,functional,label", [
    ("syntax_error", False, False, pairs.BROKEN),
    ("timeout", False, None, pairs.DROP),
    ("crashed", True, True, pairs.DROP),
    ("ok", False, None, pairs.VULNERABLE),  # no functional tests (patch data): flagged is vulnerable
    ("ok", False, True, pairs.VULNERABLE),  # works, and fails its security judge
    ("ok", False, False, pairs.BROKEN),  # fails its functional tests too: no evidence of a security decision
    ("ok", True, False, pairs.DROP),
    ("ok", True, None, pairs.SECURE),
    ("ok", True, True, pairs.SECURE),
])
def test_branch_labels_from_verdicts(status, secure, functional, label):
  from tsp_jax.sources import labels
  from tsp_jax.verify import Verdict
  assert labels.verdict_label(Verdict(status=status, secure=secure, functional=functional)) == label
