"""From a prompt and a model's continuation to the program the verifier checks, and node tasks for training.

A continuation runs until EOS or the token budget; the model may go on past the function it was asked to
write. `assemble_program` keeps the continuation up to the end of that function: the first non-blank line
indented at or left of the function's `def` (a new top-level statement, decorator or definition).

A branch that ran out of tokens inside the function (`truncated=True`) stops mid-line or mid-block, which would
make every such branch a syntax error. `close_truncated` drops the unfinished last line and closes what the
budget left open (a block header gets a `pass` body; a statement whose brackets are still open loses its lines,
at most `MAX_DROPPED_LINES`), so the verifier judges the code the branch did write. An error anywhere else
stays an error.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import textwrap
import warnings
from typing import Protocol, Sequence

from tsp_jax.verify.types import MODE_CWE, MODE_STRICT, TESTS_NONE, Task

_DEF = re.compile(r"^([ \t]*)(?:async[ \t]+)?def[ \t]")


class NodeLike(Protocol):
  """What `node_task` reads of a training risk node (tsp_jax.data.Node)."""
  record_id: str
  cwe: str
  line: int
  fixed_lines: Sequence[str]
  vulnerable_lines: Sequence[str]


def normalize_code(code: str) -> str:
  """LF line ends, common indentation removed (methods become top-level functions), one trailing newline."""
  code = code.replace("\r\n", "\n").replace("\r", "\n")
  return textwrap.dedent(code).rstrip("\n") + "\n"


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


MAX_DROPPED_LINES = 4
# SyntaxError messages of code that is unfinished rather than wrong: the statement at the error's line opened
# something (a bracket, a triple-quoted string) that the token budget never let it close.
_UNCLOSED = ("was never closed", "unterminated triple-quoted string")


def _syntax_error(code: str) -> SyntaxError | None:
  """The error `ast.parse` raises on `code`, or None when it parses."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      ast.parse(code)
    return None
  except SyntaxError as e:
    return e
  except (ValueError, RecursionError, MemoryError):
    return SyntaxError("unparseable")


def close_truncated(program: str, keep: int) -> str:
  """`program` (whose text after character `keep` is a branch cut by the token budget) made parseable.

  Drops the unfinished last line; a statement whose bracket or triple-quoted string is still open is dropped
  from its first line; a trailing block header gets a `pass` body. At most `MAX_DROPPED_LINES` such repairs, and
  never text before `keep` (the prompt). Any other error is the branch's own: `program` is returned unchanged.
  """
  if _syntax_error(program) is None:
    return program
  head = program[:keep]
  first_line = head.count("\n") + 1  # 1-based line number of the branch's first line
  lines = program[keep:].split("\n")[:-1]  # without the line the budget cut
  for _ in range(MAX_DROPPED_LINES + 1):
    code = head + "".join(line + "\n" for line in lines)
    err = _syntax_error(code)
    if err is None:
      return code
    last = next((line for line in reversed(code.split("\n")) if line.strip()), "")
    if last.rstrip().endswith(":"):
      closed = code + " " * (_indent_width(last) + 4) + "pass\n"
      if _syntax_error(closed) is None:
        return closed
    if not (any(m in str(err.msg) for m in _UNCLOSED) and err.lineno and err.lineno >= first_line):
      return program
    lines = lines[:err.lineno - first_line]
  return program


def assemble_program(prefix: str, continuation: str, truncated: bool = False) -> str:
  """The program a verifier checks: the prefix and the continuation cut at the end of the function.

  `truncated`: the continuation ran out of tokens (no stop token); if it did so inside the function, the
  program is closed by `close_truncated`.
  """
  cut = cut_continuation(prefix, continuation)
  program = prefix + cut
  if truncated and cut == continuation:  # the function had not ended when the budget did
    return close_truncated(program, len(prefix))
  return program


def node_task(node: NodeLike, node_offset: int, strict: bool = False, record_task: Task | None = None) -> Task:
  """The verification task of a branch generated at a training risk node.

  Args:
    node: the risk node (its record, CWE and the patch's fixed / vulnerable hunk lines).
    node_offset: character offset in the assembled program where the branch (the node line) begins.
    strict: any static finding counts (else only those relevant to the node's CWE).
    record_task: the task of the node's record; when it has executable tests (generated tasks, CWEval-style
      records) the branch's program runs them, as a test-time program would.
  """
  fields = dict(id=f"{node.record_id}#L{node.line}", cwe=node.cwe, mode=MODE_STRICT if strict else MODE_CWE,
                node_offset=node_offset, fixed_lines=tuple(node.fixed_lines),
                vulnerable_lines=tuple(node.vulnerable_lines))
  if record_task is not None and record_task.tests != TESTS_NONE:
    return dataclasses.replace(record_task, **fields)
  return Task(**fields)
