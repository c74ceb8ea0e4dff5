"""CWE-601: redirect targets checked by prefix / substring / suffix (startswith("/") lets //evil through, `in` and
endswith on the host) vs urlparse / urlsplit with an exact scheme and host allow-list, rejecting // and backslashes."""

from __future__ import annotations

import random

from tsp_jax.synth import core

CWE = "CWE-601"
EVIL = "evil.test"
FALLBACKS = ("/", "/home", "/dashboard", "/account", "/welcome", "/index")
PAGES = ("/account/settings", "/orders?page=2", "/search?q=shoes", "/projects/42", "/inbox", "/help#contact")
UNTRUSTED = ("The value comes from the request's query string.", "The target is attacker-controlled.",
             "Only this site and the listed hosts may be redirected to.", "")


def _details(rng: random.Random, *lines: str) -> list[str]:
  note = rng.choice(UNTRUSTED)
  return [line for line in lines if line] + ([note] if note else [])


def _host(rng: random.Random) -> str:
  return f"{rng.choice(('', 'www.', 'app.', 'shop.', 'docs.'))}{core.pick(rng, core.NOUNS)[0]}.example"


def local_next(rng: random.Random) -> core.Instance:
  """Where to go after login: the `next` parameter when it is a path on this site, else a fallback page."""
  fn = core.snake(rng.choice(("safe", "checked", "resolve", "pick")),
                  rng.choice(("next_url", "next_page", "redirect_target", "return_to", "login_redirect")))
  names = core.Names(rng, reserved=(fn,))
  nxt = names.pick(("next_url", "next_page", "target", "return_to", "redirect_to"))
  parts = names.pick(("parts", "parsed", "url"))
  fallback = rng.choice(FALLBACKS)
  prompt = ("from urllib.parse import urlparse\n\n\n" f"def {fn}({nxt}: str) -> str:\n" +
            core.docstring(rng, (f"Return where to redirect after login: {nxt} if it is a path on this site, "
                                 f"else {fallback!r}.",
                                 f"Validate the `next` parameter {nxt} of the login form (local paths only).",
                                 f"Pick the post-login redirect: the local path {nxt}, or {fallback!r} when it is "
                                 "not one."),
                           _details(rng, "A local path starts with a single '/'.",
                                    f"URLs to other hosts, scheme-relative '//host' and backslashes give "
                                    f"{fallback!r}.")))
  reject = f"return {fallback!r}"
  secure = (core.body(f"""
      {parts} = urlparse({nxt})
      if {parts}.scheme or {parts}.netloc or not {nxt}.startswith("/"):
          {reject}
      if {nxt}.startswith("//") or "\\\\" in {nxt} or not {nxt}.isprintable():
          {reject}
      return {nxt}"""), core.body(f"""
      if {nxt}.startswith("/") and not {nxt}.startswith("//"):
          if "\\\\" not in {nxt} and {nxt}.isprintable():
              return {nxt}
      {reject}"""))
  vulnerable = (core.body(f"""
      if {nxt}.startswith("/"):
          return {nxt}
      {reject}"""), core.body(f"""
      {parts} = urlparse({nxt})
      if {parts}.scheme or {parts}.netloc:
          {reject}
      return {nxt}"""), core.body(f"""
      if {nxt}.startswith(("http://", "https://")):
          {reject}
      return {nxt}"""))
  page = rng.choice(PAGES)
  evil = ["//" + EVIL, "///" + EVIL, "/\\" + EVIL, "\\\\" + EVIL, "/\t/" + EVIL, "javascript:alert(1)"]
  tests = core.test_module(fn, f'''
      @pytest.mark.functionality
      def test_local_paths_kept():
          assert {fn}({page!r}) == {page!r}
          assert {fn}("/") == "/"
          assert {fn}("https://{EVIL}/login") == {fallback!r}''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("target", {evil!r})
      def test_offsite_rejected(target):
          assert {fn}(target) == {fallback!r}''')
  return core.Instance("open_redirect", "local_next", CWE, fn, prompt, secure, vulnerable, tests)


