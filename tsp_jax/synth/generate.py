"""The generator: families -> deterministic splits of task records in the shared-data schema.

    python -m tsp_jax.synth --out=DIR --seed=S [--train=3000 --dev=200 --test_per_subset=300]

Writes (under DIR/data/synth/ and DIR/eval/synth/) `pretrain.jsonl` (every family, one solution per task: vulnerable with probability `vuln_rate`),
`train.jsonl` / `dev.jsonl` (alignment data: seen families, training templates; each record with a secure and a
vulnerable reference, so its risk nodes come from their diff) and `test.jsonl` (subsets `seen`: new instances of
training templates of seen families, `unseen_family`: families only pre-training saw, `new_template`: templates
nobody trained on). No prompt occurs in two splits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

from tsp_jax.synth import core
from tsp_jax.synth.families import FAMILIES

SPLITS = ("pretrain", "train", "dev", "test")
SUBSETS = ("seen", "unseen_family", "new_template")
PYTEST_INI = "[pytest]\nmarkers =\n    functionality: functional tests\n    security: security tests\n"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to generate; the same settings and seed give the same files."""
  seed: int = 0
  train: int = 3000
  dev: int = 200
  test_per_subset: int = 300
  pretrain: int = 6000
  vuln_rate: float = 0.6
  fresh_names: float = 0.5  # share of argument / local names drawn fresh from the word pools (`core.Names`)
  unseen: tuple[str, ...] = ()  # families only pre-training sees (default: `default_unseen`)


# Families only pre-training sees: three judged by executable tests, one by the static composite.
DEFAULT_UNSEEN = ("deserialization", "regex_injection", "jwt_verification", "insecure_tempfile")


def default_unseen() -> tuple[str, ...]:
  """The `DEFAULT_UNSEEN` families that are registered."""
  names = {f.name for f in FAMILIES}
  return tuple(n for n in DEFAULT_UNSEEN if n in names)


def new_templates(family: core.Family) -> tuple[str, ...]:
  """The templates of a family nobody trains on: its last one, when it has three or more."""
  return (family.templates[-1].__name__,) if len(family.templates) >= 3 else ()


def record(inst: core.Instance, split: str, index: int, seen: bool, rng: random.Random, subset: str | None = None,
           solution: str | None = None) -> dict[str, Any]:
  """The JSONL record of an instance. `solution` ("secure" | "vulnerable", pre-training) keeps one reference."""
  secure, vulnerable = inst.program(rng.choice(inst.secure)), inst.program(rng.choice(inst.vulnerable))
  static = inst.judge == core.JUDGE_STATIC
  out = {
      "id": f"synth/{split}/{inst.family}/{inst.template}/{index}", "source": "synth", "cwe": inst.cwe,
      "language": "python", "split": split, "cwe_seen_in_train": seen, "prompt": inst.prompt,
      "functional_tests": inst.tests, "security_tests": None if static else inst.tests,
      "functional_test_args": ["-m", "functionality"], "security_test_args": [] if static else ["-m", "security"],
      "pytest_ini": PYTEST_INI, "task_module": core.TASK_MODULE, "test_module": f"test_{core.TASK_MODULE}",
      "entry_point": inst.entry_point, "security_judge": inst.judge, "family": inst.family,
      "template": inst.template,
      "reference_secure": None if solution == "vulnerable" else secure,
      "reference_vulnerable": None if solution == "secure" else vulnerable,
  }
  if subset is not None:
    out["subset"] = subset
  return out


def _draw(templates: Sequence[core.Template], n: int, rng: random.Random, taken: set[str]) -> Iterator[core.Instance]:
  """n instances with prompts not in `taken` (added to it), cycling over the templates in a seeded order."""
  made, misses = 0, 0
  while made < n:
    inst = rng.choice(templates)(rng)
    if inst.prompt in taken:
      misses += 1
      if misses > 50 * n + 1000:
        raise ValueError(f"cannot draw {n} distinct prompts from {[t.__name__ for t in templates]}: the "
                         "templates' surface pools are too small")
      continue
    taken.add(inst.prompt)
    made += 1
    yield inst


def generate(s: Settings) -> dict[str, list[dict[str, Any]]]:
  """The records of every split (see the module docstring)."""
  unseen = set(s.unseen or default_unseen())
  unknown = unseen - {f.name for f in FAMILIES}
  if unknown:
    raise ValueError(f"unknown unseen families {sorted(unknown)}; families: {[f.name for f in FAMILIES]}")
  if not 0.0 <= s.fresh_names <= 1.0:
    raise ValueError(f"fresh_names must be in [0, 1], got {s.fresh_names}")
  rng = core.TaskRng(s.seed)
  rng.fresh_names = s.fresh_names
  held = {f.name: new_templates(f) for f in FAMILIES}
  trained = {f.name: [t for t in f.templates if t.__name__ not in held[f.name]] for f in FAMILIES}
  seen_families = [f for f in FAMILIES if f.name not in unseen]
  taken: set[str] = set()
  out: dict[str, list[dict[str, Any]]] = {k: [] for k in SPLITS}
  # Test first, so that no training prompt can be a test prompt.
  pools = {"seen": [t for f in seen_families for t in trained[f.name]],
           "unseen_family": [t for f in FAMILIES if f.name in unseen for t in trained[f.name]],
           "new_template": [t for f in FAMILIES for t in f.templates if t.__name__ in held[f.name]]}
  for subset in SUBSETS:
    if pools[subset]:
      for i, inst in enumerate(_draw(pools[subset], s.test_per_subset, rng, taken)):
        out["test"].append(record(inst, "test", i, inst.family not in unseen, rng, subset))
  for split, n in (("dev", s.dev), ("train", s.train)):
    for i, inst in enumerate(_draw(pools["seen"], n, rng, taken)):
      out[split].append(record(inst, split, i, True, rng))
  every = [t for f in FAMILIES for t in trained[f.name]]
  for i, inst in enumerate(_draw(every, s.pretrain, rng, taken)):
    solution = "vulnerable" if rng.random() < s.vuln_rate else "secure"
    out["pretrain"].append(record(inst, "pretrain", i, inst.family not in unseen, rng, solution=solution))
  return out


def write(records: dict[str, list[dict[str, Any]]], out_dir: str | os.PathLike) -> dict[str, str]:
  """`<out_dir>/data/synth/<split>.jsonl` (pretrain, train, dev) and `<out_dir>/eval/synth/test.jsonl`, laid out
  like ../shared so that `--config.data_dir=<out_dir>/data --config.eval_dir=<out_dir>/eval` read them; returns the
  paths."""
  paths = {}
  for split, rows in records.items():
    folder = os.path.join(out_dir, "eval" if split == "test" else "data", "synth")
    os.makedirs(folder, exist_ok=True)
    paths[split] = os.path.join(folder, f"{split}.jsonl")
    with open(paths[split], "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
  return paths
