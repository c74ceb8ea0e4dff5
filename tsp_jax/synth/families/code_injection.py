"""CWE-095: user text run by eval/exec (bare, with emptied builtins, after a prefix-only regex, or a name looked up
in builtins) vs ast.literal_eval, an AST walk, or a small explicit parser / allow-list."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-095"
# Code that creates the marker file when evaluated; `{m}` is the repr of its path. The last one still works when
# eval gets `{"__builtins__": {}}`: it climbs from () to os._wrap_close and takes open from os's builtins.
TOUCH = "__import__('pathlib').Path({m}).touch()"
OPEN = "open({m}, 'w').close()"
ESCAPE = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__['__builtins__']['open']({m}, 'w').close()")
UNTRUSTED = ("The text comes from an untrusted user.", "The input is typed into a web form.",
             "Treat the input as untrusted.", "")


def _details(rng: random.Random, *lines: str) -> list[str]:
  note = rng.choice(UNTRUSTED)
  return [line for line in lines if line] + ([note] if note else [])


def _security(shapes: list[str], call: str) -> str:
  """A security test calling `call` (an expression using `payload`) once per payload shape."""
  return f'''
      @pytest.mark.security
      @pytest.mark.parametrize("shape", {shapes!r})
      def test_input_is_not_run(tmp_path, shape):
          marker = tmp_path / "pwned"
          payload = shape.format(m=repr(str(marker)))
          try:
              {call}
          except Exception:
              pass
          assert not marker.exists()'''


def parse_numbers(rng: random.Random) -> core.Instance:
  """A list of numbers written as a bracketed, comma-separated literal, e.g. "[1, 2.5, -3]"."""
  noun = core.pick(rng, ("scores", "weights", "prices", "readings", "ratings", "offsets", "amounts", "samples"))[0]
  fn = core.snake(rng.choice(("parse", "read", "load", "decode")), noun, rng.choice(("", "list", "value")))
  names = core.Names(rng, reserved=(fn,))
  text = names.pick(("text", "raw", "value", f"{noun}_text", "setting"))
  prompt = (f"import ast\n\n\ndef {fn}({text}: str) -> list[float]:\n" +
            core.docstring(rng, (f"Parse the {noun} setting {text}, a list of numbers such as \"[1, 2.5, -3]\".",
                                 f"Return the numbers of the list literal {text} as floats.",
                                 f"Read a bracketed, comma-separated list of {noun} from {text}."),
                           _details(rng, "Surrounding whitespace is allowed; raise ValueError for anything that is "
                                         "not such a list.")))
  val, x, tree = names.pick(("value", "parsed", "items")), names.pick(("x", "n", "num")), names.pick(("tree", "node"))
  check = f"""if not isinstance({val}, list) or not all(isinstance({x}, (int, float)) for {x} in {val}):
          raise ValueError("expected a list of numbers")
      return [float({x}) for {x} in {val}]"""
  secure = (core.body(f"""
      {val} = ast.literal_eval({text}.strip())
      {check}"""), core.body(f"""
      {val} = {text}.strip()
      if not ({val}.startswith("[") and {val}.endswith("]")):
          raise ValueError("expected a list of numbers")
      {val} = {val}[1:-1].strip()
      return [float({x}) for {x} in {val}.split(",")] if {val} else []"""), core.body(f"""
      {tree} = ast.parse({text}.strip(), mode="eval")
      {val} = ast.literal_eval({tree}.body)
      {check}"""))
  vulnerable = (core.body(f"""
      {val} = eval({text}.strip())
      {check}"""), core.body(f"""
      {val} = eval({text}.strip(), {{"__builtins__": {{}}}}, {{}})
      {check}"""))
  nums = [rng.randint(-9, 99) for _ in range(rng.randint(2, 4))]
  lit = "[" + ", ".join(str(n) if i % 2 else f"{n}.5" for i, n in enumerate(nums)) + "]"
  want = [float(n) if i % 2 else float(f"{n}.5") for i, n in enumerate(nums)]
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_parses():
          assert {fn}({lit!r}) == {want!r}
          assert {fn}(" [4] ") == [4.0]
          assert {fn}("[]") == []''', _security([TOUCH, f"[{OPEN}]", ESCAPE, f"[1, {TOUCH}]"], f"{fn}(payload)"))
  return core.Instance("code_injection", "parse_numbers", CWE, fn, prompt, secure, vulnerable, tests)


def calculate(rng: random.Random) -> core.Instance:
  """A two-operand calculator: `<number> <operator> <number>` with + - * /."""
  noun = rng.choice(("calculator", "formula", "expression", "sum", "quick_math", "arithmetic", "user_formula",
                     "calc_input"))
  fn = core.snake(rng.choice(("evaluate", "compute", "calculate", "run")), noun)
  names = core.Names(rng, reserved=(fn, "side"))
  expr = names.pick(("expression", "expr", "formula", "text", "query", "entry", "source"))
  prompt = (f"import ast\nimport operator\nimport re\n\n\ndef {fn}({expr}: str) -> float:\n" +
            core.docstring(rng, (f"Evaluate the calculator input {expr}, e.g. \"3 * 4.5\", and return the result.",
                                 f"Compute a two-operand arithmetic {expr} such as \"10 / 4\".",
                                 f"Return the value of {expr}: two numbers joined by +, -, * or /."),
                           _details(rng, "Operands are non-negative integers or decimals; spaces are optional. "
                                         "Raise an exception for any other input.")))
  ops = names.pick(("ops", "operators", "OPS"))
  node, match = names.pick(("node", "tree")), names.pick(("found", "parsed", "groups"))
  left, right, op = names.pick(("left", "lhs", "a")), names.pick(("right", "rhs", "b")), names.pick(("op", "sign"))
  secure = (core.body(f"""
      {ops} = {{ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}}
      {node} = ast.parse({expr}, mode="eval").body
      if not (isinstance({node}, ast.BinOp) and type({node}.op) in {ops}):
          raise ValueError("unsupported expression")
      {left}, {right} = {node}.left, {node}.right
      for side in ({left}, {right}):
          if not (isinstance(side, ast.Constant) and type(side.value) in (int, float)):
              raise ValueError("operands must be numbers")
      return float({ops}[type({node}.op)]({left}.value, {right}.value))"""), core.body(f"""
      {ops} = {{"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}}
      {match} = re.fullmatch(r"\\s*(\\d+(?:\\.\\d+)?)\\s*([-+*/])\\s*(\\d+(?:\\.\\d+)?)\\s*", {expr})
      if {match} is None:
          raise ValueError("unsupported expression")
      {left}, {op}, {right} = {match}.groups()
      return float({ops}[{op}](float({left}), float({right})))"""))
  vulnerable = (core.body(f"""
      return float(eval({expr}))"""), core.body(f"""
      return float(eval({expr}, {{"__builtins__": {{}}}}, {{}}))"""), core.body(f"""
      if not re.match(r"[\\d\\s.+\\-*/]+", {expr}):
          raise ValueError("unsupported expression")
      return float(eval({expr}))"""))
  a, b = rng.randint(2, 60), rng.randint(2, 9)
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_computes():
          assert {fn}("{a} * {b}") == {float(a * b)!r}
          assert {fn}("{a}+{b}.5") == {a + b + 0.5!r}
          assert {fn}("{a} - {b}") == {float(a - b)!r}
          assert {fn}("10 / 4") == 2.5''',
                           _security([TOUCH, f"1 + ({OPEN} or 1)", f"1 + ({ESCAPE} or 1)", f"2 * {TOUCH}"],
                                     f"{fn}(payload)"))
  return core.Instance("code_injection", "calculate", CWE, fn, prompt, secure, vulnerable, tests)


def convert_field(rng: random.Random) -> core.Instance:
  """A form value converted to the type a field declares by name ("int", "float", "str", ...)."""
  noun, field = core.pick(rng, core.NOUNS)[0], core.pick(rng, core.FIELDS)[0]
  fn = core.snake(rng.choice(("convert", "cast", "coerce", "typed")), noun, rng.choice(("field", "value", "input")))
  names = core.Names(rng, reserved=(fn,))
  value, kind = names.pick(("value", "raw", "text", field)), names.pick(("type_name", "kind", "declared_type"))
  types = ["int", "float", "str"] + (["complex"] if rng.random() < 0.3 else [])
  args = [f"{value}: str", f"{kind}: str"]
  swap = rng.random() < 0.3
  if swap:
    args.reverse()
  listed = ", ".join(f'"{t}"' for t in types)
  prompt = (f"def {fn}({', '.join(args)}) -> object:\n" +
            core.docstring(rng, (f"Convert the submitted {noun} value {value} to the type named {kind}.",
                                 f"Return {value} converted to the declared field type {kind}.",
                                 f"Coerce a {noun} form input to its field's type, given by name."),
                           _details(rng, f"{kind} is one of {listed}; raise ValueError for any other type name.")))
  conv = names.pick(("converters", "casts", "allowed"))
  secure = (core.body(f"""
      {conv} = {{{", ".join(f'"{t}": {t}' for t in types)}}}
      if {kind} not in {conv}:
          raise ValueError(f"unsupported type {{{kind}!r}}")
      return {conv}[{kind}]({value})"""), core.body("\n".join(
      [f"""      if {kind} == "{t}":
          return {t}({value})""" for t in types] + [f"""      raise ValueError(f"unsupported type {{{kind}!r}}")"""])))
  vulnerable = (core.body(f"""
      return eval(f"{{{kind}}}({{{value}!r}})")"""), core.body(f"""
      import builtins
      return getattr(builtins, {kind})({value})"""), core.body(f"""
      if not {kind}.isidentifier():
          raise ValueError(f"unsupported type {{{kind}!r}}")
      return eval({kind})({value})"""))
  n = rng.randint(2, 999)
  call = (lambda v, k: f"{fn}({k}, {v})") if swap else (lambda v, k: f"{fn}({v}, {k})")
  extra = f'\n          assert {call(repr("1+2j"), repr("complex"))} == 1 + 2j' if "complex" in types else ""
  shapes = [f"exec|{OPEN}", f"eval|{TOUCH}", f"exec|{TOUCH}"]
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_converts():
          got = {call(repr(str(n)), '"int"')}
          assert got == {n} and type(got) is int
          assert {call('"2.5"', '"float"')} == 2.5
          assert {call('"abc"', '"str"')} == "abc"{extra}''',
                           _security(shapes, call("payload.split('|', 1)[1]", "payload.split('|', 1)[0]")))
  return core.Instance("code_injection", "convert_field", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("code_injection", CWE, (parse_numbers, calculate, convert_field))
