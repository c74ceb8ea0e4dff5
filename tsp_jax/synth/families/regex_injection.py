"""CWE-730: a user-supplied search term or separator compiled as a regular expression (re.compile / search /
sub / split) vs matched literally (re.escape, `in`, str.replace, str.split)."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-730"
MARKS = (("[", "]"), ("<mark>", "</mark>"), ("**", "**"), ("<b>", "</b>"), (">>", "<<"), ("_", "_"))


def search_lines(rng: random.Random) -> core.Instance:
  """The lines of a list that contain a search term, ignoring case."""
  noun = core.pick(rng, core.NOUNS)[0]
  fn = core.snake(rng.choice(("search", "filter", "grep", "match", "find")), noun + "s")
  names = core.Names(rng, reserved=(fn,))
  lines = names.pick(("lines", "names", "titles", f"{noun}s", "entries"))
  term = names.pick(("term", "query", "q", "needle", "keyword"))
  pattern, wanted = names.pick(("pattern", "regex")), names.pick(("wanted", "needle"))
  line = names.pick(("line", "entry"))
  args = [f"{lines}: list[str]", f"{term}: str"]
  swap = rng.random() < 0.4
  if swap:
    args.reverse()
  prompt = ("import re\n\n\n" f"def {fn}({', '.join(args)}) -> list[str]:\n" +
            core.docstring(rng, (f"Return the entries of {lines} that contain {term}, ignoring case.",
                                 f"Filter the {noun} {lines} down to those containing the user's search {term}.",
                                 f"Case-insensitive search of {lines} for {term}; keep the order."),
                           (f"{term} is plain text typed by a user, matched as typed (case aside).",)))
  secure = (core.body(f"""
      {pattern} = re.compile(re.escape({term}), re.IGNORECASE)
      return [{line} for {line} in {lines} if {pattern}.search({line})]"""), core.body(f"""
      {wanted} = {term}.lower()
      return [{line} for {line} in {lines} if {wanted} in {line}.lower()]"""), core.body(f"""
      return [{line} for {line} in {lines} if re.search(re.escape({term}), {line}, re.I)]"""))
  vulnerable = (core.body(f"""
      {pattern} = re.compile({term}, re.IGNORECASE)
      return [{line} for {line} in {lines} if {pattern}.search({line})]"""), core.body(f"""
      return [{line} for {line} in {lines} if re.search({term}, {line}, re.I)]"""))
  a, b = core.pick(rng, core.ADJECTIVES, 2)
  pool = [f"{a} {noun}", f"{b.title()} {noun.upper()}", f"{b}-{a}", "price.*", "x|y", "only x"]
  call = (lambda ls, t: f"{fn}({t}, {ls})") if swap else (lambda ls, t: f"{fn}({ls}, {t})")
  tests = core.test_module(fn, f'''
      POOL = {pool!r}


      @pytest.mark.functionality
      def test_finds_term():
          assert {call("POOL", repr(noun.title()))} == {pool[:2]!r}
          assert {call("POOL", repr(b))} == {pool[1:3]!r}
          assert {call("POOL", '"zzz"')} == []''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("term, expected", [(".*", ["price.*"]), ("x|y", ["x|y"]), ("-.", [])])
      def test_term_is_literal(term, expected):
          assert {call("POOL", "term")} == expected''')
  return core.Instance("regex_injection", "search_lines", CWE, fn, prompt, secure, vulnerable, tests)


def highlight(rng: random.Random) -> core.Instance:
  """Every occurrence of a term in a text wrapped in markers."""
  field = core.pick(rng, ("comment", "review", "message", "article", "post", "note", "snippet", "bio"))[0]
  fn = core.snake(rng.choice(("highlight", "mark", "emphasize")), rng.choice(("", "term_in", "matches_in")), field)
  names = core.Names(rng, reserved=(fn, "m"))
  text, term = names.pick(("text", field, "content", "body")), names.pick(("term", "query", "word", "phrase"))
  pattern = names.pick(("pattern", "regex", "matcher"))
  left, right = rng.choice(MARKS)
  args = [f"{text}: str", f"{term}: str"]
  prompt = ("import re\n\n\n" f"def {fn}({', '.join(args)}) -> str:\n" +
            core.docstring(rng, (f"Wrap every occurrence of {term} in {text} with {left!r} and {right!r}.",
                                 f"Highlight the user's search {term} in the {field} {text}.",
                                 f"Return {text} with each match of {term} marked as {left}match{right}."),
                           (f"Matching is case-sensitive; {term} is literal text from the search box.",)))
  wrap = f"lambda m: {left!r} + m.group(0) + {right!r}"
  secure = (core.body(f"""
      return re.sub(re.escape({term}), {wrap}, {text})"""), core.body(f"""
      return {text}.replace({term}, {left!r} + {term} + {right!r})"""), core.body(f"""
      {pattern} = re.compile(re.escape({term}))
      return {pattern}.sub({wrap}, {text})"""))
  vulnerable = (core.body(f"""
      return re.sub({term}, {wrap}, {text})"""), core.body(f"""
      {pattern} = re.compile({term})
      return {pattern}.sub({wrap}, {text})"""))
  w = core.pick(rng, core.NOUNS, 2)
  sample = f"the {w[0]} and the {w[1]}s"
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_wraps_matches():
          assert {fn}({sample!r}, "{w[1]}") == {sample.replace(w[1], left + w[1] + right)!r}
          assert {fn}({sample!r}, "the") == {sample.replace("the", left + "the" + right)!r}
          assert {fn}({sample!r}, "zzz") == {sample!r}''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("text, term", [("1+1=2, 11", "1+1"), ("a.b", "."), ("x or y", "x|y")])
      def test_term_is_literal(text, term):
          assert {fn}(text, term) == text.replace(term, {left!r} + term + {right!r})''')
  return core.Instance("regex_injection", "highlight", CWE, fn, prompt, secure, vulnerable, tests)


def split_fields(rng: random.Random) -> core.Instance:
  """A record line split on a separator the user configured."""
  noun = core.pick(rng, core.NOUNS)[0]
  fn = core.snake(rng.choice(("split", "parse", "tokenize", "read")), noun, rng.choice(("fields", "record", "line")))
  names = core.Names(rng, reserved=(fn,))
  line, sep = names.pick(("line", "record", "row", "raw")), names.pick(("sep", "separator", "delimiter", "delim"))
  parts, fv = names.pick(("parts", "fields", "pieces")), names.pick(("f", "part", "field"))
  strip, drop = rng.random() < 0.5, rng.random() < 0.5
  prompt = ("import re\n\n\n" f"def {fn}({line}: str, {sep}: str) -> list[str]:\n" +
            core.docstring(rng, (f"Split the {noun} {line} into fields on the user-chosen {sep}.",
                                 f"Return the fields of {line}, separated by {sep}.",
                                 f"Break a {noun} export {line} apart at every {sep}."),
                           (f"{sep} is a literal string from the user's export settings.",
                            ("Fields are stripped of surrounding whitespace" if strip else "Fields are kept as-is") +
                            ("; empty fields are dropped." if drop else "; empty fields are kept."))))
  item = f"{fv}.strip()" if strip else fv
  cond = f" if {item}" if drop else ""
  secure = (core.body(f"""
      {parts} = re.split(re.escape({sep}), {line})
      return [{item} for {fv} in {parts}{cond}]"""), core.body(f"""
      {parts} = {line}.split({sep})
      return [{item} for {fv} in {parts}{cond}]"""))
  vulnerable = (core.body(f"""
      {parts} = re.split({sep}, {line})
      return [{item} for {fv} in {parts}{cond}]"""), core.body(f"""
      {parts} = re.compile({sep}).split({line})
      return [{item} for {fv} in {parts}{cond}]"""))
  vals = core.pick(rng, core.FIELDS, 3)
  seps = rng.sample((";", ",", "::", "\t", " / ", "#"), 2)

  def fields(parts: list[str]) -> list[str]:
    parts = [p.strip() for p in parts] if strip else parts
    return [p for p in parts if p] if drop else parts
  rec = f"{vals[0]} {seps[0]}{vals[1]}{seps[0]}{seps[0]}{vals[2]}"
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_splits():
          assert {fn}({rec!r}, {seps[0]!r}) == {fields(rec.split(seps[0]))!r}
          assert {fn}("{vals[0]}", {seps[1]!r}) == ["{vals[0]}"]''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("text, sep", [("a|b.c", "|"), ("1.2.3", "."), ("x+y", "+"), ("p*q", "*")])
      def test_separator_is_literal(text, sep):
          assert {fn}(text, sep) == text.split(sep)''')
  return core.Instance("regex_injection", "split_fields", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("regex_injection", CWE, (search_lines, highlight, split_fields))
