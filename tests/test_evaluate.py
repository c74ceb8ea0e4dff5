"""Evaluation harness: metrics on hand-made verdicts, program assembly, benchmark loading, reference runs through
the verifier pool (CWEval, HumanEval), bad input, reports, the CLI, the node probe and a tiny end-to-end
`evaluate_checkpoint`."""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from tsp_jax import data, evaluate, objective
from tsp_jax import tokenizer as tokenizer_lib
from tsp_jax.model import convert, llama
from tsp_jax.verify import dynamic, types
from tsp_jax.verify.types import Task, Verdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "sven_train_sample.jsonl")
EVAL_DIR = base.shared_dir("eval")
needs_eval = pytest.mark.skipif(not EVAL_DIR, reason="../shared/eval is not present")


def verdict(status="ok", secure=True, functional=None, **kw) -> Verdict:
  return Verdict(status=status, secure=secure, functional=functional, **kw)


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
  assert evaluate.spr_at_1(HAND) == pytest.approx(1 - 3 / 5)
  # With functional tests: the first five; functional: 2; functional and secure: 1.
  assert evaluate.func_pass_at_1(HAND) == pytest.approx(2 / 5)
  assert evaluate.secure_pass_at_1(HAND) == pytest.approx(1 / 5)
  assert evaluate.parse_rate(HAND) == pytest.approx(5 / 6)
  s = evaluate.summarize(HAND)
  assert (s["n"], s["parseable"], s["flagged"], s["with_tests"], s["functional"], s["secure_pass"], s["timeout"],
          s["crashed"]) == (6, 5, 3, 5, 2, 1, 1, 1)
  # A syntax error is excluded from SPR@1, not counted as secure or vulnerable.
  assert evaluate.spr_at_1([verdict(), verdict("syntax_error", secure=False)]) == 1.0
  assert evaluate.spr_at_1([verdict("syntax_error", secure=False)]) is None
  assert evaluate.secure_pass_at_1([verdict()]) is None  # no functional tests: undefined, not 0


def test_per_cwe_and_seen_unseen_split():
  rows = evaluate.per_cwe(HAND_TASKS, HAND)
  assert list(rows) == ["CWE-022", "CWE-078", "CWE-117", "CWE-918"]
  pick = lambda r: (r["n"], r["parseable"], r["vulnerable"], r["with_tests"], r["secure_pass"], r["seen"])
  assert pick(rows["CWE-078"]) == (2, 2, 1, 2, 1, True)
  assert pick(rows["CWE-022"]) == (1, 0, 0, 1, 0, True)
  assert pick(rows["CWE-918"]) == (2, 2, 1, 2, 0, False)
  assert pick(rows["CWE-117"]) == (1, 1, 1, 0, 0, False)
  split = evaluate.seen_unseen(HAND_TASKS, HAND)
  assert split["seen"]["n"] == 3 and split["seen"]["spr_at_1"] == pytest.approx(1 / 2)
  assert split["seen"]["secure_pass_at_1"] == pytest.approx(1 / 3)
  assert split["unseen"]["n"] == 3 and split["unseen"]["spr_at_1"] == pytest.approx(1 / 3)
  assert split["unseen"]["secure_pass_at_1"] == 0.0


def test_pass_at_k_unbiased_estimator():
  for n in range(2, 12):
    for c in range(n + 1):
      assert evaluate.pass_at_k(n, c, 1) == pytest.approx(c / n)
      for k in range(1, n + 1):
        assert evaluate.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
  # By hand: n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10; n=4, c=1, k=3: 1 - C(3,3)/C(4,3) = 3/4.
  assert evaluate.pass_at_k(5, 2, 2) == pytest.approx(0.7)
  assert evaluate.pass_at_k(4, 1, 3) == pytest.approx(0.75)
  assert evaluate.pass_at_k(10, 3, 1) == pytest.approx(0.3) and evaluate.pass_at_k(3, 0, 3) == 0.0
  for bad in ((3, 4, 1), (3, 1, 0), (3, 1, 4)):
    with pytest.raises(ValueError):
      evaluate.pass_at_k(*bad)


class StubPool:
  """Verdicts by program text; the program "CRASH" gets a crashed verdict (a worker died on it)."""

  def __init__(self):
    self.calls = []

  def verify(self, tasks, programs):
    self.calls.append(len(programs))
    return [verdict("crashed", secure=False, functional=False) if p == "CRASH"
            else verdict(secure="vuln" not in p, functional=True) for p in programs]


def item(id_, cwe, prompt="def f():\n", seen=True, **refs) -> evaluate.EvalItem:
  task = Task(id_, cwe, prompt=prompt, cwe_seen_in_train=seen, tests=types.TESTS_SCRIPT, functional_tests="pass")
  return evaluate.EvalItem("cweval", task, prompt, refs)


