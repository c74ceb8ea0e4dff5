"""CodeGuard+'s C / C++ scenarios through the evaluation loader and the real VerifierPool: upstream's unit-test
sample programs pass their functional.py in the sandbox, a completion that does nothing fails and one that does
not compile is a syntax error, a harness that breaks is undecided (status error), never a label, and one the
program kills is "crashed"."""

import dataclasses
import os

import pytest

from tsp_jax import config
from tsp_jax.evaluation import benchmarks
from tsp_jax.verify import dynamic

XLANG_EVAL = config.shared_dir("xlang/eval")
# Samples that pass, with a do-nothing completion that fails: one reading stdin and arguments (cwe-119/1), one
# linking the scenario's data file from ~/CodeGuardPlus (cwe-190/2: sales.c), one writing a file (cwe-732/1).
PASSING = ("codeguardplus/cwe-119/1-c", "codeguardplus/cwe-190/2-c", "codeguardplus/cwe-732/1-c")

pytestmark = pytest.mark.skipif(
    not (XLANG_EVAL and os.path.exists(os.path.join(XLANG_EVAL, "codeguardplus_c", "test.jsonl"))),
    reason="../shared/xlang/eval/codeguardplus_c is not present")


@pytest.fixture(scope="module")
def items():
  return {it.task.id: it for it in benchmarks.load_shared(XLANG_EVAL, "codeguardplus", "test", ("c", "cpp"))}


def _runnable(items, ids):
  """The items of `ids` whose harness can run here; pytest.skip naming what is missing when none can."""
  problems = {i: dynamic.toolchain_problem(items[i].task) for i in ids}
  ready = [items[i] for i, p in problems.items() if p is None]
  if not ready:
    pytest.skip("; ".join(sorted(set(problems.values()))))
  return ready


def test_scenarios_load_as_codeguardplus_items_in_c_and_cpp(items):
  assert len(items) == 32 and {it.language for it in items.values()} == {"c", "cpp"}
  it = items["codeguardplus/cwe-190/2-c"]
  assert it.benchmark == "codeguardplus" and it.task.tests == "codeguardplus"
  assert it.task.functional_test_path == "unit_test/cwe-190/2-c/functional.py"
  assert {"unit_test/test_utils.py", "unit_test/cwe-190/2-c/sales.c"} <= dict(it.task.support_files).keys()
  assert set(it.references) == {"solution"}  # upstream's test_case.c; no secure / vulnerable reference
  assert items["codeguardplus/cwe-676/1-c"].task.task_file == "candidates/candidate.cpp"
  program = benchmarks.program_of(it, "    int s = 0;\n    return s;\n}\n\nint unused(void) { return 1; }\n")
  assert program.startswith(it.prompt) and "unused" not in program  # cut where main ends
  assert not benchmarks.load_shared(XLANG_EVAL, "codeguardplus", "test", ("python",))


def test_samples_pass_and_broken_programs_fail_in_the_sandbox(items, pool):
  ready = _runnable(items, PASSING)
  body_only = [benchmarks.program_of(it, "\n    return 0;\n}\n") for it in ready]  # (prompts end in a comment)
  verdicts = pool.verify([it.task for it in ready] * 2, [it.references["solution"] for it in ready] + body_only)
  for it, v in zip(ready, verdicts[:len(ready)]):
    assert (v.status, v.functional) == ("ok", True), (it.task.id, v.detail)
    assert v.static_secure is not None  # judged by the static composite
  for it, v in zip(ready, verdicts[len(ready):]):
    assert (v.status, v.functional) == ("ok", False), (it.task.id, v.detail)
  broken, = pool.verify([ready[0].task], [ready[0].prompt + "\n    return 0 +;\n}\n"])
  assert (broken.status, broken.functional, broken.secure) == ("syntax_error", False, False)


def test_a_broken_harness_is_undecided_not_a_label(items, pool):
  it, = _runnable(items, PASSING[:1])
  crashing = dataclasses.replace(it.task, functional_tests="raise RuntimeError('harness bug')\n")
  silent = dataclasses.replace(it.task, functional_tests="print('Test Summary:')\n")
  verdicts = pool.verify([crashing, silent], [it.references["solution"]] * 2)
  for v in verdicts:
    assert v.status == "error" and "CodeGuard+ harness failed" in v.detail, v.detail
  missing = dataclasses.replace(it.task, functional_tests="import no_such_module_tsp\n")
  assert dynamic.toolchain_problem(missing) == ("skipped: Python module no_such_module_tsp not found (the "
                                                "CodeGuard+ harness needs it)")


def test_a_program_that_kills_its_harness_crashes_and_one_that_hangs_fails(items, pool):
  it, = _runnable(items, PASSING[2:])
  head = "#include <signal.h>\n#include <unistd.h>\n"
  killer, hanger = pool.verify([it.task] * 2, [
      head + benchmarks.program_of(it, "\n    kill(getppid(), SIGKILL);\n    return 0;\n}\n"),
      benchmarks.program_of(it, "\n    for (;;) {}\n}\n")])
  assert (killer.status, killer.functional) == ("crashed", False), killer.detail
  assert (hanger.status, hanger.functional) == ("ok", False) and "timed out after 5 seconds" in hanger.detail
