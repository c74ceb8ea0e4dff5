"""From a prompt and a model's continuation to the program the verifier checks, and node tasks for training.

A continuation runs until EOS or the token budget; the model may go on past the function it was asked to
write. `assemble_program` keeps the continuation up to the end of that function: the first non-blank line
indented at or left of the function's `def` (a new top-level statement, decorator or definition).
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence

from tsp_jax.verify.types import MODE_CWE, MODE_STRICT, Task

_DEF = re.compile(r"^([ \t]*)(?:async[ \t]+)?def[ \t]")


class NodeLike(Protocol):
  """What `node_task` reads of a training risk node (tsp_jax.data.Node)."""
  record_id: str
  cwe: str
  line: int
  fixed_lines: Sequence[str]
  vulnerable_lines: Sequence[str]


def _indent_width(line: str) -> int:
  return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def function_indent(prefix: str) -> int | None:
  """Indentation (columns) of the function the prefix is writing: its outermost `def`, None without one."""
  indents = [_indent_width(m.group(1)) for line in prefix.split("\n") if (m := _DEF.match(line))]
  return min(indents) if indents else None


def cut_continuation(prefix: str, continuation: str) -> str:
  """`continuation` up to (excluding) its first line that leaves the prefix's function (see module doc)."""
  indent = function_indent(prefix)
  if indent is None:
    return continuation
  pos = 0
  if prefix and not prefix.endswith("\n"):  # the first line of the continuation finishes the prefix's last line
    newline = continuation.find("\n")
    if newline < 0:
      return continuation
    pos = newline + 1
  while pos < len(continuation):
    end = continuation.find("\n", pos)
    end = len(continuation) if end < 0 else end + 1
    line = continuation[pos:end]
    if line.strip() and _indent_width(line) <= indent:
      return continuation[:pos]
    pos = end
  return continuation


def assemble_program(prefix: str, continuation: str) -> str:
  """The program a verifier checks: the prefix and the continuation cut at the end of the function."""
  return prefix + cut_continuation(prefix, continuation)


def node_task(node: NodeLike, node_offset: int, strict: bool = False) -> Task:
  """The verification task of a branch generated at a training risk node.

  Args:
    node: the risk node (its record, CWE and the patch's fixed / vulnerable hunk lines).
    node_offset: character offset in the assembled program where the branch (the node line) begins.
    strict: any static finding counts (else only those relevant to the node's CWE).
  """
  return Task(id=f"{node.record_id}#L{node.line}", cwe=node.cwe, mode=MODE_STRICT if strict else MODE_CWE,
              node_offset=node_offset, fixed_lines=tuple(node.fixed_lines),
              vulnerable_lines=tuple(node.vulnerable_lines))
