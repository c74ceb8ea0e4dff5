"""CWE-117: user text logged or appended to a log file raw (%s, f-string, +) vs neutralised (CR/LF replaced,
repr / %r, unicode_escape)."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-117"
LOGGERS = ("auth", "audit", "security", "app", "access", "events", "api")
LOGVARS = ("logger", "log", "audit_log", "app_logger")
LEVELS = ("info", "warning", "error")
USERS = ("alice", "bob", "carol", "dave", "erin", "mallory", "trent", "peggy")

# A capturing handler on the task's logger: every emitted record is one "LEVEL name: message" line.
CAPTURE = '''
      import io
      import logging


      def capture():
          stream = io.StringIO()
          handler = logging.StreamHandler(stream)
          handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
          log = logging.getLogger({name!r})
          log.handlers[:] = [handler]
          log.setLevel(logging.DEBUG)
          log.propagate = False
          return stream'''


def _logger(rng: random.Random) -> tuple[str, str, str, bool, str]:
  """(logger name, module variable, level method, whether `re` is imported, the prompt's imports + logger)."""
  name = rng.choice(LOGGERS) + rng.choice(("", ".web", ".jobs", ".service"))
  var, level = rng.choice(LOGVARS), rng.choice(LEVELS)
  has_re = rng.random() < 0.5
  imports = "import logging\nimport re\n" if has_re else "import logging\n"
  return name, var, level, has_re, f"{imports}\n{var} = logging.getLogger({name!r})\n\n\n"


def _clean(value: str, out: str, has_re: bool = False) -> tuple[str, ...]:
  """Lines that set `out` to `value` with CR/LF neutralised, one idiom each (re imported locally if need be)."""
  return (f'{out} = {value}.replace("\\r", "\\\\r").replace("\\n", "\\\\n")',
          f'{out} = {value}.encode("unicode_escape").decode("ascii")',
          ("" if has_re else "import re\n      ") + f'{out} = re.sub(r"[\\r\\n]+", " ", {value})')


def failed_login(rng: random.Random) -> core.Instance:
  """A warning that a login failed, with the (user-supplied) user name."""
  name, var, level, has_re, head = _logger(rng)
  fn = core.snake(rng.choice(("record", "log", "report", "note")), "failed", rng.choice(("login", "signin", "auth")))
  names = core.Names(rng, reserved=(fn, var))
  who = names.pick(("username", "user", "login", "account_name", "handle"))
  count = names.pick(("attempts", "failures", "tries", "count"))
  args = [f"{who}: str", f"{count}: int"]
  if rng.random() < 0.5:
    args.reverse()
  phrase = rng.choice(("failed login for", "login failed for", "authentication failed for", "rejected login of"))
  prompt = (head + f"def {fn}({', '.join(args)}) -> None:\n" +
            core.docstring(rng, (f"Log that a login attempt for {who} failed.",
                                 f"Log at {level} level to {name!r} when {who} fails to sign in.",
                                 f"Record a failed sign-in of {who} ({count} so far) in the log."),
                           (f"The message reads '{phrase} <{who}> (<{count}> attempts)', at level {level}.",
                            f"{who} is exactly what the client typed.")))
  msg = f"{phrase} %s (%d attempts)"
  cleaned = names.pick(("safe", "cleaned", "shown"))
  secure = tuple(core.body(f"""
      {line}
      {var}.{level}("{msg}", {cleaned}, {count})""") for line in _clean(who, cleaned, has_re)[:2]) + (core.body(f"""
      {var}.{level}("{phrase} %r (%d attempts)", {who}, {count})"""),)
  vulnerable = (core.body(f"""
      {var}.{level}("{msg}", {who}, {count})"""), core.body(f"""
      {var}.{level}(f"{phrase} {{{who}}} ({{{count}}} attempts)")"""), core.body(f"""
      {var}.{level}("{phrase} " + {who} + " (" + str({count}) + " attempts)")"""))
  user = rng.choice(USERS)
  kw = f"{who}={user!r}, {count}=3"
  forged = f"{user}\n{level.upper()} {name}: login succeeded for admin"
  tests = core.test_module(fn, CAPTURE.format(name=name) + f'''


      @pytest.mark.functionality
      def test_logs_one_line():
          stream = capture()
          {fn}({kw})
          out = stream.getvalue()
          assert out.count("\\n") == 1 and out.startswith("{level.upper()} ")
          assert "{user}" in out and "3 attempts" in out''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("sep", ["\\n", "\\r\\n", "\\r"])
      def test_cannot_forge_a_line(sep):
          stream = capture()
          {fn}({who}={forged!r}.replace("\\n", sep), {count}=3)
          out = stream.getvalue()
          assert len(out.splitlines()) == 1
          assert "login succeeded for admin" in out''')
  return core.Instance("log_injection", "failed_login", CWE, fn, prompt, secure, vulnerable, tests)


def search_audit(rng: random.Random) -> core.Instance:
  """Items matching a search query, with the query and the number of hits logged."""
  name, var, level, has_re, head = _logger(rng)
  noun = core.pick(rng, core.NOUNS)[0]
  fn = core.snake(rng.choice(("search", "filter", "find", "match")), noun + "s")
  names = core.Names(rng, reserved=(fn, var, "x"))
  items, query = names.pick((f"{noun}s", "items", "names", "titles")), names.pick(("query", "term", "search", "q"))
  args = [f"{items}: list[str]", f"{query}: str"]
  prompt = (head + f"def {fn}({', '.join(args)}) -> list[str]:\n" +
            core.docstring(rng, (f"Return the entries of {items} that contain {query}, and log the search.",
                                 f"Search {items} for {query} (case-insensitive); every search is logged.",
                                 f"Filter the {noun} names by a user's search {query} and audit it in the log."),
                           (f"Matching ignores case. One {level} line records the query and the hit count.",)))
  cleaned, hits = names.pick(("shown", "safe_query", "printable")), names.pick(("hits", "found", "matches"))
  match = f"{hits} = [x for x in {items} if {query}.lower() in x.lower()]"
  msg = rng.choice(("search %s: %d hits", "query %s matched %d", "searched for %s (%d results)"))
  msg_r = msg.replace("%s", "%r")
  secure = tuple(core.body(f"""
      {match}
      {line}
      {var}.{level}("{msg}", {cleaned}, len({hits}))
      return {hits}""") for line in _clean(query, cleaned, has_re)[1:]) + (core.body(f"""
      {match}
      {var}.{level}("{msg_r}", {query}, len({hits}))
      return {hits}"""),)
  vulnerable = (core.body(f"""
      {match}
      {var}.{level}("{msg}", {query}, len({hits}))
      return {hits}"""), core.body(f"""
      {match}
      {var}.{level}("{msg}" % ({query}, len({hits})))
      return {hits}"""))
  words = rng.sample(core.ADJECTIVES, 3)
  pool = [f"{words[0]} {noun}", f"{words[1].title()} {noun}s", f"{words[2]} one"]
  forged = f"zzz\n{level.upper()} {name}: search admin: 0 hits"
  tests = core.test_module(fn, CAPTURE.format(name=name) + f'''


      @pytest.mark.functionality
      def test_search_is_logged():
          stream = capture()
          assert {fn}({pool!r}, "{noun.upper()}") == {pool[:2]!r}
          out = stream.getvalue()
          assert out.count("\\n") == 1 and "{noun.upper()}" in out and "2" in out''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("sep", ["\\n", "\\r\\n", "\\r"])
      def test_cannot_forge_a_line(sep):
          stream = capture()
          assert {fn}({pool!r}, {forged!r}.replace("\\n", sep)) == []
          assert len(stream.getvalue().splitlines()) == 1''')
  return core.Instance("log_injection", "search_audit", CWE, fn, prompt, secure, vulnerable, tests)


def append_journal(rng: random.Random) -> core.Instance:
  """One line per user comment appended to a plain-text journal file."""
  noun = core.pick(rng, ("order", "ticket", "booking", "shipment", "invoice", "task", "incident", "job"))[0]
  text_word = rng.choice(("comment", "note", "remark", "message", "reason"))
  fn = core.snake(rng.choice(("append", "add", "write", "record")), noun, text_word)
  names = core.Names(rng, reserved=(fn, "f"))
  path = names.pick(("path", "journal_path", "log_path", "logfile"))
  key, text = names.pick((f"{noun}_id", "entry_id", "ref")), names.pick((text_word, "text", f"{text_word}_text"))
  args = [f"{path}: str", f"{key}: int", f"{text}: str"]
  if rng.random() < 0.4:
    args = args[1:] + args[:1]
  sep = rng.choice(("\\t", " | ", ": ", " - "))
  prompt = f"def {fn}({', '.join(args)}) -> None:\n" + \
      core.docstring(rng, (f"Append the {text} a customer left on {noun} {key} to the journal file {path}.",
                           f"Add one line '<{key}>{sep}<{text}>' to the {noun} journal at {path}.",
                           f"Record a {noun} {text} in the line-per-entry journal file {path}."),
                     (f"The journal holds one entry per line: {key}, '{sep}', then the {text}.",
                      f"The {text} is free text typed by the customer."))
  cleaned = names.pick(("line", "cleaned", "safe"))
  opener = f'with open({path}, "a", encoding="utf-8") as f:'
  secure = tuple(core.body(f"""
      {line}
      {opener}
          f.write(f"{{{key}}}{sep}{{{cleaned}}}\\n")""") for line in _clean(text, cleaned)) + (core.body(f"""
      {opener}
          f.write(f"{{{key}}}{sep}{{{text}!r}}\\n")"""),)
  vulnerable = (core.body(f"""
      {opener}
          f.write(f"{{{key}}}{sep}{{{text}}}\\n")"""), core.body(f"""
      {opener}
          print({key}, {text}, sep="{sep}", file=f)"""), core.body(f"""
      {opener}
          f.write(str({key}) + "{sep}" + {text} + "\\n")"""))
  words = rng.sample(core.ADJECTIVES, 2)
  forged = f"{words[0]}\n999{sep.replace(chr(92) + 't', chr(9))}refund approved"
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_appends_lines(tmp_path):
          p = tmp_path / "journal.log"
          {fn}({path}=str(p), {key}=7, {text}="{words[0]} delivery")
          {fn}({path}=str(p), {key}=8, {text}="{words[1]}")
          lines = p.read_text(encoding="utf-8").split("\\n")
          assert len(lines) == 3 and lines[2] == ""
          assert lines[0].startswith("7") and "{words[0]} delivery" in lines[0]
          assert lines[1].startswith("8") and "{words[1]}" in lines[1]''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("sep", ["\\n", "\\r\\n", "\\r"])
      def test_cannot_forge_an_entry(tmp_path, sep):
          p = tmp_path / "journal.log"
          {fn}({path}=str(p), {key}=7, {text}={forged!r}.replace("\\n", sep))
          with open(p, encoding="utf-8", newline="") as f:
              assert len(f.read().splitlines()) == 1''')
  return core.Instance("log_injection", "append_journal", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("log_injection", CWE, (failed_login, search_audit, append_journal))