def partner_link(rng: random.Random) -> core.Instance:
  """An outgoing link: the target URL when it is http(s) on one of the trusted hosts, else a fallback page."""
  fn = core.snake(rng.choice(("checked", "safe", "validate", "resolve")),
                  rng.choice(("partner_link", "outbound_url", "redirect", "exit_link")))
  names = core.Names(rng, reserved=(fn,))
  target, trusted = names.pick(("url", "target", "link", "dest")), names.pick(("trusted", "partners", "allowed"))
  parts, netloc = names.pick(("parts", "parsed")), names.pick(("netloc", "host"))
  h = names.pick(("h", "host", "allowed_host"))
  fallback = rng.choice(FALLBACKS)
  args = [f"{target}: str", f"{trusted}: set[str]"]
  prompt = ("from urllib.parse import urlparse, urlsplit\n\n\n" f"def {fn}({', '.join(args)}) -> str:\n" +
            core.docstring(rng, (f"Return {target} if it is an http(s) URL on one of the {trusted} hosts, "
                                 f"else {fallback!r}.",
                                 f"Check an outbound redirect: only http/https URLs whose host is in {trusted}.",
                                 f"Validate the partner link {target} against the host allow-list {trusted}."),
                           _details(rng, f"The host must equal one of {trusted} exactly (lower case, no port, no "
                                         "user info).", "A URL with a backslash is refused.")))
  reject = f"return {fallback!r}"
  scheme = rng.choice(('("http", "https")', '{"http", "https"}'))
  secure = (core.body(f"""
      {parts} = urlparse({target})
      if "\\\\" in {target} or {parts}.scheme not in {scheme}:
          {reject}
      if {parts}.hostname not in {trusted} or {parts}.port is not None:
          {reject}
      return {target}"""), core.body(f"""
      {parts} = urlsplit({target})
      {netloc} = {parts}.netloc.lower()
      if "\\\\" in {target} or {parts}.scheme not in {scheme} or "@" in {netloc}:
          {reject}
      if {netloc} not in {trusted}:
          {reject}
      return {target}"""))
  vulnerable = (core.body(f"""
      for {h} in {trusted}:
          if {target}.startswith("https://" + {h}) or {target}.startswith("http://" + {h}):
              return {target}
      {reject}"""), core.body(f"""
      {parts} = urlparse({target})
      if {parts}.scheme not in {scheme}:
          {reject}
      if not any({parts}.netloc.endswith({h}) for {h} in {trusted}):
          {reject}
      return {target}"""), core.body(f"""
      if any({h} in {target} for {h} in {trusted}):
          return {target}
      {reject}"""))
  good, other = _host(rng), _host(rng)
  while other == good:
    other = _host(rng)
  page = rng.choice(PAGES)
  evil = [f"https://{good}.{EVIL}/", f"https://evil{good}/", f"https://{EVIL}/?from={good}",
          f"https://{good}@{EVIL}/", f"https://{EVIL}\\@{good}/"]
  tests = core.test_module(fn, f'''
      TRUSTED = {{{good!r}, {other!r}}}


      @pytest.mark.functionality
      def test_trusted_hosts_kept():
          assert {fn}("https://{good}{page}", TRUSTED) == "https://{good}{page}"
          assert {fn}("https://{other}/", TRUSTED) == "https://{other}/"
          assert {fn}("https://{EVIL}{page}", TRUSTED) == {fallback!r}''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("target", {evil!r})
      def test_other_hosts_rejected(target):
          assert {fn}(target, TRUSTED) == {fallback!r}''')
  return core.Instance("open_redirect", "partner_link", CWE, fn, prompt, secure, vulnerable, tests)


def registered_callback(rng: random.Random) -> core.Instance:
  """Whether an OAuth callback URL belongs to the client's registered origin (same scheme, host and port)."""
  fn = core.snake(rng.choice(("is", "check")), rng.choice(("registered", "allowed", "valid")),
                  rng.choice(("callback", "redirect_uri", "return_url")))
  names = core.Names(rng, reserved=(fn,))
  cb = names.pick(("callback", "redirect_uri", "callback_url"))
  origin = names.pick(("origin", "registered", "client_origin"))
  got, want = names.pick(("got", "actual", "parts")), names.pick(("want", "expected", "allowed"))
  args = [f"{cb}: str", f"{origin}: str"]
  prompt = ("from urllib.parse import urlsplit\n\n\n" f"def {fn}({', '.join(args)}) -> bool:\n" +
            core.docstring(rng, (f"Whether the OAuth redirect {cb} belongs to the client's registered {origin}.",
                                 f"Return True when {cb} has the same scheme, host and port as {origin}.",
                                 f"Check a client's {cb} against its registered {origin} before redirecting."),
                           _details(rng, f'{origin} looks like "https://app.example" or "https://app.example:8443".',
                                    f"{cb} may add any path and query; user info or a backslash in {cb} is refused.")))
  head = f"{got}, {want} = urlsplit({cb}), urlsplit({origin})"
  secure = (core.body(f"""
      {head}
      if "\\\\" in {cb} or {got}.username is not None or {got}.password is not None:
          return False
      return ({got}.scheme, {got}.hostname, {got}.port) == ({want}.scheme, {want}.hostname, {want}.port)"""),
            core.body(f"""
      {head}
      if "\\\\" in {cb}:
          return False
      return {got}.scheme == {want}.scheme and {got}.netloc.lower() == {want}.netloc.lower()"""))
  vulnerable = (core.body(f"""
      return {cb}.startswith({origin})"""), core.body(f"""
      {head}
      return {got}.scheme == {want}.scheme and {got}.netloc.endswith({want}.netloc)"""), core.body(f"""
      {head}
      return {got}.scheme == {want}.scheme and {want}.netloc in {cb}"""))
  host = _host(rng)
  port = rng.choice(("", "", ":8443", ":8080"))
  base = f"https://{host}{port}"
  path = rng.choice(("/oauth/callback", "/auth/done?state=1", "/cb", "/login/complete"))
  other = f"https://{EVIL}{path}"
  evil = [f"https://{host}{port}.{EVIL}{path}" if not port else f"https://{host}.{EVIL}{port}{path}",
          f"https://{host}{port}@{EVIL}{path}", f"https://evil{host}{port}{path}",
          f"https://{EVIL}{path}{'&' if '?' in path else '?'}next={base}", f"https://{EVIL}\\@{host}{port}{path}"]
  tests = core.test_module(fn, f'''
      ORIGIN = {base!r}


      @pytest.mark.functionality
      def test_same_origin():
          assert {fn}({base + path!r}, ORIGIN) is True
          assert {fn}({other!r}, ORIGIN) is False
          assert {fn}("http://{host}{port}{path}", ORIGIN) is False''', f'''
      @pytest.mark.security
      @pytest.mark.parametrize("url", {evil!r})
      def test_other_origins_rejected(url):
          assert {fn}(url, ORIGIN) is False''')
  return core.Instance("open_redirect", "registered_callback", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("open_redirect", CWE, (local_next, partner_link, registered_callback))
