"""Program assembly in brace languages (C, C++, Go, JavaScript): where a generated function ends, and how a
branch cut by the token budget is closed."""

import json
import os

import pytest

from tsp_jax.verify import program

XLANG_CWEVAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "xlang", "eval", "cweval",
                            "test.jsonl")


@pytest.mark.parametrize("language,prefix,continuation,expected", [
    # C: the function's own `}` ends it; what follows (another function, main) is cut.
    ("c", "int f(int x) {\n", "  if (x) {\n    return 1;\n  }\n  return 0;\n}\nint main() { return f(1); }\n",
     "  if (x) {\n    return 1;\n  }\n  return 0;\n}\n"),
    # Braces in strings, characters and comments do not count.
    ("c", "char *f(void) {\n", "  char c = '}'; /* } */ // }\n  return \"}{\";\n}\nint g;\n",
     "  char c = '}'; /* } */ // }\n  return \"}{\";\n}\n"),
    ("c", "int f(void) {\n", "  char c = '\\'';\n  return c == '{';\n}\nx\n", "  char c = '\\'';\n  return c == '{';\n}\n"),
    # A prefix with earlier, closed functions and structs: only what is still open counts.
    ("c", "struct s { int a; };\nint g(void) { return 0; }\nint f(void) {\n", "  return 1;\n}\nint h;\n",
     "  return 1;\n}\n"),
    # C++: raw strings, digit separators, a class method that closes with `};` on the class line.
    ("cpp", "int f() {\n", "  auto s = R\"x(})\")x\";\n  int n = 1'000;\n  return n;\n}\nint z;\n",
     "  auto s = R\"x(})\")x\";\n  int n = 1'000;\n  return n;\n}\n"),
    ("cpp", "class A {\n public:\n  int f() {\n", "    return 1;\n  }\n};\nint main() {}\n",
     "    return 1;\n  }\n};\n"),
    # Go: raw strings (no escapes, span lines) and runes.
    ("go", "func f() string {\n", "\ts := `}\\\n{`\n\tr := '}'\n\t_ = r\n\treturn s\n}\n\nfunc main() {}\n",
     "\ts := `}\\\n{`\n\tr := '}'\n\t_ = r\n\treturn s\n}\n"),
    # JavaScript: template literals (`${...}` holds code), regular expressions, arrow functions closed by `};`.
    ("javascript", "function f(a) {\n", "  const s = `}${a ? {x: 1}.x : '}'}{`;\n  return s;\n}\nf(1);\n",
     "  const s = `}${a ? {x: 1}.x : '}'}{`;\n  return s;\n}\n"),
    ("javascript", "function f(s) {\n", "  return s.replace(/[}{]/g, '') + /\\}/.source;\n}\nmodule.exports = f;\n",
     "  return s.replace(/[}{]/g, '') + /\\}/.source;\n}\n"),
    ("javascript", "const f = (a) => {\n", "  return a / 2 / 1;\n};\nconsole.log(f(2));\n",
     "  return a / 2 / 1;\n};\n"),
    # Code after the closing brace on its line is cut, the line's comment kept.
    ("c", "int f(void) {\n", "  return 0;\n} int g; // x\n", "  return 0;\n}"),
    ("c", "int f(void) {\n", "  return 0;\n} // end\nint g;\n", "  return 0;\n} // end\n"),
    # A prefix that opens nothing (the node is the signature line): the first whole block is the function.
    ("c", "/* Returns one. */\n", "int f(void) {\n  return 1;\n}\nint g(void) { return 2; }\n",
     "int f(void) {\n  return 1;\n}\n"),
    # A continuation that never closes the function is kept whole.
    ("go", "func f() {\n", "\tx := 1\n\t_ = x", "\tx := 1\n\t_ = x"),
])
def test_cut_continuation_brace_languages(language, prefix, continuation, expected):
  assert program.cut_continuation(prefix, continuation, language) == expected
  assert program.assemble_program(prefix, continuation, language=language) == prefix + expected


def test_python_is_the_default_and_unknown_languages_fail():
  assert program.cut_continuation("def f():\n", "  return 1\nx = 2\n") == "  return 1\n"
  assert program.cut_continuation("int f() {\n", "  return 1;\n}\nx\n", "c") == "  return 1;\n}\n"
  with pytest.raises(ValueError, match="unknown language 'rust'"):
    program.cut_continuation("fn f() {\n", "}\n", "rust")


@pytest.mark.parametrize("language,prefix,branch,expected", [
    # The unfinished last line goes, every open brace is closed.
    ("c", "int f(int x) {\n", "  if (x > 0) {\n    x = 2;\n    ret", "  if (x > 0) {\n    x = 2;\n}\n}\n"),
    # A statement whose brackets are still open loses its lines.
    ("javascript", "function f(a) {\n", "  const y = 1;\n  g(a,\n    b,\n    c", "  const y = 1;\n}\n"),
    # An unterminated template literal (JS) or raw string (Go) loses the lines inside it.
    ("javascript", "function f() {\n", "  let x = 1;\n  const s = `a\n  b\n  c", "  let x = 1;\n}\n"),
    ("go", "func f() {\n", "\tx := 1\n\t_ = x\n\ts := `a\n\tb", "\tx := 1\n\t_ = x\n}\n"),
    # An open block comment is closed.
    ("cpp", "int f() {\n", "  int a = 1;\n  /* note\n  more", "  int a = 1;\n  /* note\n*/\n}\n"),
])
def test_truncated_branches_are_closed(language, prefix, branch, expected):
  assert program.assemble_program(prefix, branch, truncated=True, language=language) == prefix + expected


def test_truncated_closing_never_touches_the_prefix_nor_drops_too_much():
  prefix = "int f() {\n  g(1,\n"  # the prefix itself leaves a bracket open: nothing the branch wrote closes it
  branch = "".join(f"    {i},\n" for i in range(program.MAX_DROPPED_LINES + 2)) + "    9"
  assert program.assemble_program(prefix, branch, truncated=True, language="c") == prefix + branch
  # A branch that ended its function is not touched, truncated or not.
  assert program.assemble_program("int f() {\n", "  return 1;\n}\n", truncated=True, language="c") == \
      "int f() {\n  return 1;\n}\n"


@pytest.mark.skipif(not os.path.exists(XLANG_CWEVAL), reason="no ../shared/xlang")
def test_cweval_references_end_where_their_function_does():
  """Every xlang CWEval reference, cut after its prompt (the task's signature line), keeps its solution and
  loses its `main` harness: the cut finds the function's end in real C, C++, Go and JS."""
  with open(XLANG_CWEVAL, encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  checked = 0
  for r in records:
    ref, signature = r["reference_secure"], r["prompt"].rstrip("\n").split("\n")[-1]
    at = ref.find(signature)
    if at < 0 or r["entrypoint_anchor"] not in ref:
      continue
    prefix = ref[:at + len(signature)] + "\n"
    rest = ref[len(prefix):]
    cut = program.cut_continuation(prefix, rest, r["language"])
    assert r["entrypoint_anchor"] not in cut, r["id"]
    assert rest[len(cut):].strip().startswith(r["entrypoint_anchor"]) or "}" in rest[len(cut):], r["id"]
    checked += 1
  assert checked >= 60
