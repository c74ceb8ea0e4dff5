"""What a generated task is, and the pieces every family renders it from.

A family (one CWE) holds templates (one purpose each: "look up a user", "archive a report"); a template is a
function `(rng) -> Instance` that draws the surface (identifiers, literals, docstring wording, argument order,
benign extra statements) and returns the prompt (imports, signature, docstring), >= 2 secure and >= 2
vulnerable bodies, and one pytest module whose `functionality` tests every body passes and whose `security`
tests every vulnerable body fails (or, where running cannot show the flaw, `security=None`: the static
composite judges the task).
"""

from __future__ import annotations

import dataclasses
import random
import textwrap
from collections.abc import Callable, Sequence

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
