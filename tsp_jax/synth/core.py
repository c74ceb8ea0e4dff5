"""What a generated task is, and the pieces every family renders it from.

A family (one CWE) holds templates (one purpose each: "look up a user", "archive a report"); a template is a
function `(rng) -> Instance` that draws the surface (identifiers, literals, docstring wording, argument order,
benign extra statements) and returns the prompt (imports, signature, docstring), >= 2 secure and >= 2
vulnerable bodies, and one pytest module whose `functionality` tests every body passes and whose `security`
tests every vulnerable body fails (or, where running cannot show the flaw, `security=None`: the static
composite judges the task).
"""

from __future__ import annotations

import builtins
import dataclasses
import keyword
import random
import textwrap
from collections.abc import Callable, Iterable, Sequence

JUDGE_TESTS, JUDGE_STATIC = "unit_test", "static"

# Word pools for identifiers and literals: large enough that a model must copy names from the signature.
NOUNS = ("user", "account", "member", "client", "customer", "patient", "order", "invoice", "ticket", "report",
         "record", "entry", "item", "product", "asset", "device", "session", "profile", "note", "comment",
         "message", "article", "post", "review", "booking", "payment", "shipment", "course", "student", "employee",
         "vendor", "project", "task", "event", "file", "document", "photo", "album", "playlist", "track")
ADJECTIVES = ("active", "pending", "archived", "recent", "primary", "shared", "public", "internal", "daily",
              "monthly", "draft", "final", "local", "remote", "new", "old", "main", "backup", "temp", "cached")
VERBS = ("get", "fetch", "load", "find", "read", "lookup", "query", "select", "retrieve", "collect")
FIELDS = ("name", "email", "title", "status", "owner", "label", "city", "country", "code", "kind", "category",
          "region", "tag", "slug", "author", "handle", "phone", "team", "level", "stage")


@dataclasses.dataclass(frozen=True)
class Instance:
  """One rendered task: the prompt the model completes and its reference bodies and tests."""
  family: str
  template: str
  cwe: str
  entry_point: str
  prompt: str  # imports + signature + docstring; ends with a newline, the body follows
  secure: tuple[str, ...]  # function bodies (indented 4 spaces), >= 2
  vulnerable: tuple[str, ...]  # >= 2
  tests: str  # pytest module: `from {TASK_MODULE} import <entry_point>`; `functionality` / `security` markers
  judge: str = JUDGE_TESTS  # JUDGE_STATIC: no security tests, the static composite decides

  def program(self, body: str) -> str:
    """The whole program of a body."""
    return self.prompt + body


Template = Callable[[random.Random], Instance]


@dataclasses.dataclass(frozen=True)
class Family:
  """The templates of one CWE."""
  name: str
  cwe: str
  templates: tuple[Template, ...]


TASK_MODULE = "task"  # the program is written as task.py; the tests import it


# Names a drawn identifier must never take: keywords, builtins, and every module or imported name a prompt or a body
# of any template binds (so that an argument never shadows what a body uses).
IMPORTED = ("ast", "base64", "builtins", "collections", "cryptography", "defusedxml", "hashlib", "hmac", "html", "io",
            "jinja2", "json", "jwt", "logging", "markupsafe", "operator", "os", "pathlib", "pickle", "random", "re",
            "secrets", "shlex", "shutil", "socket", "sqlite3", "ssl", "stat", "string", "subprocess", "sys", "tarfile",
            "tempfile", "textwrap", "time", "typing", "urllib", "uuid", "xml", "yaml", "zipfile", "pytest",
            "ET", "minidom", "Path", "urlparse", "urlsplit", "Callable", "TypeVar", "T", "IO", "Fernet", "hashes",
            "padding", "Cipher", "algorithms", "modes", "PBKDF2HMAC", "SandboxedEnvironment", "AUDIENCE", "task")
RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins)) | frozenset(IMPORTED)


class TaskRng(random.Random):
  """The generator's random stream; `fresh_names` (the share of names `Names` draws fresh rather than from a
  template's natural options) rides along with it to every template."""
  fresh_names: float = 0.5


class Names:
  """The identifier names of one instance (arguments and body locals), drawn so that a model must copy them.

  `pick(options)` returns one of the template's natural options with probability `natural` (default
  1 - `TaskRng.fresh_names` of the generator's rng: 1/2),
  otherwise a fresh snake_case name from the word pools (`{adjective}_{noun}` or `{noun}_{field}`: 1,600
  combinations). It never returns a name already picked or reserved in this instance, a keyword, a builtin or a
  name in `RESERVED`; every draw comes from the instance's rng, so the names are deterministic.

      names = core.Names(rng, reserved=("cur", "query"))  # the fixed names the bodies use
      value = names.pick(("value", "wanted", "key"))
  """

  def __init__(self, rng: random.Random, reserved: Iterable[str] = (), natural: float | None = None):
    if natural is None:  # the generator's setting (`TaskRng.fresh_names`), else 1/2
      natural = 1.0 - getattr(rng, "fresh_names", TaskRng.fresh_names)
    self.rng, self.natural = rng, natural
    self.used: set[str] = set(reserved)

  def free(self, name: str) -> bool:
    """Whether `name` may still be drawn: an identifier that is not taken, reserved, a keyword or a builtin."""
    return name.isidentifier() and name not in self.used and name not in RESERVED

  def reserve(self, *names: str) -> None:
    """Mark fixed names (locals every body uses, module-level names of the prompt) as taken."""
    self.used.update(names)

  def pick(self, options: Sequence[str] = ()) -> str:
    """One of the free `options` with probability `natural` (always a fresh name when none is free), else a
    fresh name; the result is taken from now on."""
    free = [o for o in dict.fromkeys(options) if self.free(o)]
    name = self.rng.choice(free) if free and self.rng.random() < self.natural else self.fresh()
    self.used.add(name)
    return name

  def fresh(self) -> str:
    """A free name built from the word pools; taken from now on."""
    while True:
      if self.rng.random() < 0.5:
        name = f"{self.rng.choice(ADJECTIVES)}_{self.rng.choice(NOUNS)}"
      else:
        name = f"{self.rng.choice(NOUNS)}_{self.rng.choice(FIELDS)}"
      if self.free(name):
        self.used.add(name)
        return name


def snake(*words: str) -> str:
  return "_".join(w for w in words if w)


def pick(rng: random.Random, pool: Sequence[str], k: int = 1, exclude: Sequence[str] = ()) -> list[str]:
  """k distinct words of `pool` not in `exclude`."""
  return rng.sample([w for w in pool if w not in exclude], k)


def body(code: str) -> str:
  """A function body from a dedented block: every line indented 4 spaces, one trailing newline."""
  return textwrap.indent(textwrap.dedent(code).strip("\n"), "    ") + "\n"


def docstring(rng: random.Random, summaries: Sequence[str], details: Sequence[str] = ()) -> str:
  """A docstring block (indented 4) with one of the summary wordings and the detail lines."""
  lines = [rng.choice(summaries)] + ([""] + list(details) if details else [])
  return '    """' + "".join(("    " + line if line and i else line) + "\n" for i, line in enumerate(lines)) + \
      '    """\n'


def test_module(entry_point: str, functional: str, security: str | None) -> str:
  """A pytest module importing the entry point, with the marked test functions."""
  head = f"import pytest\n\nfrom {TASK_MODULE} import {entry_point}\n\n\n"
  parts = [textwrap.dedent(functional).strip("\n")]
  if security:
    parts.append(textwrap.dedent(security).strip("\n"))
  return head + "\n\n\n".join(parts) + "\n"
