"""From a prompt and a model's continuation to the program the verifier checks, and node tasks for training.

A continuation runs until EOS or the token budget; the model may go on past the function it was asked to
write. `assemble_program` keeps the continuation up to the end of that function, by the program's language:
  python              the first non-blank line indented at or left of the function's `def` (a new top-level
                      statement, decorator or definition);
  c, cpp, go,         the `}` that closes every brace open (the prefix's and the continuation's), with the rest
  javascript          of its line when that is only `;`, `)`, `,` or a comment. Braces inside strings, character
                      literals, comments, C++ raw strings (R"d(...)d"), Go raw strings (`...`), JS template
                      literals (whose `${...}` holds code) and JS regular-expression literals do not count.

A branch that ran out of tokens inside the function (`truncated=True`) stops mid-line or mid-block, which would
make every such branch a syntax error. `close_truncated` drops the unfinished last line and closes what the
budget left open, so the verifier judges the code the branch did write. Python: a block header gets a `pass`
body; a statement whose brackets are still open loses its lines, at most `MAX_DROPPED_LINES`; an error anywhere
else stays an error. Brace languages: lines inside an unclosed string or open brackets are dropped (at most
`MAX_DROPPED_LINES`), an open block comment is closed, then every open brace.
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
PYTHON = "python"
BRACE_LANGUAGES = ("c", "cpp", "go", "javascript")
LANGUAGES = (PYTHON,) + BRACE_LANGUAGES


class NodeLike(Protocol):
  """What `node_task` reads of a training risk node (tsp_jax.data.Node; its `language`, python when absent)."""
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


def _cut_python(prefix: str, continuation: str) -> str:
  """`continuation` up to (excluding) its first line that leaves the prefix's `def` (see module doc)."""
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


def check_language(language: str) -> str:
  """`language` if the project knows it (`LANGUAGES`), else ValueError."""
  if language not in LANGUAGES:
    raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
  return language


CODE, LINE_COMMENT, BLOCK_COMMENT, STRING, RAW, TEMPLATE, REGEX = range(7)  # _BraceLexer.mode values
_CPP_RAW = re.compile(r'(?:^|[^\w])(?:u8|u|U|L)?R$')  # text before a '"' that opens a C++ raw string
# The last code character before a '/' that makes it a regular expression, not a division (JS).
_REGEX_AFTER = frozenset("(,=:[!&|?{};+-*%<>~^")
_REGEX_KEYWORDS = ("return", "typeof", "case", "do", "else", "in", "of", "void", "yield", "await")


class _BraceLexer:
  """Brace depth of C / C++ / Go / JavaScript text fed in pieces, outside strings, characters and comments.

  `depth`: open `{` in code; `brackets`: open `(` and `[`; `mode`: CODE or the literal / comment the text is in.
  A string, character or regular-expression literal ends at a newline even when unterminated (so one bad
  literal cannot swallow the rest of a function); block comments, raw strings and template literals span lines.
  """

  def __init__(self, language: str):
    self.language = check_language(language)
    self.depth = 0
    self.brackets = 0
    self.mode = CODE
    self.quote = ""  # STRING: its quote character; RAW: the text that ends it
    self.templates: list[int] = []  # JS: the depth of each open `${` (its `}` resumes the template literal)
    self._last = ""  # the last code character that is not blank (regex or division after it)
    self._word = ""  # the identifier or keyword that ends the code so far
    self._text = ""  # the code since the last newline (C++ raw string prefixes)

  def feed(self, text: str, stop_depth: int | None = None) -> int | None:
    """Reads `text`; with `stop_depth`, stops after the first code `}` that leaves `depth <= stop_depth` and
    returns the index just past it (None: read all of `text`)."""
    i, n = 0, len(text)
    while i < n:
      ch = text[i]
      nxt = text[i + 1] if i + 1 < n else ""
      if self.mode == LINE_COMMENT:
        if ch == "\n":
          self.mode = CODE
      elif self.mode == BLOCK_COMMENT:
        if ch == "*" and nxt == "/":
          self.mode, i = CODE, i + 1
      elif self.mode in (STRING, REGEX):
        if ch == "\\":
          i += 1
        elif ch == "\n" or (ch == self.quote and self.mode == STRING):
          self.mode = CODE
        elif self.mode == REGEX and ch == "[":
          self.quote = "]"  # inside a character class a '/' does not end the regex
        elif self.mode == REGEX and ch == self.quote:
          self.quote = "/" if ch == "]" else self.quote
          self.mode = CODE if ch == "/" else REGEX
      elif self.mode == RAW:
        if text.startswith(self.quote, i):
          self.mode, i = CODE, i + len(self.quote) - 1
      elif self.mode == TEMPLATE:
        if ch == "\\":
          i += 1
        elif ch == "`":
          self.mode = CODE
        elif ch == "$" and nxt == "{":
          self.templates.append(self.depth)
          self.depth += 1
          self.mode, i = CODE, i + 1
      else:
        i = self._code(text, i)
        if ch == "}" and self.mode == CODE and stop_depth is not None and self.depth <= stop_depth:
          return i + 1
      i += 1
    return None

  def _code(self, text: str, i: int) -> int:
    """Reads the code character at `i` (and what it opens); returns the index of the last character read."""
    ch, nxt = text[i], text[i + 1:i + 2]
    js = self.language == "javascript"
    if ch == "/" and nxt == "/":
      self.mode = LINE_COMMENT
      return i + 1
    if ch == "/" and nxt == "*":
      self.mode = BLOCK_COMMENT
      return i + 1
    if ch == "/" and js and (self._last in _REGEX_AFTER or not self._last or self._word in _REGEX_KEYWORDS):
      self.mode, self.quote = REGEX, "/"
    elif ch == '"' and self.language == "cpp" and _CPP_RAW.search(self._text):
      delim = text[i + 1:text.find("(", i + 1)] if "(" in text[i + 1:i + 18] else ""
      self.mode, self.quote = RAW, f"){delim}\""
      return i + len(delim) + 1
    elif ch in "\"'" and not (ch == "'" and self.language == "cpp" and self._last.isdigit()):  # 1'000 in C++14
      self.mode, self.quote = STRING, ch
    elif ch == "`" and self.language == "go":
      self.mode, self.quote = RAW, "`"
    elif ch == "`" and js:
      self.mode = TEMPLATE
    elif ch == "{":
      self.depth += 1
    elif ch == "}":
      self.depth -= 1
      if self.templates and self.depth == self.templates[-1]:
        self.templates.pop()
        self.mode = TEMPLATE
    elif ch in "([":
      self.brackets += 1
    elif ch in ")]":
      self.brackets -= 1
    if ch == "\n":
      self._text = ""
    else:
      self._text += ch
    if not ch.isspace():
      self._word = self._word + ch if (ch.isalnum() or ch == "_") else ""
      self._last = ch
    return i


