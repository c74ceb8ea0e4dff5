"""The task generator: deterministic from its seed, disjoint splits, records the loaders read, and references that
the verifier judges right (a sample here; `python -m tsp_jax.synth.check` checks every template at more draws)."""

import ast
import builtins
import dataclasses
import json
import random

import pytest

from tsp_jax import data
from tsp_jax.synth import check, core, generate
from tsp_jax.synth.families import FAMILIES
from tsp_jax.verify import types

BUILTINS = frozenset(dir(builtins))
SMALL = generate.Settings(seed=3, train=60, dev=10, test_per_subset=12, pretrain=80)


@pytest.fixture(scope="module")
def records():
  return generate.generate(SMALL)


def test_families_are_well_formed():
  assert len({f.name for f in FAMILIES}) == len(FAMILIES)
  for family in FAMILIES:
    for template in family.templates:
      a, b = template(random.Random(7)), template(random.Random(7))
      assert a == b, f"{family.name}/{template.__name__} is not deterministic"
      assert (a.family, a.template, a.cwe) == (family.name, template.__name__, family.cwe)
      assert len(a.secure) >= 2 and len(a.vulnerable) >= 2 and not set(a.secure) & set(a.vulnerable)
      assert a.prompt.endswith("\n") and f"def {a.entry_point}(" in a.prompt
      for b_ in a.secure + a.vulnerable:
        assert 5 <= len(a.program(b_).splitlines()) <= 30 and b_.startswith("    ")
      assert (a.judge == core.JUDGE_STATIC) == ("@pytest.mark.security" not in a.tests)


def test_same_seed_same_files_other_seed_other_tasks(records, tmp_path):
  again = generate.generate(SMALL)
  assert json.dumps(again, sort_keys=True) == json.dumps(records, sort_keys=True)
  other = generate.generate(dataclasses.replace(SMALL, seed=4))
  assert [r["prompt"] for r in other["train"]] != [r["prompt"] for r in records["train"]]
  paths = generate.write(records, tmp_path)
  assert sum(1 for _ in open(paths["train"], encoding="utf-8")) == SMALL.train


def test_splits_are_disjoint_and_sized(records):
  prompts = {split: [r["prompt"] for r in rows] for split, rows in records.items()}
  for split, ps in prompts.items():
    assert len(ps) == len(set(ps)), f"{split} repeats a prompt"
  for a in generate.SPLITS:
    for b in generate.SPLITS:
      if a < b:
        assert not set(prompts[a]) & set(prompts[b]), f"{a} and {b} share prompts"
  assert (len(records["train"]), len(records["dev"]), len(records["pretrain"])) == (60, 10, 80)
  unseen = set(generate.default_unseen())
  assert not {r["family"] for r in records["train"] + records["dev"]} & unseen  # alignment data: seen only
  for r in records["test"]:
    assert r["cwe_seen_in_train"] == (r["family"] not in unseen)
    assert (r["subset"] == "unseen_family") == (r["family"] in unseen and r["subset"] != "new_template")
  held = {t for f in FAMILIES for t in generate.new_templates(f)}
  assert not {r["template"] for split in ("pretrain", "train", "dev") for r in records[split]} & held
  # Pre-training: one solution per task, vulnerable at about vuln_rate.
  sols = [r["reference_vulnerable"] is not None for r in records["pretrain"]]
  assert all((r["reference_secure"] is None) != (r["reference_vulnerable"] is None) for r in records["pretrain"])
  assert 0.4 < sum(sols) / len(sols) < 0.8


def test_the_loaders_read_the_records(records, tmp_path):
  generate.write({"train": records["train"]}, tmp_path)
  recs, nodes = data.load_nodes(data.split_files(tmp_path / "data", "train"))
  assert len(recs) == SMALL.train and len(nodes) >= SMALL.train  # every task has a decision node
  r = recs[0]
  assert data.model_prompt(r) == r.prompt and r.golden.startswith("    ")  # the prompt, then its completion
  assert r.task.tests == types.TESTS_CWEVAL and r.task.entry_point in r.prompt
  node = next(n for n in nodes if n.record_id == r.id)
  assert node.prefix.startswith(r.prompt) and node.fixed_lines != node.vulnerable_lines


@pytest.mark.parametrize("index", range(len(FAMILIES)), ids=[f.name for f in FAMILIES])
def test_references_are_judged_right(index, pool):
  """One template per family here (a different one for each family); every template: `tsp_jax.synth.check`."""
  family = FAMILIES[index]
  template = family.templates[index % len(family.templates)]
  assert check.check([template(random.Random(11))], pool) == []