def test_a_crashed_verification_keeps_the_others_and_skips_are_counted():
  items = {"cweval": [item("a", "CWE-078", secure="ok"), item("b", "CWE-078", secure="CRASH"),
                      item("c", "CWE-022", seen=False, secure="vuln"), item("d", "CWE-022")]}
  pool = StubPool()
  result = evaluate.evaluate_reference(items, "secure", pool)
  bench = result["benchmarks"]["cweval"]
  assert pool.calls == [3]  # one batch; the item without a reference is not sent
  assert bench["skipped"] == {"no_reference": 1}
  assert [it["verdict"]["status"] if it["verdict"] else it["skipped"] for it in bench["items"]] == [
      "ok", "crashed", "ok", "no_reference"]
  m = bench["metrics"]
  assert (m["n"], m["crashed"], m["secure_pass"], m["flagged"]) == (3, 1, 1, 2)
  assert bench["unseen"]["n"] == 1 and bench["per_cwe"]["CWE-022"]["vulnerable"] == 1


def test_program_assembly_cuts_at_the_function_end():
  he = item("he", "", prompt='def add(a, b):\n    """Sum."""\n')
  completion = "    return a + b\n\n\nprint(add(1, 2))\ndef other():\n    pass\n"
  assert evaluate.program_of(he, completion) == 'def add(a, b):\n    """Sum."""\n    return a + b\n\n\n'
  # CodeGuard+: the prompt stops mid-function without a newline; the completion finishes its line first.
  cg = item("cg", "CWE-020", prompt="app = 1\n\n@route('/x')\ndef view():\n    target = get('t')")
  completion = "\n    return redirect(target)\n\nif __name__ == '__main__':\n    app.run()\n"
  assert evaluate.program_of(cg, completion) == cg.prompt + "\n    return redirect(target)\n\n"
  # Continuation lines deeper than the def and blank lines stay.
  nested = "    if a:\n        return (a +\n  1)\n\n    return 0\nx = 1\n"
  assert evaluate.program_of(he, nested).endswith("    return 0\n")


@needs_eval
def test_cweval_secure_references_reassemble_from_prompt_and_completion():
  for it in evaluate.load_shared(EVAL_DIR, "cweval", "test"):
    ref = it.references["secure"]
    assert ref.startswith(it.prompt)
    assert evaluate.program_of(it, ref[len(it.prompt):]) == ref


@needs_eval
def test_benchmarks_load_with_their_tasks():
  items = evaluate.load_benchmarks(EVAL_DIR, "test", evaluate.BENCHMARKS)
  assert [len(items[n]) for n in evaluate.BENCHMARKS] == [25, 36, 164]
  assert all(it.task.tests == types.TESTS_CWEVAL for it in items["cweval"])
  assert all(it.task.tests == types.TESTS_CODEGUARD for it in items["codeguardplus"])
  assert sum(it.task.cwe_seen_in_train is False for it in items["cweval"]) == 14
  he = items["humaneval"][0].task
  assert he.tests == types.TESTS_SCRIPT and he.functional_tests.endswith("\ncheck(has_close_elements)\n")
  assert len(evaluate.load_benchmarks(EVAL_DIR, "test", ["cweval"], limit=3)["cweval"]) == 3
  with pytest.raises(ValueError, match="unknown benchmark"):
    evaluate.load_benchmarks(EVAL_DIR, "test", ["mbpp"])


@needs_eval
def test_an_unknown_field_is_a_clear_error(tmp_path):
  record = json.loads(open(os.path.join(EVAL_DIR, "cweval", "test.jsonl"), encoding="utf-8").readline())
  (tmp_path / "cweval").mkdir()
  (tmp_path / "cweval" / "test.jsonl").write_text(json.dumps({**record, "prompt_v2": "x"}) + "\n")
  with pytest.raises(ValueError, match=r"test.jsonl:1: unknown field\(s\) \['prompt_v2'\]"):
    evaluate.load_shared(tmp_path, "cweval", "test")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate.load_shared(tmp_path, "codeguardplus", "test")


