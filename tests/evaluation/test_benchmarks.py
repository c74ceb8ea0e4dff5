"""Benchmarks: program assembly from prompt + completion, loading CWEval / CodeGuard+ / HumanEval, strict fields."""

import json
import os

import pytest

from tests.evaluation.helpers import EVAL_DIR, item, needs_eval
from tsp_jax.evaluation import benchmarks
from tsp_jax.verify import types


def test_program_assembly_cuts_at_the_function_end():
  he = item("he", "", prompt='def add(a, b):\n    """Sum."""\n')
  completion = "    return a + b\n\n\nprint(add(1, 2))\ndef other():\n    pass\n"
  assert benchmarks.program_of(he, completion) == 'def add(a, b):\n    """Sum."""\n    return a + b\n\n\n'
  # CodeGuard+: the prompt stops mid-function without a newline; the completion finishes its line first.
  cg = item("cg", "CWE-020", prompt="app = 1\n\n@route('/x')\ndef view():\n    target = get('t')")
  completion = "\n    return redirect(target)\n\nif __name__ == '__main__':\n    app.run()\n"
  assert benchmarks.program_of(cg, completion) == cg.prompt + "\n    return redirect(target)\n\n"
  # Continuation lines deeper than the def and blank lines stay.
  nested = "    if a:\n        return (a +\n  1)\n\n    return 0\nx = 1\n"
  assert benchmarks.program_of(he, nested).endswith("    return 0\n")


@needs_eval
def test_cweval_secure_references_reassemble_from_prompt_and_completion():
  for it in benchmarks.load_shared(EVAL_DIR, "cweval", "test"):
    ref = it.references["secure"]
    assert ref.startswith(it.prompt)
    assert benchmarks.program_of(it, ref[len(it.prompt):]) == ref


def test_humaneval_canonical_solutions_reassemble():
  for it in benchmarks.load_humaneval():  # a completion of the canonical body reassembles the canonical program
    ref = it.references["solution"]
    assert benchmarks.program_of(it, ref[len(it.prompt):]) == ref


@needs_eval
def test_benchmarks_load_with_their_tasks():
  items = benchmarks.load_benchmarks(EVAL_DIR, "test", benchmarks.BENCHMARKS)
  assert [len(items[n]) for n in benchmarks.BENCHMARKS] == [25, 36, 164]
  assert all(it.task.tests == types.TESTS_CWEVAL for it in items["cweval"])
  assert all(it.task.tests == types.TESTS_CODEGUARD for it in items["codeguardplus"])
  assert sum(it.task.cwe_seen_in_train is False for it in items["cweval"]) == 14
  he = items["humaneval"][0].task
  assert he.tests == types.TESTS_SCRIPT and he.functional_tests.endswith("\ncheck(has_close_elements)\n")
  assert len(benchmarks.load_benchmarks(EVAL_DIR, "test", ["cweval"], limit=3)["cweval"]) == 3
  with pytest.raises(ValueError, match="unknown benchmark"):
    benchmarks.load_benchmarks(EVAL_DIR, "test", ["mbpp"])


@needs_eval
def test_an_unknown_field_is_a_clear_error(tmp_path):
  record = next(raw for _, raw in types.jsonl_records(os.path.join(EVAL_DIR, "cweval", "test.jsonl")))
  (tmp_path / "cweval").mkdir()
  (tmp_path / "cweval" / "test.jsonl").write_text(json.dumps({**record, "prompt_v2": "x"}) + "\n")
  with pytest.raises(ValueError, match=r"test.jsonl:1: unknown field\(s\) \['prompt_v2'\]"):
    benchmarks.load_shared(tmp_path, "cweval", "test")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    benchmarks.load_shared(tmp_path, "codeguardplus", "test")