def test_the_evaluation_reads_the_test_split_and_judges_its_references(records, tmp_path, pool):
  from tsp_jax import evaluation  # pylint: disable=import-outside-toplevel
  generate.write({"test": records["test"]}, tmp_path)
  items = evaluation.load_benchmarks(tmp_path / "eval", "test", ["synth"], limit=6)
  assert len(items["synth"]) == 6 and items["synth"][0].prompt == records["test"][0]["prompt"]
  for kind, spr in (("secure", 1.0), ("vulnerable", 0.0)):
    result = evaluation.evaluate_reference(items, kind, pool)["benchmarks"]["synth"]["metrics"]
    assert result["spr_at_1"] == spr and result["func_pass_at_1"] == 1.0


def _function(program: str, entry_point: str) -> ast.FunctionDef:
  """The entry point's definition in a program."""
  return next(n for n in ast.parse(program).body if isinstance(n, ast.FunctionDef) and n.name == entry_point)


def _arguments(prompt: str, entry_point: str) -> list[str]:
  """The argument names of a prompt's signature, in order."""
  fn = _function(prompt + "    pass\n", entry_point)
  return [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]


def _bound_and_read(inst: core.Instance, body: str) -> tuple[set[str], set[str]]:
  """(names the program binds: module level, arguments, anything the body stores, imports or catches; names the
  body reads)."""
  tree = ast.parse(inst.program(body))
  bound = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
      bound.add(node.id)
    elif isinstance(node, ast.arg):
      bound.add(node.arg)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      bound.add(node.name)
    elif isinstance(node, ast.ExceptHandler) and node.name:
      bound.add(node.name)
  fn = _function(inst.program(body), inst.entry_point)
  read = {n.id for stmt in fn.body for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
  return bound, read


def _positions(instances: list[core.Instance]) -> list[set[str]]:
  """The distinct names at each argument position of the instances' signatures."""
  sigs = [_arguments(inst.prompt, inst.entry_point) for inst in instances]
  return [{s[i] for s in sigs if len(s) > i} for i in range(max(map(len, sigs)))]


def test_argument_names_come_from_large_pools():
  """A model must copy argument names from the signature: at every argument position of every template, the train
  split (and direct draws, for the templates it lacks) shows many distinct names, so no name can be memorized."""
  train = generate.generate(dataclasses.replace(generate.Settings(), dev=0, test_per_subset=0, pretrain=0))["train"]
  by_template = {}
  for r in train:
    by_template.setdefault(r["template"], []).append(r)
  counts = {}
  for template, rows in by_template.items():
    sigs = [_arguments(r["prompt"], r["entry_point"]) for r in rows]
    counts[template] = min(len({s[i] for s in sigs if len(s) > i}) for i in range(max(map(len, sigs))))
  assert len(counts) >= 20 and min(counts.values()) >= 20, counts
  rng = random.Random(5)
  direct = {f"{f.name}/{t.__name__}": min(map(len, _positions([t(rng) for _ in range(120)])))
            for f in FAMILIES for t in f.templates}
  assert min(direct.values()) >= 20, direct


def test_every_body_reads_the_arguments_and_only_bound_names():
  """Each secure reference body uses every argument of the signature (so the names must be copied; a vulnerable
  body may skip one, e.g. the key of a token it never verifies, but some vulnerable body reads each), and no
  reference reads a name the program does not bind (the failure the drawn names guard against)."""
  rng = random.Random(9)
  for family in FAMILIES:
    for template in family.templates:
      for _ in range(40):
        inst = template(rng)
        args = _arguments(inst.prompt, inst.entry_point)
        assert len(set(args)) == len(args), inst.prompt
        read_by_vulnerable = set()
        for b in inst.secure + inst.vulnerable:
          bound, read = _bound_and_read(inst, b)
          where = f"{family.name}/{template.__name__}:\n{inst.program(b)}"
          assert not read - bound - BUILTINS, f"unbound {read - bound - BUILTINS} in {where}"
          if b in inst.secure:
            assert set(args) <= read, f"unused arguments {set(args) - read} in {where}"
          else:
            read_by_vulnerable |= read
        assert set(args) <= read_by_vulnerable, f"{family.name}/{template.__name__}: {inst.prompt}"


def test_fresh_names_zero_keeps_the_templates_own_names():
  def distinct_first_args(fresh: float) -> int:
    recs = generate.generate(dataclasses.replace(SMALL, pretrain=600, fresh_names=fresh))["pretrain"]
    return len({r["prompt"].split("def ", 1)[1].split("(", 1)[1].split(":", 1)[0] for r in recs})
  assert distinct_first_args(0.0) < distinct_first_args(1.0) / 2
  with pytest.raises(ValueError, match="fresh_names"):
    generate.generate(dataclasses.replace(SMALL, fresh_names=1.5))