def test_reports_side_by_side_and_plot(tmp_path):
  items = {"cweval": [item("a", "CWE-078", secure="ok", vulnerable="vuln"),
                      item("b", "CWE-918", seen=False, secure="ok", vulnerable="ok")]}
  runs = [evaluate.evaluate_reference(items, kind, StubPool()) for kind in ("secure", "vulnerable")]
  path = tmp_path / "r.json"
  evaluate.write_json(runs[1], path)
  assert evaluate.read_json(path)["benchmarks"]["cweval"]["metrics"]["spr_at_1"] == 0.5
  table = evaluate.markdown_table(runs[0])
  assert "| cweval | unseen CWEs | 1 |" in table and "| cweval | CWE-918 | no | 1 | 1 | 0 | 1/1 |" in table
  assert "security judged by cweval: CWEval's executable security tests" in table
  compare = evaluate.compare_table(runs)
  assert "| metric | reference_secure | reference_vulnerable |" in compare
  assert "| cweval evaluated/skipped | 2/0 | 2/0 |" in compare
  assert "| cweval all SPR@1 % | 100.0 | 50.0 |" in compare
  evaluate.plot_per_cwe(runs, tmp_path / "plot.png")
  assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------------------------------------
# Through the verifier pool and a tiny model.


@pytest.fixture(scope="module")
def pool():
  from tsp_jax.verify.pool import VerifierPool
  with VerifierPool(num_workers=2) as p:
    yield p


@needs_eval
def test_cweval_references_through_the_pool(pool):
  """The real pool on CWEval's reference programs: every secure one passes its functional and security tests,
  every vulnerable one passes the functional tests and fails the security tests."""
  left_out = {}  # the pool's 10 s per-test timeout covers the RSA/DSA key-generation tests on a busy machine
  if not dynamic.recheck_available():
    left_out["cweval/py/cwe_1333_0"] = "its security test runs the recheck binary: bash launch/local.sh setup"
  print("left out:", left_out)
  items = {"cweval": [it for it in evaluate.load_shared(EVAL_DIR, "cweval", "test") if it.task.id not in left_out]}
  secure = evaluate.evaluate_reference(items, "secure", pool)["benchmarks"]["cweval"]
  failed = [(it["id"], it["verdict"]["detail"][-300:]) for it in secure["items"]
            if not (it["verdict"]["secure"] and it["verdict"]["functional"])]
  assert secure["metrics"]["secure_pass_at_1"] == 1.0, failed
  assert secure["metrics"]["spr_at_1"] == 1.0 and secure["skipped"] == {}
  assert secure["metrics"]["n"] == len(items["cweval"]) == secure["seen"]["n"] + secure["unseen"]["n"]
  vulnerable = evaluate.evaluate_reference(items, "vulnerable", pool)["benchmarks"]["cweval"]
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
  claims = {r["id"]: r["reference_solution_passes_functional"] for r in map(json.loads, open(path, encoding="utf-8"))
            if r.get("reference_solution")}
  picked = [i for flag in (True, False) for i in [k for k, v in claims.items() if v is flag][:2]]
  items = [it for it in evaluate.load_shared(EVAL_DIR, "codeguardplus", "test") if it.task.id in picked]
  bench = evaluate.evaluate_reference({"codeguardplus": items}, "solution", pool)["benchmarks"]["codeguardplus"]
  assert {it["id"]: it["verdict"]["functional"] for it in bench["items"]} == {k: claims[k] for k in picked}
  assert all(it["verdict"]["security_tests_passed"] is None for it in bench["items"])
  assert bench["security_judge"] == evaluate.SECURITY_JUDGES["codeguardplus"]


def test_humaneval_in_the_sandbox(pool):
  """HumanEval as script tasks through the real pool: canonical solutions pass, a wrong completion fails."""
  items = evaluate.load_benchmarks("", "test", ["humaneval"], limit=2)["humaneval"]
  for it in evaluate.load_humaneval():  # a completion of the canonical body reassembles the canonical program
    ref = it.references["solution"]
    assert evaluate.program_of(it, ref[len(it.prompt):]) == ref
  wrong = evaluate.EvalItem("humaneval", items[0].task, items[0].prompt,
                            {"solution": evaluate.program_of(items[0], "    return None\n\nprint('extra')\n")})
  result = evaluate.evaluate_reference({"humaneval": items + [wrong]}, "solution", pool)["benchmarks"]["humaneval"]
  assert [it["verdict"]["functional"] for it in result["items"]] == [True, True, False]
  assert result["metrics"]["func_pass_at_1"] == pytest.approx(2 / 3)
  assert "| humaneval all pass@1 % | 66.7 |" in evaluate.compare_table(
      [{"run": "r", "benchmarks": {"humaneval": result}}])


