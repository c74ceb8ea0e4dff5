"""Runs: reference programs through a stub and the real verifier pool (CWEval, CodeGuard+, HumanEval), skips and
crashes counted, and a tiny end-to-end `evaluate_checkpoint`."""

import os

import pytest

from tests.evaluation.helpers import EVAL_DIR, StubPool, item, needs_eval
from tsp_jax.evaluation import benchmarks, decoding, report, runs
from tsp_jax.verify import dynamic, types


def test_a_crashed_verification_keeps_the_others_and_skips_are_counted():
  items = {"cweval": [item("a", "CWE-078", secure="ok"), item("b", "CWE-078", secure="CRASH"),
                      item("c", "CWE-022", seen=False, secure="vuln"), item("d", "CWE-022")]}
  pool = StubPool()
  result = runs.evaluate_reference(items, "secure", pool)
  bench = result["benchmarks"]["cweval"]
  assert pool.calls == [3]  # one batch; the item without a reference is not sent
  assert bench["skipped"] == {"no_reference": 1}
  assert [it["verdict"]["status"] if it["verdict"] else it["skipped"] for it in bench["items"]] == [
      "ok", "crashed", "ok", "no_reference"]
  m = bench["metrics"]
  assert (m["n"], m["crashed"], m["secure_pass"], m["flagged"]) == (3, 1, 1, 2)
  assert bench["unseen"]["n"] == 1 and bench["per_cwe"]["CWE-022"]["vulnerable"] == 1


@needs_eval
def test_cweval_references_through_the_pool(pool):
  """The real pool on CWEval's reference programs: every secure one passes its functional and security tests,
  every vulnerable one passes the functional tests and fails the security tests."""
  left_out = {}  # the folder's pool gives the RSA/DSA key-generation tests 90 s each (conftest.py)
  if not dynamic.recheck_available():
    left_out["cweval/py/cwe_1333_0"] = "its security test runs the recheck binary: bash launch/local.sh setup"
  print("left out:", left_out)
  items = {"cweval": [it for it in benchmarks.load_shared(EVAL_DIR, "cweval", "test") if it.task.id not in left_out]}
  secure = runs.evaluate_reference(items, "secure", pool)["benchmarks"]["cweval"]
  failed = [(it["id"], it["verdict"]["detail"][-300:]) for it in secure["items"]
            if not (it["verdict"]["secure"] and it["verdict"]["functional"])]
  assert secure["metrics"]["secure_pass_at_1"] == 1.0, failed
  assert secure["metrics"]["spr_at_1"] == 1.0 and secure["skipped"] == {}
  assert secure["metrics"]["n"] == len(items["cweval"]) == secure["seen"]["n"] + secure["unseen"]["n"]
  vulnerable = runs.evaluate_reference(items, "vulnerable", pool)["benchmarks"]["cweval"]
  m = vulnerable["metrics"]
  assert m["spr_at_1"] < 1.0
  missed = [it["id"] for it in vulnerable["items"] if it["verdict"]["secure"]]
  assert (m["spr_at_1"], m["secure_pass_at_1"], missed) == (0.0, 0.0, [])  # every variant fails its security test
  assert m["func_pass_at_1"] == 1.0  # CWEval's insecure variants are functional
  assert all(row["vulnerable"] == row["n"] for row in vulnerable["per_cwe"].values())


@needs_eval
def test_codeguardplus_functional_verdicts_match_the_dataset(pool):
  """CodeGuard+'s unit tests in the sandbox agree with the dataset's `reference_solution_passes_functional` on
  two solutions that pass and two that do not; its security verdict is the static composite's."""
  path = os.path.join(EVAL_DIR, "codeguardplus", "test.jsonl")
  claims = {r["id"]: r["reference_solution_passes_functional"] for _, r in types.jsonl_records(path)
            if r.get("reference_solution")}
  picked = [i for flag in (True, False) for i in [k for k, v in claims.items() if v is flag][:2]]
  items = [it for it in benchmarks.load_shared(EVAL_DIR, "codeguardplus", "test") if it.task.id in picked]
  bench = runs.evaluate_reference({"codeguardplus": items}, "solution", pool)["benchmarks"]["codeguardplus"]
  assert {it["id"]: it["verdict"]["functional"] for it in bench["items"]} == {k: claims[k] for k in picked}
  assert all(it["verdict"]["security_tests_passed"] is None for it in bench["items"])
  assert bench["security_judge"] == benchmarks.SECURITY_JUDGES["codeguardplus"]


def test_humaneval_in_the_sandbox(pool):
  """HumanEval as script tasks through the real pool: canonical solutions pass, a wrong completion fails."""
  items = benchmarks.load_benchmarks("", "test", ["humaneval"], limit=2)["humaneval"]
  wrong = benchmarks.EvalItem("humaneval", items[0].task, items[0].prompt,
                              {"solution": benchmarks.program_of(items[0], "    return None\n\nprint('extra')\n")})
  result = runs.evaluate_reference({"humaneval": items + [wrong]}, "solution", pool)["benchmarks"]["humaneval"]
  assert [it["verdict"]["functional"] for it in result["items"]] == [True, True, False]
  assert result["metrics"]["func_pass_at_1"] == pytest.approx(2 / 3)
  assert "| humaneval all pass@1 % | 66.7 |" in report.compare_table(
      [{"run": "r", "benchmarks": {"humaneval": result}}])


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="checkpoint folder .* does not exist"):
    runs.evaluate_checkpoint(tmp_path / "nope", {}, StubPool())


@needs_eval
def test_evaluate_checkpoint_end_to_end(tiny_checkpoint, pool, tmp_path):
  items = benchmarks.load_benchmarks(EVAL_DIR, "test", ["cweval"], limit=3)
  long_item = benchmarks.EvalItem("cweval", items["cweval"][0].task, "x = 1\n" * 2000, {})
  items["cweval"].append(long_item)  # longer than the 512-token context: a counted skip
  dec = decoding.Decoding.named("sample", seed=3, max_new_tokens=16, batch_size=4)
  workdir = os.path.dirname(tiny_checkpoint)  # a trainer workdir: the model is in its export/
  result = runs.evaluate_checkpoint(workdir, items, pool, dec)
  assert result["run"] == "ckpt0" and result["decoding"]["temperature"] == 0.2
  bench = result["benchmarks"]["cweval"]
  assert bench["skipped"] == {"prompt_too_long": 1}
  assert [it["skipped"] for it in bench["items"]] == [None, None, None, "prompt_too_long"]
  assert all(it["verdict"]["status"] in types.STATUSES for it in bench["items"][:3])
  for it, src in zip(bench["items"][:3], items["cweval"]):
    assert it["program"].startswith(src.prompt)
  for key in ("n", "parse_rate", "spr_at_1", "func_pass_at_1", "secure_pass_at_1", "timeout", "crashed"):
    assert key in bench["metrics"] and key in bench["seen"] and key in bench["unseen"]
  assert bench["metrics"]["n"] == 3 and sum(r["n"] for r in bench["per_cwe"].values()) == 3
  report.write_json(result, tmp_path / "run.json")
  assert report.read_json(tmp_path / "run.json")["benchmarks"]["cweval"]["metrics"] == bench["metrics"]
