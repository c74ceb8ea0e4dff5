"""CWEval beyond Python through the real VerifierPool: references of a few C, C++ (ASan included), Go and
JavaScript tasks judged as CWEval judges them; a program that does not build; a Go task that needs a module."""

import os

import pytest

from tsp_jax.verify import VerifierPool, dynamic, types

CWEVAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "xlang", "eval", "cweval",
                      "test.jsonl")
# Representative: 2 C, 1 C ASan (lang/c), 1 C++, 2 JS (one with native npm packages), 1 Go (standard library).
SUBSET = ("cweval/core/c/cwe_020_0_c", "cweval/core/c/cwe_078_0_c", "cweval/lang/c/cwe_119_0_c",
          "cweval/core/cpp/cwe_020_0_cpp", "cweval/core/js/cwe_079_0_js", "cweval/core/js/cwe_943_0_js",
          "cweval/core/go/cwe_020_0_go")
NEEDS_MODULE = "cweval/core/go/cwe_943_0_go"

pytestmark = pytest.mark.skipif(not os.path.exists(CWEVAL), reason="../shared/xlang/eval/cweval is not present")


@pytest.fixture(scope="module")
def tasks():
  return {t.id: t for t in types.load_tasks(CWEVAL)}


@pytest.fixture(scope="module")
def pool():
  with VerifierPool(num_workers=2, program_timeout_s=120) as p:
    yield p


def _runnable(tasks, ids):
  """The tasks of `ids` whose toolchain is here; pytest.skip naming what is missing when none is."""
  problems = {i: dynamic.toolchain_problem(tasks[i]) for i in ids}
  ready = [tasks[i] for i, p in problems.items() if p is None]
  if not ready:
    pytest.skip("; ".join(sorted(set(problems.values()))))
  return ready


def test_xlang_records_load(tasks):
  assert {t.language for t in tasks.values()} == {"c", "cpp", "go", "javascript"}
  asan = [t for t in tasks.values() if "-fsanitize=address" in " ".join(t.build_commands)]
  assert len(asan) == 10 and all("/lang/c/" in t.id for t in asan)  # lang/c less cwe_476_0
  c = tasks["cweval/core/c/cwe_020_0_c"]
  assert c.tests == types.TESTS_CWEVAL and c.task_file == "cwe_020_0_c_task.c" and "#include" in c.source_prelude
  assert c.security_test_args == ("-m", "security", "-k", "not _unsafe")
  program = dynamic.assemble_source(c, "int f(void) { return 0; }")
  assert program.endswith(c.entrypoint + "\n") and c.entrypoint_anchor in program
  assert dynamic.assemble_source(c, c.reference_secure).count(c.entrypoint_anchor) == 1


def test_references_judged_as_cweval_judges_them(tasks, pool):
  ready = _runnable(tasks, SUBSET)
  secure = pool.verify(ready, [t.reference_secure for t in ready])
  vulnerable = pool.verify(ready, [t.reference_vulnerable for t in ready])
  for task, s, v in zip(ready, secure, vulnerable):
    assert (s.status, s.functional, s.secure) == ("ok", True, True), (task.id, s.detail)
    assert v.status == "ok" and not (v.functional and v.secure), (task.id, v.detail)


def test_build_failure_is_a_syntax_error(tasks, pool):
  task, = _runnable(tasks, ["cweval/core/c/cwe_020_0_c"])
  verdict, = pool.verify([task], ["char* get_target_for_redirect(const char* t, const char* d) { return t +; }"])
  assert (verdict.status, verdict.functional, verdict.secure) == ("syntax_error", False, False)
  assert "build failed" in verdict.detail


def test_go_task_needing_a_module_is_skipped_not_judged(tasks, pool):
  task, = _runnable(tasks, [NEEDS_MODULE])
  verdict, = pool.verify([task], [task.reference_secure])
  assert verdict.status == "error" and verdict.detail.startswith("skipped: needs Go module")
  assert "github.com/mattn/go-sqlite3" in verdict.detail
