"""CWE-079: HTML fragments built from user text by f-strings, %, Markup(...) or partial escaping (quote=False,
replacing only < and >) vs html.escape / markupsafe.escape of every value."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-079"
SCRIPT = "<script>alert(1)</script>"
QUOTE = '" onmouseover="alert(1)'
WRAPPERS = ("div", "li", "p", "article", "section")
CLASSES = ("comment", "entry", "note", "reply", "post", "message", "review")
WORDS = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy")
TEXTS = ("Nice work", "Thanks a lot", "See you soon", "Great idea", "Works for me", "Looks good")
UNTRUSTED = ("The values are typed by users.", "Every argument comes from an untrusted client.",
             "The text is user input shown to other users.", "")

# A test-side HTML parser: the start tags (with their attributes, entities decoded) and the text of a fragment.
PARSER = '''
      from html.parser import HTMLParser


      class Fragment(HTMLParser):
          def __init__(self, markup):
              super().__init__()
              self.tags, self.text = [], []
              self.feed(str(markup))
              self.close()

          def handle_starttag(self, tag, attrs):
              self.tags.append((tag, dict(attrs)))

          def handle_data(self, data):
              self.text.append(data)'''


def _details(rng: random.Random, *lines: str) -> list[str]:
  note = rng.choice(UNTRUSTED)
  return [line for line in lines if line] + ([note] if note else [])


def render_comment(rng: random.Random) -> core.Instance:
  """A comment as an HTML element: the author in bold, then the text."""
  noun = core.pick(rng, ("comment", "reply", "message", "review", "note", "post", "answer"))[0]
  fn = core.snake(rng.choice(("render", "format", "build", "make")), noun, rng.choice(("", "html", "fragment")))
  tag, cls = rng.choice(WRAPPERS), rng.choice(CLASSES)
  names = core.Names(rng, reserved=(fn,))
  author, text = names.pick(("author", "username", "name", "poster")), names.pick(("text", "body", "content", noun))
  args = [f"{author}: str", f"{text}: str"]
  swap = rng.random() < 0.3
  if swap:
    args.reverse()
  sep = rng.choice((": ", " - ", " ", " &middot; "))
  shape = f'<{tag} class="{cls}"><b>{{}}</b>{sep}{{}}</{tag}>'
  example = shape.format(author.upper(), text.upper())
  prompt = (f"import html\n\nimport markupsafe\n\n\ndef {fn}({', '.join(args)}) -> str:\n" +
            core.docstring(rng, (f"Render a {noun} by {author} as an HTML fragment.",
                                 f"Return the HTML of one {noun}: the {author} in bold, then the {text}.",
                                 f"Build the <{tag}> element that shows a user's {noun} on the page."),
                           _details(rng, f"Shape: {example}")))
  a, t = names.pick(("a", "who", f"safe_{author}")), names.pick(("t", "what", f"safe_{text}"))
  html_line = f"return f'{shape.format('{' + a + '}', '{' + t + '}')}'"
  secure = (core.body(f"""
      {a}, {t} = html.escape({author}), html.escape({text})
      {html_line}"""), core.body(f"""
      {a}, {t} = markupsafe.escape({author}), markupsafe.escape({text})
      {html_line}"""), core.body(f"""
      {a} = html.escape({author}, quote=True)
      {t} = html.escape({text}, quote=True)
      {html_line}"""))
  vulnerable = (core.body(f"""
      {a}, {t} = {author}, {text}
      {html_line}"""), core.body(f"""
      return '{shape.replace("{}", "%s")}' % ({author}, {text})"""), core.body(f"""
      {a}, {t} = {author}, {text}
      return str(markupsafe.Markup(f'{shape.format('{' + a + '}', '{' + t + '}')}'))"""))
  who, what = rng.sample(WORDS, 1)[0], rng.choice(TEXTS)
  call = (lambda x, y: f"{fn}({y}, {x})") if swap else (lambda x, y: f"{fn}({x}, {y})")
  tests = core.test_module(fn, f'''
      {PARSER.strip()}


      @pytest.mark.functionality
      def test_renders():
          assert {call(repr(who), repr(what))} == {shape.format(who, what)!r}
          assert {call('"x"', '""')} == {shape.format("x", "")!r}''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("which", [0, 1])
      def test_script_is_text(which):
          values = ["{who}", "{what}"]
          values[which] = {SCRIPT!r}
          out = {call("values[0]", "values[1]")}
          page = Fragment(out)
          assert [t for t, _ in page.tags] == ["{tag}", "b"]
          assert {SCRIPT!r} in "".join(page.text)''')
  return core.Instance("xss", "render_comment", CWE, fn, prompt, secure, vulnerable, tests)


def profile_card(rng: random.Random) -> core.Instance:
  """A profile card: an avatar image whose alt text is the user's name, and the user's bio."""
  noun = core.pick(rng, ("user", "member", "author", "player", "seller", "student", "speaker"))[0]
  fn = core.snake(rng.choice(("render", "build", "make")), noun, rng.choice(("card", "profile_card", "badge")))
  names = core.Names(rng, reserved=(fn,))
  uid, name = names.pick(("user_id", f"{noun}_id", "uid", "ident")), names.pick(("name", "display_name", "nickname"))
  bio = names.pick(("bio", "about", "tagline", "status"))
  folder = rng.choice(("avatars", "img/avatars", "static/faces", "media/users"))
  cls = rng.choice(("card", "profile", f"{noun}-card", "badge"))
  args = [f"{uid}: int", f"{name}: str", f"{bio}: str"]
  shape = f'<div class="{cls}"><img src="/{folder}/{{}}.png" alt="{{}}"><p>{{}}</p></div>'
  prompt = (f"import html\n\nimport markupsafe\n\n\ndef {fn}({', '.join(args)}) -> str:\n" +
            core.docstring(rng, (f"Return the HTML card of a {noun}: avatar image and {bio}.",
                                 f"Render the profile card of {noun} {uid} as an HTML fragment.",
                                 f"Build the card shown for a {noun}: the avatar (alt text {name}) and the {bio}."),
                           _details(rng, f"Shape: {shape.format('{' + uid + '}', '{' + name + '}', '{' + bio + '}')}")))
  if rng.random() < 1 / 3:  # the bodies escape the arguments in place
    n, b = name, bio
  else:
    n, b = names.pick(("label", f"{name}_html")), names.pick(("blurb", f"{bio}_html"))
  img = names.pick(("img", "avatar", "picture"))
  html_line = (f"""{img} = f'<img src="/{folder}/{{{uid}}}.png" alt="{{{n}}}">'\n      """
               f"""return f'<div class="{cls}">{{{img}}}<p>{{{b}}}</p></div>'""")
  secure = (core.body(f"""
      {n} = html.escape({name})
      {b} = html.escape({bio})
      {html_line}"""), core.body(f"""
      {n} = markupsafe.escape({name})
      {b} = markupsafe.escape({bio})
      {html_line}"""))
  vulnerable = (core.body(f"""
      {n} = html.escape({name}, quote=False)
      {b} = html.escape({bio}, quote=False)
      {html_line}"""), core.body(f"""
      {n} = {name}.replace("<", "&lt;").replace(">", "&gt;")
      {b} = {bio}.replace("<", "&lt;").replace(">", "&gt;")
      {html_line}"""), core.body((f"""
      {n}, {b} = {name}, {bio}""" if n != name else "") + f"""
      {html_line}"""))
  who, what, num = rng.choice(WORDS), rng.choice(TEXTS), rng.randint(1, 999)
  tests = core.test_module(fn, f'''
      {PARSER.strip()}


      @pytest.mark.functionality
      def test_renders():
          assert {fn}({num}, {who!r}, {what!r}) == {shape.format(num, who, what)!r}
          assert {fn}(7, "x", "") == {shape.format(7, "x", "")!r}''', f'''
      @pytest.mark.security
      def test_quote_stays_in_attribute():
          page = Fragment({fn}({num}, {QUOTE!r}, {what!r}))
          assert page.tags[1] == ("img", {{"src": "/{folder}/{num}.png", "alt": {QUOTE!r}}})


      @pytest.mark.security
      def test_script_is_text():
          page = Fragment({fn}({num}, {who!r}, {SCRIPT!r}))
          assert [t for t, _ in page.tags] == ["div", "img", "p"]
          assert {SCRIPT!r} in "".join(page.text)''')
  return core.Instance("xss", "profile_card", CWE, fn, prompt, secure, vulnerable, tests)


def table_row(rng: random.Random) -> core.Instance:
  """One row of an HTML table: an id attribute and one cell per value."""
  noun = core.pick(rng, core.NOUNS)[0]
  fn = core.snake(rng.choice(("render", "format", "build")), noun, rng.choice(("row", "table_row", "tr")))
  names = core.Names(rng, reserved=(fn,))
  key, cells = names.pick(("row_id", "key", f"{noun}_id", "slug")), names.pick(("cells", "values", "columns", "fields"))
  prefix = rng.choice(("row-", f"{noun}-", "r-", ""))
  cell_tag = rng.choice(("td", "td", "th"))
  args = [f"{key}: str", f"{cells}: list[str]"]
  shape = f'<tr id="{prefix}{{}}">{{}}</tr>'
  prompt = (f"import html\n\nimport markupsafe\n\n\ndef {fn}({', '.join(args)}) -> str:\n" +
            core.docstring(rng, (f"Render one {noun} as an HTML table row.",
                                 f"Return the <tr> of a {noun}: id \"{prefix}\" + {key}, one <{cell_tag}> per value.",
                                 f"Build the table row showing the {cells} of {noun} {key}."),
                           _details(rng, f'Shape: <tr id="{prefix}KEY"><{cell_tag}>A</{cell_tag}><{cell_tag}>B'
                                         f'</{cell_tag}></tr> for {cells} ["A", "B"].')))
  c = names.pick(("c", "v", "cell", "value"))
  inner = names.pick(("inner", "body", "tds"))
  row = f"return f'{shape.format('{' + key + '}', '{' + inner + '}')}'"
  secure = (core.body(f"""
      {key} = html.escape({key})
      {inner} = "".join(f"<{cell_tag}>{{html.escape({c})}}</{cell_tag}>" for {c} in {cells})
      {row}"""), core.body(f"""
      {key} = markupsafe.escape({key})
      {inner} = "".join(f"<{cell_tag}>{{markupsafe.escape({c})}}</{cell_tag}>" for {c} in {cells})
      {row}"""))
  vulnerable = (core.body(f"""
      {inner} = "".join(f"<{cell_tag}>{{{c}}}</{cell_tag}>" for {c} in {cells})
      {row}"""), core.body(f"""
      {inner} = "".join(f"<{cell_tag}>{{html.escape({c})}}</{cell_tag}>" for {c} in {cells})
      {row}"""), core.body(f"""
      {inner} = ""
      for {c} in {cells}:
          {inner} += "<{cell_tag}>" + {c} + "</{cell_tag}>"
      {row}"""))
  k, vals = rng.choice(("7", "a1", "x", "42")), rng.sample(WORDS, 2)
  out = shape.format(k, "".join(f"<{cell_tag}>{v}</{cell_tag}>" for v in vals))
  tests = core.test_module(fn, f'''
      {PARSER.strip()}


      @pytest.mark.functionality
      def test_renders():
          assert {fn}({k!r}, {vals!r}) == {out!r}
          assert {fn}("z", []) == {shape.format("z", "")!r}''', f'''
      @pytest.mark.security
      def test_quote_stays_in_attribute():
          page = Fragment({fn}({QUOTE!r}, {vals!r}))
          assert page.tags[0] == ("tr", {{"id": "{prefix}" + {QUOTE!r}}})


      @pytest.mark.security
      def test_script_is_text():
          page = Fragment({fn}({k!r}, [{vals[0]!r}, {SCRIPT!r}]))
          assert [t for t, _ in page.tags] == ["tr", "{cell_tag}", "{cell_tag}"]
          assert {SCRIPT!r} in "".join(page.text)''')
  return core.Instance("xss", "table_row", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("xss", CWE, (render_comment, profile_card, table_row))