def brace_state(text: str, language: str) -> _BraceLexer:
  """The lexer after reading `text` (its depth, open brackets and mode at the end)."""
  lexer = _BraceLexer(language)
  lexer.feed(text)
  return lexer


_LINE_TAIL = re.compile(r"[ \t;),]*(?://[^\n]*)?\n?")  # what may follow a function's last `}` on its line


def _cut_braces(prefix: str, continuation: str, language: str) -> str:
  """`continuation` up to the `}` that closes every brace open, with the rest of its line when that is only
  `;`, `)`, `,` or a comment (see module doc); whole when the braces never close."""
  pos = brace_state(prefix, language).feed(continuation, stop_depth=0)
  if pos is None:
    return continuation
  tail = _LINE_TAIL.match(continuation, pos).end()
  return continuation[:tail] if tail == len(continuation) or continuation[tail - 1] == "\n" else continuation[:pos]


def cut_continuation(prefix: str, continuation: str, language: str = PYTHON) -> str:
  """`continuation` up to where the prefix's function ends (see module doc), in the program's `language`."""
  if check_language(language) == PYTHON:
    return _cut_python(prefix, continuation)
  return _cut_braces(prefix, continuation, language)


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


def _close_python(program: str, keep: int) -> str:
  """A Python `program` (whose text after character `keep` is a branch cut by the token budget) made parseable.

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


def _close_braces(program: str, keep: int, language: str) -> str:
  """A brace-language `program` whose text after `keep` was cut by the token budget, closed (see module doc);
  unchanged when more than `MAX_DROPPED_LINES` lines would have to go, or text before `keep`."""
  head = program[:keep]
  lines = program[keep:].split("\n")[:-1]  # without the line the budget cut
  for _ in range(MAX_DROPPED_LINES + 1):
    code = head + "".join(line + "\n" for line in lines)
    lexer = brace_state(code, language)
    if lexer.mode in (CODE, LINE_COMMENT, BLOCK_COMMENT) and lexer.brackets <= 0:
      closing = "*/\n" if lexer.mode == BLOCK_COMMENT else ""
      return code + closing + "}\n" * max(lexer.depth, 0)
    if not lines:
      return program
    lines = lines[:-1]
  return program


def close_truncated(program: str, keep: int, language: str = PYTHON) -> str:
  """`program` (whose text after character `keep` is a branch cut by the token budget) closed so that the
  verifier judges what the branch wrote (see module doc), in the program's `language`."""
  if check_language(language) == PYTHON:
    return _close_python(program, keep)
  return _close_braces(program, keep, language)


def assemble_program(prefix: str, continuation: str, truncated: bool = False, language: str = PYTHON) -> str:
  """The program a verifier checks: the prefix and the continuation cut at the end of the function.

  `truncated`: the continuation ran out of tokens (no stop token); if it did so inside the function, the
  program is closed by `close_truncated`. `language`: the program's (`LANGUAGES`; a record's `language`).
  """
  cut = cut_continuation(prefix, continuation, language)
  program = prefix + cut
  if truncated and cut == continuation:  # the function had not ended when the budget did
    return close_truncated(program, len(prefix), language)
  return program


def node_task(node: NodeLike, node_offset: int, strict: bool = False, record_task: Task | None = None) -> Task:
  """The verification task of a branch generated at a training risk node.

  Args:
    node: the risk node (its record, CWE and the patch's fixed / vulnerable hunk lines).
    node_offset: character offset in the assembled program where the node's line begins (the branch itself may
      begin later in that line: `pairs.tokenize_node`).
    strict: any static finding counts (else only those relevant to the node's CWE).
    record_task: the task of the node's record; when it has executable tests (generated tasks, CWEval-style
      records) the branch's program runs them, as a test-time program would.
  """
  fields = dict(id=f"{node.record_id}#L{node.line}", cwe=node.cwe, language=getattr(node, "language", PYTHON),
                mode=MODE_STRICT if strict else MODE_CWE, node_offset=node_offset, fixed_lines=tuple(node.fixed_lines),
                vulnerable_lines=tuple(node.vulnerable_lines))
  if record_task is not None and record_task.tests != TESTS_NONE:
    return dataclasses.replace(record_task, **fields)
  return Task(**fields)
