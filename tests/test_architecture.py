"""The package's dependency rules, read from every module's imports: one way down, no `configs`, a jax-free
verifier, a self-contained search, and short top-layer modules."""

import ast
import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Layers, lowest first: a module imports only modules of lower layers and of its own subpackage.
LAYERS = (
    ("tsp_jax.model", "tsp_jax.chips"),
    ("tsp_jax.search", "tsp_jax.objective", "tsp_jax.verify", "tsp_jax.metrics_log", "tsp_jax.distributed"),
    ("tsp_jax.data", "tsp_jax.tokenizer", "tsp_jax.train_step"),
    ("tsp_jax.pairs", "tsp_jax.config", "tsp_jax.synth"),
    ("tsp_jax.packing",),
    ("tsp_jax.sources", "tsp_jax.batches"),
    ("tsp_jax.train", "tsp_jax.evaluation", "tsp_jax.plan"),
    ("tsp_jax.evaluate", "tsp_jax.demo", "tsp_jax.bench"),
    ("tsp_jax.experiment",),
)
JAX_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax", "chex", "grain")
MAX_LINES = {"tsp_jax/train.py": 300, "tsp_jax/evaluate.py": 300, "tsp_jax/evaluation/*.py": 300}


def _module(path: str) -> str:
  rel = os.path.relpath(path, REPO)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


MODULES = {_module(p): p for p in glob.glob(os.path.join(REPO, "tsp_jax", "**", "*.py"), recursive=True)}


def imports(path: str) -> set[str]:
  """Every module name an `import` or `from ... import` of the file names (a name imported from a package counts
  as the submodule when it is one)."""
  out = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
  return out


def layer(module: str) -> int:
  for i, names in enumerate(LAYERS):
    if any(module == n or module.startswith(n + ".") for n in names):
      return i
  raise AssertionError(f"{module} is in no layer of tests/test_architecture.py")


def unit(module: str) -> str:
  """The subpackage (or top-level module) a module belongs to."""
  parts = module.split(".")
  return ".".join(parts[:2])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "tsp_jax"))
def test_imports_run_one_way(module):
  for name in imports(MODULES[module]):
    if name.startswith("configs"):
      raise AssertionError(f"{module} imports the checkout's {name} (pass configs by --config instead)")
    if not name.startswith("tsp_jax.") or unit(name) == unit(module):
      continue
    assert layer(name) < layer(module), f"{module} (layer {layer(module)}) imports {name} (layer {layer(name)})"


def test_the_rules_the_layers_encode():
  assert all(not n.startswith("tsp_jax.train") for m in MODULES if unit(m) in ("tsp_jax.evaluation",
                                                                              "tsp_jax.evaluate")
             for n in imports(MODULES[m]))
  for m in (m for m in MODULES if m.startswith("tsp_jax.search")):
    assert {unit(n) for n in imports(MODULES[m]) if n.startswith("tsp_jax.")} <= {"tsp_jax.search", "tsp_jax.model"}
  for m in (m for m in MODULES if m.startswith("tsp_jax.verify")):
    names = imports(MODULES[m])
    assert not {n for n in names if n.split(".")[0] in JAX_PACKAGES}, m
    assert {unit(n) for n in names if n.startswith("tsp_jax.")} <= {"tsp_jax.verify"}, m


def test_the_verifier_loads_without_jax():
  code = "import sys, tsp_jax.verify, tsp_jax.verify.detection; print(sorted({m.split('.')[0] for m in sys.modules}))"
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
  assert not set(eval(out)) & set(JAX_PACKAGES), out  # pylint: disable=eval-used


@pytest.mark.parametrize("pattern, limit", sorted(MAX_LINES.items()))
def test_top_layer_modules_stay_short(pattern, limit):
  paths = glob.glob(os.path.join(REPO, pattern))
  assert paths, pattern
  for path in paths:
    with open(path, encoding="utf-8") as f:
      assert sum(1 for _ in f) <= limit, f"{os.path.relpath(path, REPO)} is longer than {limit} lines"
