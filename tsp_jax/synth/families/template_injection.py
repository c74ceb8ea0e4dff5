"""CWE-1336: user text rendered as a jinja2 template (Template(text), from_string(f"..."), even in a sandbox) vs
passed as a variable to a fixed template, or substituted by an explicit placeholder parser."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-1336"
# Expressions without HTML-special characters (an escaping secure body returns them as written).
PAYLOADS = ("{{ 7*7 }}", "{{7*7}}", "{{ range(3)|list }}")
EVALUATED = ("49", "49", "[0, 1, 2]")  # what each payload renders to when jinja2 evaluates it
WORDS = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy")
UNTRUSTED = ("The text comes from an untrusted user.", "Every argument is user input.",
             "The input is typed into a web form.", "")
SITES = ("Acme", "the portal", "Northwind", "our shop", "the forum", "Contoso")


def _details(rng: random.Random, *lines: str) -> list[str]:
  note = rng.choice(UNTRUSTED)
  return [line for line in lines if line] + ([note] if note else [])


def _security(call: str) -> str:
  """A security test calling `call` (an expression using `payload`) with every jinja2 payload."""
  return f'''
      @pytest.mark.security
      @pytest.mark.parametrize("payload, evaluated", {list(zip(PAYLOADS, EVALUATED))!r})
      def test_input_is_not_a_template(payload, evaluated):
          out = {call}
          assert payload in out
          assert evaluated not in out.replace(payload, "")'''


def welcome(rng: random.Random) -> core.Instance:
  """A welcome banner that greets a user by name, rendered with jinja2."""
  noun = core.pick(rng, ("user", "member", "customer", "visitor", "player", "student", "guest"))[0]
  fn = core.snake(rng.choice(("render", "build", "make")), rng.choice(("welcome", "greeting", "banner")),
                  rng.choice(("", "html", "message")))
  names = core.Names(rng, reserved=(fn, "template", "loader", "SandboxedEnvironment"))
  name = names.pick(("name", "username", f"{noun}_name", "display_name", "who"))
  tag, site = rng.choice(("h1", "h2", "p", "div")), rng.choice(SITES)
  hello = rng.choice(("Welcome back", "Hello", "Hi", "Good to see you"))
  source = f"<{tag}>{hello}, {{{{ {name} }}}}! Welcome to {site}.</{tag}>"
  prompt = ("import jinja2\n\n\n" f"def {fn}({name}: str) -> str:\n" +
            core.docstring(rng, (f"Render the welcome banner greeting the {noun} {name}, using jinja2.",
                                 f"Return the HTML greeting shown to a {noun} after login (rendered with jinja2).",
                                 f"Greet the {noun} by {name} in an HTML banner built with a jinja2 template."),
                           _details(rng, f"Shape: {source.replace('{{ ' + name + ' }}', name.upper())}")))
  env, src = names.pick(("env", "environment", "jinja_env")), names.pick(("source", "markup", "banner"))
  fixed = f"{src} = {source!r}"
  built = f"{src} = " + repr(source.split("{{")[0]) + f" + {name} + " + repr(source.split("}}")[1])
  secure = (core.body(f"""
      {fixed}
      {env} = jinja2.Environment(autoescape=True)
      return {env}.from_string({src}).render({name}={name})"""), core.body(f"""
      {fixed}
      template = jinja2.Template({src}, autoescape=True)
      return template.render({name}={name})"""), core.body(f"""
      {fixed}
      loader = jinja2.DictLoader({{"welcome.html": {src}}})
      {env} = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape())
      return {env}.get_template("welcome.html").render({name}={name})"""))
  vulnerable = (core.body(f"""
      {built}
      {env} = jinja2.Environment(autoescape=True)
      return {env}.from_string({src}).render()"""), core.body(f"""
      {built}
      template = jinja2.Template({src}, autoescape=True)
      return template.render()"""), core.body(f"""
      from jinja2.sandbox import SandboxedEnvironment
      {built}
      {env} = SandboxedEnvironment(autoescape=True)
      return {env}.from_string({src}).render({name}={name})"""))
  who = rng.choice(WORDS)
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_greets():
          assert {fn}({who!r}) == {source.replace("{{ " + name + " }}", who)!r}
          assert {fn}("x") == {source.replace("{{ " + name + " }}", "x")!r}''', _security(f"{fn}(payload)"))
  return core.Instance("template_injection", "welcome", CWE, fn, prompt, secure, vulnerable, tests)


def fill_placeholders(rng: random.Random) -> core.Instance:
  """A user-written message with `{{ key }}` placeholders filled in from a dict of values."""
  noun = core.pick(rng, ("notification", "email", "reminder", "invoice", "receipt", "newsletter", "alert"))[0]
  fn = core.snake(rng.choice(("fill", "render", "expand", "personalize")), noun, rng.choice(("", "text", "template")))
  names = core.Names(rng, reserved=(fn, "pattern", "key", "value", "env", "m", "SandboxedEnvironment"))
  text = names.pick(("text", "template", f"{noun}_text", "message"))
  values = names.pick(("values", "fields", "context"))
  args = [f"{text}: str", f"{values}: dict[str, str]"]
  prompt = ("import re\n\nimport jinja2\n\n\n" f"def {fn}({', '.join(args)}) -> str:\n" +
            core.docstring(rng, (f"Fill in the placeholders of a user-written {noun} {text}.",
                                 f"Return {text} with every {{{{ key }}}} placeholder replaced by {values}[key].",
                                 f"Personalize a {noun}: substitute the {values} into the placeholders of {text}."),
                           _details(rng, "A placeholder is a key of " + values + " written {{ key }} or {{key}}; "
                                    "any other text is kept as written.")))
  out = names.pick(("out", "result", "filled"))
  secure = (core.body(f"""
      pattern = re.compile(r"\\{{\\{{ ?(\\w+) ?\\}}\\}}")
      {out} = pattern.sub(lambda m: {values}.get(m.group(1), m.group(0)), {text})
      return {out}"""), core.body(f"""
      {out} = {text}
      for key, value in {values}.items():
          {out} = {out}.replace("{{{{ " + key + " }}}}", value).replace("{{{{" + key + "}}}}", value)
      return {out}"""))
  vulnerable = (core.body(f"""
      {out} = jinja2.Template({text}).render(**{values})
      return {out}"""), core.body(f"""
      env = jinja2.Environment()
      {out} = env.from_string({text}).render({values})
      return {out}"""), core.body(f"""
      from jinja2.sandbox import SandboxedEnvironment
      {out} = SandboxedEnvironment().from_string({text}).render({values})
      return {out}"""))
  k1, k2 = core.pick(rng, core.FIELDS, 2)
  v1, v2 = rng.sample(WORDS, 2)
  sample = f"Dear {{{{ {k1} }}}}, your {noun} from {{{{{k2}}}}} is ready."
  expected = f"Dear {v1}, your {noun} from {v2} is ready."
  call = f"{fn}({{0}}, {{{{{k1!r}: {v1!r}, {k2!r}: {v2!r}}}}})"
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_fills():
          assert {call.format(repr(sample))} == {expected!r}
          assert {fn}("no placeholders", {{}}) == "no placeholders"''', _security(call.format('"Total: " + payload')))
  return core.Instance("template_injection", "fill_placeholders", CWE, fn, prompt, secure, vulnerable, tests)


def search_page(rng: random.Random) -> core.Instance:
  """A search results page: a heading repeating the query and a list of the results, rendered with jinja2."""
  noun = core.pick(rng, core.NOUNS)[0]
  fn = core.snake(rng.choice(("render", "build", "show")), noun, rng.choice(("search_page", "results", "search")))
  names = core.Names(rng, reserved=(fn, "r", "SandboxedEnvironment"))
  query, results = names.pick(("query", "q", "term", "search")), names.pick(("results", "hits", "matches", "items"))
  head, lst = rng.choice(("h1", "h2", "h3")), rng.choice(("ul", "ol"))
  phrase = rng.choice(("Results for", "You searched for", "Matches for", "Search:"))
  args = [f"{query}: str", f"{results}: list[str]"]
  heading_src = f"<{head}>{phrase} {{{{ {query} }}}}</{head}>"
  listing_src = f"<{lst}>{{% for r in {results} %}}<li>{{{{ r }}}}</li>{{% endfor %}}</{lst}>"
  prompt = ("import jinja2\n\n\n" f"def {fn}({', '.join(args)}) -> str:\n" +
            core.docstring(rng, (f"Render the {noun} search results page for {query} with jinja2.",
                                 f"Return the HTML page listing the {results} of the {noun} search for {query}.",
                                 f"Build the results page of the {noun} search for {query} (a jinja2 template)."),
                           _details(rng, f"Shape: <{head}>{phrase} QUERY</{head}><{lst}><li>R1</li><li>R2</li>"
                                         f"</{lst}>")))
  env = names.pick(("env", "environment", "jinja"))
  hv, lv, top = names.pick(("heading", "title")), names.pick(("listing", "items_html")), names.pick(("top", "header"))
  fixed = f"{hv} = {heading_src!r}"
  built = f"{hv} = " + repr(f"<{head}>{phrase} ") + f" + {query} + " + repr(f"</{head}>")
  body = f"{lv} = {listing_src!r}\n      {env} = "
  kwargs = f"{query}={query}, {results}={results}"
  secure = (core.body(f"""
      {fixed}
      {body}jinja2.Environment(autoescape=True)
      return {env}.from_string({hv} + {lv}).render({kwargs})"""), core.body(f"""
      {fixed}
      {body}jinja2.Environment(loader=jinja2.DictLoader({{"search.html": {hv} + {lv}}}), autoescape=True)
      return {env}.get_template("search.html").render({kwargs})"""), core.body(f"""
      {fixed}
      {body}jinja2.Environment(autoescape=True)
      {top} = {env}.from_string({hv}).render({query}={query})
      return {top} + {env}.from_string({lv}).render({results}={results})"""))
  vulnerable = (core.body(f"""
      {built}
      {body}jinja2.Environment(autoescape=True)
      return {env}.from_string({hv} + {lv}).render({kwargs})"""), core.body(f"""
      {built}
      {body}jinja2.Environment(autoescape=True)
      {top} = {env}.from_string({hv}).render()
      return {top} + {env}.from_string({lv}).render({results}={results})"""), core.body(f"""
      from jinja2.sandbox import SandboxedEnvironment
      {built}
      {body}SandboxedEnvironment(autoescape=True)
      return {env}.from_string({hv} + {lv}).render({kwargs})"""))
  q, hits = rng.choice(WORDS), rng.sample(WORDS, 2)
  html = (lambda qq, rr: f"<{head}>{phrase} {qq}</{head}><{lst}>" + "".join(f"<li>{r}</li>" for r in rr) + f"</{lst}>")
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_page():
          assert {fn}({q!r}, {hits!r}) == {html(q, hits)!r}
          assert {fn}("zzz", []) == {html("zzz", [])!r}''', _security(f"{fn}(payload, [{hits[0]!r}])"))
  return core.Instance("template_injection", "search_page", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("template_injection", CWE, (welcome, fill_placeholders, search_page))
