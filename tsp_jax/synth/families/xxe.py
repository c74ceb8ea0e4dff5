"""CWE-611: untrusted XML parsed with xml.etree / xml.dom.minidom (entities expanded) vs defusedxml's parsers
(entity declarations or any DTD rejected)."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-611"
MARK = "INJECTED"
DTD = f'<!DOCTYPE d [<!ENTITY e "{MARK}">]>'
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "north", "south", "amber", "cobalt", "ivory")
FEED_TAGS = (("item", "title"), ("entry", "title"), ("item", "headline"), ("post", "subject"), ("entry", "name"))
UNTRUSTED = ("The document comes from an untrusted client.", "The XML is supplied by users.",
             "Treat the input as untrusted.", "")


def _details(rng: random.Random, *lines: str) -> list[str]:
  note = rng.choice(UNTRUSTED)
  return [line for line in lines if line] + ([note] if note else [])


def _security_test(fn: str, evil: str | bytes) -> str:
  """The security test of every template: the entity of `evil` is not expanded (the parser may raise)."""
  return f'''
      @pytest.mark.security
      def test_entity_not_expanded():
          try:
              result = {fn}({evil!r})
          except Exception:
              return
          assert {MARK!r} not in repr(result)'''


def parse_record(rng: random.Random) -> core.Instance:
  """The child elements of an XML document's root, as a dict of tag -> text."""
  noun = core.pick(rng, core.NOUNS)[0]
  fields = core.pick(rng, core.FIELDS, rng.randint(2, 3))
  fn = core.snake(rng.choice(("parse", "read", "load", "decode", "extract")), noun, rng.choice(("", "xml", "fields")))
  names = core.Names(rng, reserved=(fn, "child"))
  arg = names.pick(("xml_text", "payload", "document", "raw", "body", "data", f"{noun}_xml"))
  root, parser = names.pick(("root", "tree", "element")), names.pick(("parser", "xml_parser"))
  prompt = ("import xml.etree.ElementTree as ET\n\nimport defusedxml.ElementTree\n\n\n"
            f"def {fn}({arg}: str) -> dict[str, str]:\n" +
            core.docstring(rng, (f"Parse the {noun} XML in {arg} and return its fields as a dict.",
                                 f"Return a dict mapping each child tag of the <{noun}> root to its text.",
                                 f"Read the fields of a {noun} sent as XML."),
                           _details(rng, f"Example: <{noun}><{fields[0]}>x</{fields[0]}></{noun}> -> "
                                         f"{{'{fields[0]}': 'x'}}. Missing text counts as ''.")))
  strip = rng.random() < 0.4
  pre = f"{arg} = {arg}.strip()\n      " if strip else ""
  ret = f"return {{child.tag: child.text or \"\" for child in {root}}}"
  secure = (core.body(f"""
      {pre}{root} = defusedxml.ElementTree.fromstring({arg})
      {ret}"""), core.body(f"""
      {pre}{root} = defusedxml.ElementTree.fromstring({arg}, forbid_dtd=True)
      {ret}"""), core.body(f"""
      {pre}try:
          {root} = defusedxml.ElementTree.fromstring({arg})
      except defusedxml.DefusedXmlException:
          return {{}}
      {ret}"""))
  vulnerable = (core.body(f"""
      {pre}{root} = ET.fromstring({arg})
      {ret}"""), core.body(f"""
      {pre}{parser} = ET.XMLParser()
      {parser}.feed({arg})
      {root} = {parser}.close()
      {ret}"""))
  values = rng.sample(WORDS, len(fields))
  doc = f"<{noun}>" + "".join(f"<{f}>{v}</{f}>" for f, v in zip(fields, values)) + f"</{noun}>"
  evil = DTD + f"<{noun}><{fields[0]}>&e;</{fields[0]}></{noun}>"
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_fields():
          assert {fn}({doc!r}) == {dict(zip(fields, values))!r}
          assert {fn}("<{noun}><{fields[1]}/></{noun}>") == {{"{fields[1]}": ""}}''', _security_test(fn, evil))
  return core.Instance("xxe", "parse_record", CWE, fn, prompt, secure, vulnerable, tests)


def load_settings(rng: random.Random) -> core.Instance:
  """Named settings read from an XML config file, as a dict of name -> value."""
  root_tag = rng.choice(("config", "settings", "preferences", "options", "configuration"))
  item = rng.choice(("option", "setting", "entry", "param", "property"))
  attr = rng.choice(("name", "key", "id"))
  noun = core.pick(rng, core.NOUNS)[0]
  fn = core.snake(rng.choice(("load", "read", "parse", "get")), noun, rng.choice(("settings", "config", "options")))
  names = core.Names(rng, reserved=(fn, "f"))
  path = names.pick(("path", "config_path", "filename", "xml_path", "source"))
  use_defaults = rng.random() < 0.5
  defaults = names.pick(("defaults", "base", "fallback"))
  result, root = names.pick(("result", "settings", "out")), names.pick(("root", "top"))
  tree = names.pick(("tree", "doc"))
  node = names.pick(("node", "element", "entry"))
  args = [f"{path}: str"] + ([f"{defaults}: dict[str, str] | None = None"] if use_defaults else [])
  prompt = ("import xml.etree.ElementTree as ET\n\nimport defusedxml.ElementTree\n\n\n"
            f"def {fn}({', '.join(args)}) -> dict[str, str]:\n" +
            core.docstring(rng, (f"Load the {noun} settings stored as XML in the file {path}.",
                                 f"Read the XML config file at {path} into a dict of {attr} -> value.",
                                 f"Return the <{item}> entries of the {noun} config file as a dict."),
                           _details(rng, f"Each <{item} {attr}=\"...\">value</{item}> under <{root_tag}> becomes "
                                         "one entry; empty text counts as ''.",
                                    f"Entries of {defaults} are kept unless the file sets them." if use_defaults
                                    else "")))
  start = (f"{result} = dict({defaults} or {{}})" if use_defaults else f"{result} = {{}}") + "\n      "
  loop = f"""for {node} in {root}.iter("{item}"):
          {result}[{node}.get("{attr}")] = {node}.text or \"\"
      return {result}"""
  secure = (core.body(f"""
      {start}{root} = defusedxml.ElementTree.parse({path}).getroot()
      {loop}"""), core.body(f"""
      {start}{tree} = defusedxml.ElementTree.parse({path}, forbid_dtd=True)
      {root} = {tree}.getroot()
      {loop}"""), core.body(f"""
      {start}with open({path}, encoding="utf-8") as f:
          {root} = defusedxml.ElementTree.fromstring(f.read())
      {loop}"""))
  vulnerable = (core.body(f"""
      {start}{root} = ET.parse({path}).getroot()
      {loop}"""), core.body(f"""
      {start}with open({path}, encoding="utf-8") as f:
          {root} = ET.fromstring(f.read())
      {loop}"""))
  keys = core.pick(rng, core.FIELDS, 2)
  vals = rng.sample(WORDS, 2)
  doc = f"<{root_tag}>" + "".join(f'<{item} {attr}="{k}">{v}</{item}>' for k, v in zip(keys, vals)) + f"</{root_tag}>"
  evil = DTD + f'<{root_tag}><{item} {attr}="{keys[0]}">&e;</{item}></{root_tag}>'
  extra = (f'''
          assert {fn}(str(p), {{"{keys[0]}": "x", "z": "y"}}) == {{"{keys[0]}": "{vals[0]}", "z": "y", '''
           f'''"{keys[1]}": "{vals[1]}"}}''' if use_defaults else "")
  tests = core.test_module(fn, f'''
      def write(tmp_path, text):
          p = tmp_path / "settings.xml"
          p.write_text(text, encoding="utf-8")
          return p


      @pytest.mark.functionality
      def test_reads_settings(tmp_path):
          p = write(tmp_path, {doc!r})
          assert {fn}(str(p)) == {dict(zip(keys, vals))!r}{extra}''', f'''
      @pytest.mark.security
      def test_entity_not_expanded(tmp_path):
          p = write(tmp_path, {evil!r})
          try:
              result = {fn}(str(p))
          except Exception:
              return
          assert {MARK!r} not in repr(result)''')
  return core.Instance("xxe", "load_settings", CWE, fn, prompt, secure, vulnerable, tests)


def feed_titles(rng: random.Random) -> core.Instance:
  """The titles of a news feed's items, parsed with the DOM API."""
  item, title = rng.choice(FEED_TAGS)
  noun = core.pick(rng, ("news", "blog", "podcast", "release", "event", "job", "product", "course"))[0]
  fn = core.snake(rng.choice(("feed", "list", "collect", "extract", "get")), noun, f"{title}s")
  names = core.Names(rng, reserved=(fn, "t"))
  arg = names.pick(("data", "feed", "raw", "content", "xml_bytes", "payload"))
  dom, root = names.pick(("doc", "dom", "document")), names.pick(("root", "tree"))
  node = names.pick(("node", "element"))
  prompt = ("import io\nfrom xml.dom import minidom\n\nimport defusedxml.minidom\n\n\n"
            f"def {fn}({arg}: bytes) -> list[str]:\n" +
            core.docstring(rng, (f"Return the <{title}> text of every <{item}> in the {noun} feed {arg}.",
                                 f"List the {title}s of the {item}s of an XML {noun} feed, in document order.",
                                 f"Extract the {item} {title}s from the {noun} feed XML."),
                           _details(rng, f"{arg} is the raw XML of the feed (bytes); a {title} without text "
                                         "gives ''.")))
  ret = f"""return ["".join(t.data for t in {node}.childNodes if t.nodeType == t.TEXT_NODE)
              for {node} in {dom}.getElementsByTagName("{title}")]"""
  secure = (core.body(f"""
      {dom} = defusedxml.minidom.parseString({arg})
      {ret}"""), core.body(f"""
      {dom} = defusedxml.minidom.parse(io.BytesIO({arg}), forbid_dtd=True)
      {ret}"""), core.body(f"""
      import defusedxml.ElementTree
      {root} = defusedxml.ElementTree.fromstring({arg})
      return [{node}.text or "" for {node} in {root}.iter("{title}")]"""))
  vulnerable = (core.body(f"""
      {dom} = minidom.parseString({arg})
      {ret}"""), core.body(f"""
      {dom} = minidom.parse(io.BytesIO({arg}))
      {ret}"""), core.body(f"""
      import xml.etree.ElementTree as ET
      {root} = ET.fromstring({arg})
      return [{node}.text or "" for {node} in {root}.iter("{title}")]"""))
  titles = rng.sample(WORDS, 2)
  channel = rng.choice(("channel", "feed", "items"))
  doc = (f"<{channel}>" + "".join(f"<{item}><{title}>{t}</{title}></{item}>" for t in titles) +
         f"<{item}><{title}/></{item}></{channel}>").encode()
  evil = (DTD + f"<{channel}><{item}><{title}>&e;</{title}></{item}></{channel}>").encode()
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_titles():
          assert {fn}({doc!r}) == {titles + [""]!r}
          assert {fn}(b"<{channel}/>") == []''', _security_test(fn, evil))
  return core.Instance("xxe", "feed_titles", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("xxe", CWE, (parse_record, load_settings, feed_titles))
