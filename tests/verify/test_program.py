"""Program assembly (prompt + continuation cut at the function's end), node tasks and task loading."""

import ast
import json
import os

import pytest

from tsp_jax.verify import program, types

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared")


@pytest.mark.parametrize("prefix,continuation,expected", [
    # The function ends at the first line back at the def's indentation.
    ("def f(x):\n", "  return x\n\nprint(f(1))\n", "  return x\n\n"),
    # Nested defs and blank lines inside the body do not end it.
    ("def f(x):\n  def g():\n", "    return 1\n\n  return g()\ndef h():\n  pass\n",
     "    return 1\n\n  return g()\n"),
    # A method (indented def): a line at the class body's indentation ends it.
    ("class A:\n  def f(self):\n", "    return 1\n  def g(self):\n    return 2\n", "    return 1\n"),
    # No def in the prefix: nothing is cut.
    ("x = 1\n", "y = 2\nz = 3\n", "y = 2\nz = 3\n"),
    # The prefix ends mid-line: the continuation's first line finishes it, even at column 0.
    ("def f(x):\n  return ", "x +\n1\nprint(2)\n", "x +\n"),
    # A continuation that never leaves the function is kept whole.
    ("def f():\n", "  a = 1\n  b = 2", "  a = 1\n  b = 2"),
])
def test_cut_continuation(prefix, continuation, expected):
  assert program.cut_continuation(prefix, continuation) == expected
  assert program.assemble_program(prefix, continuation) == prefix + expected


def test_function_indent_is_the_outermost_def():
  assert program.function_indent("# c\nclass A:\n    def f(self):\n        def g():\n") == 4
  assert program.function_indent("x = 1\n") is None


def test_node_task_carries_the_patch_and_offset():
  class Node:
    record_id, cwe, line = "sven/x", "CWE-089", 3
    fixed_lines = ("cur.execute(q, (a,))",)
    vulnerable_lines = ("cur.execute(q % a)",)

  t = program.node_task(Node(), node_offset=42, strict=True)
  assert (t.id, t.cwe, t.mode, t.node_offset) == ("sven/x#L3", "CWE-089", types.MODE_STRICT, 42)
  assert t.fixed_lines == Node.fixed_lines and t.vulnerable_lines == Node.vulnerable_lines
  assert program.node_task(Node(), 0).mode == types.MODE_CWE
  untested = types.Task(id="sven/x", cwe="CWE-089")
  assert program.node_task(Node(), 0, record_task=untested) == program.node_task(Node(), 0)
  tested = types.Task(id="synth/x", cwe="CWE-089", tests=types.TESTS_CWEVAL, functional_tests="def test(): pass\n",
                      task_module="task", test_module="test_task", security_test_args=("-m", "security"))
  t = program.node_task(Node(), node_offset=42, record_task=tested)  # the record's tests judge the branch
  assert (t.id, t.node_offset, t.fixed_lines) == ("sven/x#L3", 42, Node.fixed_lines)
  assert (t.tests, t.functional_tests, t.task_module, t.security_test_args) == (
      tested.tests, tested.functional_tests, "task", ("-m", "security"))


def test_load_tasks_per_source():
  cweval = types.load_tasks(os.path.join(SHARED, "eval", "cweval", "test.jsonl"))
  assert len(cweval) == 25 and all(t.tests == types.TESTS_CWEVAL for t in cweval)
  assert all(t.task_module and t.test_module and t.reference_secure for t in cweval)
  assert dict(cweval[0].support_files).get("pytest.ini", "").startswith("[pytest]")
  cg = types.load_tasks(os.path.join(SHARED, "data", "codeguardplus", "train.jsonl"))
  assert cg and all(t.tests == types.TESTS_CODEGUARD for t in cg)
  assert "unit_test/test_utils.py" in dict(cg[0].support_files)
  sven = types.load_tasks(os.path.join(SHARED, "data", "sven_safecoder", "dev.jsonl"))
  assert sven and all(t.tests == types.TESTS_NONE for t in sven)


def test_bad_tasks_fail_clearly(tmp_path):
  with pytest.raises(ValueError, match="unknown tests kind"):
    types.Task(id="a", cwe="CWE-078", tests="junit")
  with pytest.raises(ValueError, match="unknown mode"):
    types.Task(id="a", cwe="CWE-078", mode="lenient")
  with pytest.raises(ValueError, match="CWEval tests need"):
    types.Task(id="a", cwe="CWE-078", tests=types.TESTS_CWEVAL)
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"id": "x", "cwe": "CWE-078", "prompt": "p"}) + "\n{not json\n")
  with pytest.raises(ValueError, match="bad.jsonl:2: bad record"):
    types.load_tasks(bad)
  assert [t.id for t in types.load_tasks(bad, strict=False)] == ["x"]  # the trainer's loader counts bad lines
  bad.write_text(json.dumps({"id": "x", "prompt": "p"}) + "\n")
  with pytest.raises(ValueError, match="lacks \\['cwe'\\]"):
    types.load_tasks(bad)
  with pytest.raises(FileNotFoundError):
    types.load_tasks(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("branch, expected_tail", [
    ("    if not path:\n        return None\n    with open(pa", "    if not path:\n        return None\n"),
    ("    for name in names:\n        os.system(f'rm {na", "    for name in names:\n        pass\n"),
    ("    subprocess.run(\n        ['ls',\n         pa", "    pass\n"),  # open brackets: back to the header
    ("    x = 1\n", "    x = 1\n"),  # already parses: unchanged
])
def test_truncated_branches_are_closed(branch, expected_tail):
  prefix = "import os\n\ndef clean(path, names):\n"
  got = program.assemble_program(prefix, branch, truncated=True)
  ast.parse(got)
  assert got == prefix + expected_tail


def test_closing_keeps_real_syntax_errors_and_finished_functions():
  prefix = "def f(x):\n"
  broken = "    y = = x\n    return y\n    z = (1"
  assert program.assemble_program(prefix, broken, truncated=True) == prefix + broken
  # A function that ended before the budget is not touched, truncated or not.
  done = "    return x\nprint(f(1)"
  assert program.assemble_program(prefix, done, truncated=True) == prefix + "    return x\n"
  assert program.assemble_program(prefix, "    return (x", truncated=False) == prefix + "    return (x"
