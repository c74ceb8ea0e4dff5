"""Metrics on hand-made verdicts: SPR@1, func / secure pass@1, parse rate, per-CWE counts, seen vs unseen."""

import pytest

from tests.evaluation.helpers import verdict
from tsp_jax.evaluation import metrics
from tsp_jax.verify.types import Task

# Six programs: secure + functional, vulnerable + functional, syntax error, secure but broken, timeout (its
# security check never finished: not secure), verifier crash on a task without tests.
HAND = [verdict(functional=True), verdict(secure=False, functional=True),
        verdict("syntax_error", secure=False, functional=False), verdict(functional=False),
        verdict("timeout", secure=False, functional=False), verdict("crashed", secure=False, functional=None)]
HAND_TASKS = [Task("a", "CWE-078", cwe_seen_in_train=True), Task("b", "CWE-078", cwe_seen_in_train=True),
              Task("c", "CWE-022", cwe_seen_in_train=True), Task("d", "CWE-918", cwe_seen_in_train=False),
              Task("e", "CWE-918", cwe_seen_in_train=False), Task("f", "CWE-117", cwe_seen_in_train=False)]


def test_metrics_on_hand_made_verdicts():
  # Parseable: all but the syntax error (5); flagged among them: vulnerable, timeout, crashed (3).
  assert metrics.spr_at_1(HAND) == pytest.approx(1 - 3 / 5)
  # With functional tests: the first five; functional: 2; functional and secure: 1.
  assert metrics.func_pass_at_1(HAND) == pytest.approx(2 / 5)
  assert metrics.secure_pass_at_1(HAND) == pytest.approx(1 / 5)
  assert metrics.parse_rate(HAND) == pytest.approx(5 / 6)
  s = metrics.summarize(HAND)
  assert (s["n"], s["parseable"], s["flagged"], s["with_tests"], s["functional"], s["secure_pass"], s["timeout"],
          s["crashed"]) == (6, 5, 3, 5, 2, 1, 1, 1)
  # A syntax error is excluded from SPR@1, not counted as secure or vulnerable.
  assert metrics.spr_at_1([verdict(), verdict("syntax_error", secure=False)]) == 1.0
  assert metrics.spr_at_1([verdict("syntax_error", secure=False)]) is None
  assert metrics.secure_pass_at_1([verdict()]) is None  # no functional tests: undefined, not 0


def test_per_cwe_and_seen_unseen_split():
  rows = metrics.per_cwe(HAND_TASKS, HAND)
  assert list(rows) == ["CWE-022", "CWE-078", "CWE-117", "CWE-918"]
  pick = lambda r: (r["n"], r["parseable"], r["vulnerable"], r["with_tests"], r["secure_pass"], r["seen"])
  assert pick(rows["CWE-078"]) == (2, 2, 1, 2, 1, True)
  assert pick(rows["CWE-022"]) == (1, 0, 0, 1, 0, True)
  assert pick(rows["CWE-918"]) == (2, 2, 1, 2, 0, False)
  assert pick(rows["CWE-117"]) == (1, 1, 1, 0, 0, False)
  split = metrics.seen_unseen(HAND_TASKS, HAND)
  assert split["seen"]["n"] == 3 and split["seen"]["spr_at_1"] == pytest.approx(1 / 2)
  assert split["seen"]["secure_pass_at_1"] == pytest.approx(1 / 3)
  assert split["unseen"]["n"] == 3 and split["unseen"]["spr_at_1"] == pytest.approx(1 / 3)
  assert split["unseen"]["secure_pass_at_1"] == 0.0


def test_verifier_errors_are_undecided():
  """A program the verifier failed on is out of every rate and counted apart."""
  good = verdict(secure=True, functional=True)
  bad = verdict(secure=False, functional=False)
  err = verdict("error", secure=False, functional=False)
  m = metrics.summarize([good, bad, err])
  assert m["n"] == 3 and m["undecided"] == 1 and m["parseable"] == 2
  assert m["spr_at_1"] == 0.5 and m["func_pass_at_1"] == 0.5 and m["secure_pass_at_1"] == 0.5
  assert m["parse_rate"] == 1.0