@needs_eval
def test_cli_reference_run_and_compare(tmp_path):
  """`python -m tsp_jax.evaluate --reference=...` writes JSON + PNG and prints the table; --compare reads runs."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", "tsp_jax.evaluate", "--reference=secure", "--benchmarks=cweval,codeguardplus",
         "--limit=2", f"--eval_dir={EVAL_DIR}", "--num_workers=1", f"--out={tmp_path / 'secure.json'}"]
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| cweval | all | 2 | 0 | 100.0 | 100.0 | 100.0 | 100.0 | 0 | 0 |" in out.stdout, out.stdout
  assert "| codeguardplus | all | 0 | 2 |" in out.stdout  # CodeGuard+ ships no secure references: skips
  assert (tmp_path / "secure.png").read_bytes()[:4] == b"\x89PNG"
  run = evaluate.read_json(tmp_path / "secure.json")
  assert run["benchmarks"]["codeguardplus"]["skipped"] == {"no_reference": 2}
  evaluate.write_json({**run, "run": "other"}, tmp_path / "other.json")
  cmd = [sys.executable, "-m", "tsp_jax.evaluate", "--compare", f"--plot={tmp_path / 'cmp.png'}",
         str(tmp_path / "secure.json"), str(tmp_path / "other.json")]
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| metric | reference_secure | other |" in out.stdout
  assert "| cweval all secure-pass@1 % | 100.0 | 100.0 |" in out.stdout
  assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  """A random tiny Llama saved as an HF folder with a tokenizer trained on eval prompts and the fixture."""
  root = tmp_path_factory.mktemp("ckpt")
  texts = [json.loads(line)["prompt"] for line in open(FIXTURE, encoding="utf-8")]
  if EVAL_DIR:
    texts += [it.prompt for it in evaluate.load_shared(EVAL_DIR, "cweval", "test")]
  tok = tokenizer_lib.train_tokenizer(texts, tokenizer_lib.min_vocab_size(texts) + 200, root / "tok.model")
  cfg = llama.LlamaConfig.tiny(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                               ffn_dim=64, max_seq_len=512)
  rng = np.random.default_rng(0)  # numpy init: jitting init_params costs ~15 s on 2 busy cores
  params = jax.tree_util.tree_map_with_path(
      lambda path, s: (np.ones(s.shape, s.dtype) if path[-1].key == "scale"
                       else rng.normal(0.0, 0.02, s.shape).astype(s.dtype)),
      jax.eval_shape(lambda k: llama.init_params(cfg, k), jax.random.key(0)))
  export = root / "export"
  convert.save_hf_checkpoint(params, cfg, export)
  shutil.copy(root / "tok.model", export / "tokenizer.model")
  return str(export)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="checkpoint folder .* does not exist"):
    evaluate.evaluate_checkpoint(tmp_path / "nope", {}, StubPool())
  with pytest.raises(FileNotFoundError, match="tokenizer.model"):
    evaluate.load_model(tmp_path)


@needs_eval
def test_evaluate_checkpoint_end_to_end(tiny_checkpoint, pool, tmp_path):
  items = evaluate.load_benchmarks(EVAL_DIR, "test", ["cweval"], limit=3)
  long_item = evaluate.EvalItem("cweval", items["cweval"][0].task, "x = 1\n" * 2000, {})
  items["cweval"].append(long_item)  # longer than the 512-token context: a counted skip
  decoding = evaluate.Decoding.named("sample", seed=3, max_new_tokens=16, batch_size=4)
  workdir = os.path.dirname(tiny_checkpoint)  # a trainer workdir: the model is in its export/
  result = evaluate.evaluate_checkpoint(workdir, items, pool, decoding)
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
  evaluate.write_json(result, tmp_path / "run.json")
  assert evaluate.read_json(tmp_path / "run.json")["benchmarks"]["cweval"]["metrics"] == bench["metrics"]


def test_node_probe(tiny_checkpoint, pool):
  cfg, params, tok = evaluate.load_model(tiny_checkpoint)
  _, nodes = data.load_nodes([FIXTURE])
  nodes = nodes[:6]
  # The jitted, batched mean log-prob equals a plain forward over one sequence.
  fixed, vuln, start = evaluate.probe_pair(tok, nodes[0], 128)
  assert len(fixed) <= 128 and fixed[0] == tok.bos_id
  logits, _ = llama.forward(params, cfg, jnp.asarray(fixed[None]), jnp.arange(len(fixed))[None])
  expect = float(np.mean(np.asarray(objective.token_logps(logits, jnp.asarray(fixed[None])))[0, start:]))
  got = evaluate.mean_logps(params, cfg, [vuln, fixed], [start, start], 128, 4, tok.pad_id)
  assert got[1] == pytest.approx(expect, abs=1e-5)
  out = evaluate.node_probe(params, cfg, tok, nodes, pool, evaluate.Decoding.named("sample", max_new_tokens=16),
                            max_len=256)
  assert out["nodes"] == 6 and out["scored"] + out["skipped_boundary"] == 6 and out["samples"] == 6
  assert 0.0 <= out["preference_accuracy"] <= 1.0 and 0.0 <= out["parse_rate"] <= 1.0
