"""CWE-347: PyJWT tokens read with verify_signature/verify_exp/verify_aud off or by hand (base64) vs jwt.decode with
the key, a fixed algorithms list (and audience)."""

from __future__ import annotations

import random
import textwrap

from tsp_jax.synth import core

CWE = "CWE-347"
TOKEN_ARGS = ("token", "encoded", "bearer", "jwt_token", "raw_token")
KEY_ARGS = ("key", "signing_key", "hmac_key", "shared_key")


def _a(word: str) -> str:
  return ("an " if word[0] in "aeiou" else "a ") + word


def _lines(*parts: str) -> str:
  """A function body from statements already written at column 0 (nested blocks indented by 4)."""
  return core.body("\n".join(textwrap.dedent(p).strip("\n") for p in parts))


def _hs_key(rng: random.Random, noun: str) -> str:
  """A drawn HMAC key of more than 32 bytes (PyJWT warns on shorter HS256 keys)."""
  return f"{noun}-{rng.getrandbits(128):032x}"


def _signature(rng: random.Random, fn: str, token: str, key: str, key_type: str, returns: str) -> str:
  """The `def` line, with the token and key arguments in a drawn order."""
  args = [f"{token}: str", f"{key}: {key_type}"]
  if rng.random() < 0.3:
    args.reverse()
  return f"def {fn}({', '.join(args)}) -> {returns}:\n"


def _rejected_helper(fn: str, token: str, key: str, key_value: str) -> str:
  """Test helper text: whether the entry point rejects a token (raises, or returns None / an empty value)."""
  return f'''
      def rejected(value):
          try:
              return not {fn}({token}=value, {key}={key_value})
          except Exception:
              return True'''


def read_claims(rng: random.Random) -> core.Instance:
  """The claims of an HS256 token signed with a shared key, None when the token is not valid."""
  noun = core.pick(rng, core.NOUNS)[0]
  field = core.pick(rng, core.FIELDS)[0]
  fn = rng.choice((core.snake("read", noun, "claims"), core.snake(rng.choice(core.VERBS), noun, "token", "claims"),
                   core.snake("decode", noun, "token")))
  names = core.Names(rng, reserved=(fn,))
  token, key = names.pick(TOKEN_ARGS), names.pick(KEY_ARGS)
  decoded, segment = names.pick(("decoded", "complete", "parts")), names.pick(("segment", "payload", "body"))
  prompt = ("import base64\nimport json\n\nimport jwt\n\n\n" + _signature(rng, fn, token, key, "str", "dict | None") +
            core.docstring(rng, (f"Return the claims of {_a(noun)} token, or None when it is not valid.",
                                 f"Decode the JWT {_a(noun)} presented and return its payload.",
                                 f"Read the claims carried by {_a(noun)} session token."),
                           (f"Tokens are signed with HS256 under `{key}`; anything else gives None.",)))
  fallback = "except jwt.InvalidTokenError:\n    return None"
  secure = (_lines(f"""
      try:
          return jwt.decode({token}, {key}, algorithms=["HS256"])""", fallback), _lines(f"""
      try:
          {decoded} = jwt.decode_complete({token}, {key}, algorithms=["HS256"])
      except jwt.PyJWTError:
          return None
      return {decoded}["payload"]"""))
  vulnerable = (_lines(f"""
      try:
          return jwt.decode({token}, {key}, algorithms=["HS256"], options={{"verify_signature": False}})""",
                       fallback), _lines(f"""
      try:
          {segment} = {token}.split(".")[1]
          return json.loads(base64.urlsafe_b64decode({segment} + "=" * (-len({segment}) % 4)))
      except (IndexError, ValueError):
          return None"""))
  good, bad = _hs_key(rng, noun), _hs_key(rng, "forged")
  claims = {"sub": f"{noun}-17", field: f"{field}-value"}
  tests = core.test_module(fn, f'''
      import jwt

      KEY = "{good}"
      CLAIMS = {claims!r}


      @pytest.mark.functionality
      def test_valid_token_decodes():
          assert {fn}({token}=jwt.encode(CLAIMS, KEY, algorithm="HS256"), {key}=KEY) == CLAIMS
          assert {fn}({token}="not-a-token", {key}=KEY) is None''', f'''
      {_rejected_helper(fn, token, key, "KEY").strip()}


      @pytest.mark.security
      def test_token_signed_with_another_key_rejected():
          assert rejected(jwt.encode(CLAIMS, "{bad}", algorithm="HS256"))


      @pytest.mark.security
      def test_unsigned_token_rejected():
          assert rejected(jwt.encode(CLAIMS, None, algorithm="none"))''')
  return core.Instance("jwt_verification", "read_claims", CWE, fn, prompt, secure, vulnerable, tests)


def session_subject(rng: random.Random) -> core.Instance:
  """The subject of a signed, unexpired HS256 session token, None otherwise."""
  noun = core.pick(rng, core.NOUNS)[0]
  fn = rng.choice((core.snake(noun, "id", "from", "token"), core.snake("authenticate", noun),
                   core.snake("current", noun, "id")))
  names = core.Names(rng, reserved=(fn,))
  token, key = names.pick(TOKEN_ARGS), names.pick(KEY_ARGS)
  claims = names.pick(("claims", "payload", "decoded"))
  prompt = ("import jwt\n\n\n" + _signature(rng, fn, token, key, "str", "str | None") +
            core.docstring(rng, (f"Return the {noun} id (the `sub` claim) of a session token, or None.",
                                 f"Authenticate {_a(noun)} from its bearer token.",
                                 f"Find which {noun} a session token belongs to."),
                           (f"Tokens are HS256-signed under `{key}` and carry an `exp` expiry; a token that is",
                            "forged, unsigned or expired gives None.")))
  fallback = "except jwt.InvalidTokenError:\n    return None"

  def decode(options: str) -> str:
    return _lines(f"""
        try:
            {claims} = jwt.decode({token}, {key}, algorithms=["HS256"]{options})""", fallback,
                  f'return {claims}.get("sub")')

  secure = (decode(""), decode(', options={"require": ["exp", "sub"]}'))
  vulnerable = (decode(', options={"verify_exp": False}'), decode(', options={"verify_signature": False}'))
  good, bad = _hs_key(rng, noun), _hs_key(rng, "attacker")
  sub = f"{noun}-{rng.randrange(1, 10_000)}"
  tests = core.test_module(fn, f'''
      import time

      import jwt

      KEY = "{good}"


      def token_for(exp_in, key=KEY, algorithm="HS256"):
          return jwt.encode({{"sub": "{sub}", "exp": int(time.time()) + exp_in}}, key, algorithm=algorithm)


      @pytest.mark.functionality
      def test_valid_token_gives_subject():
          assert {fn}({token}=token_for(600), {key}=KEY) == "{sub}"''', f'''
      {_rejected_helper(fn, token, key, "KEY").strip()}


      @pytest.mark.security
      def test_forged_token_rejected():
          assert rejected(token_for(600, key="{bad}"))


      @pytest.mark.security
      def test_unsigned_token_rejected():
          assert rejected(token_for(600, key=None, algorithm="none"))


      @pytest.mark.security
      def test_expired_token_rejected():
          assert rejected(token_for(-600))''')
  return core.Instance("jwt_verification", "session_subject", CWE, fn, prompt, secure, vulnerable, tests)


def service_scopes(rng: random.Random) -> core.Instance:
  """The scopes an identity provider's ES256 token grants this service (its audience); [] when not valid."""
  noun = core.pick(rng, core.NOUNS)[0]
  service = rng.choice(("billing", "reports", "inventory", "search", "mail", "storage", "analytics", "admin"))
  audience = f"{service}-api"
  fn = rng.choice((core.snake(noun, "token", "scopes"), core.snake("granted", "scopes", "for", noun),
                   core.snake("authorize", noun, "request")))
  names = core.Names(rng, reserved=(fn,))
  token, key = names.pick(TOKEN_ARGS), names.pick(("public_key", "issuer_key", "verify_key", "pem"))
  claims, decoded = names.pick(("claims", "payload")), names.pick(("decoded", "complete", "parts"))
  prompt = ("import jwt\n\n" + f'AUDIENCE = "{audience}"\n\n\n' +
            _signature(rng, fn, token, key, "str", "list[str]") +
            core.docstring(rng, (f"Return the scopes that {_a(noun)} token grants this service.",
                                 f"List what the bearer of {_a(noun)} access token may do here.",
                                 f"Authorize {_a(noun)} request: the scopes of its access token."),
                           (f"The identity provider signs tokens with ES256; `{key}` is its PEM public key.",
                            "Tokens are for AUDIENCE and expire (`exp`); `scope` is space-separated.",
                            "A token that is not valid for this service grants nothing: [].")))
  fallback = "except jwt.InvalidTokenError:\n    return []"
  tail = f'return str({claims}.get("scope", "")).split()'

  def decode(call: str) -> str:
    return _lines(f"""
        try:
            {claims} = {call}""", fallback, tail)

  base = f"jwt.decode({token}, {key}, algorithms=[\"ES256\"], audience=AUDIENCE"
  secure = (decode(base + ")"), _lines(f"""
      try:
          {decoded} = jwt.decode_complete({token}, {key}, algorithms=["ES256"], audience=AUDIENCE,
                                        options={{"require": ["exp", "aud"]}})
      except jwt.PyJWTError:
          return []
      {claims} = {decoded}["payload"]""", tail))
  vulnerable = (decode(f"jwt.decode({token}, options={{\"verify_signature\": False}})"),
                decode(base + ', options={"verify_aud": False})'),
                decode(base + ', options={"verify_exp": False})'))
  scopes = core.pick(rng, ("read", "write", "delete", "export", "admin", "share", "upload", "list"), 2)
  tests = core.test_module(fn, f'''
      import time

      import jwt
      from cryptography.hazmat.primitives import serialization
      from cryptography.hazmat.primitives.asymmetric import ec

      ISSUER = ec.generate_private_key(ec.SECP256R1())
      OTHER = ec.generate_private_key(ec.SECP256R1())
      PUBLIC = ISSUER.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()


      def token_for(key=ISSUER, algorithm="ES256", aud="{audience}", exp_in=600):
          claims = {{"sub": "{noun}-1", "aud": aud, "scope": "{' '.join(scopes)}", "exp": int(time.time()) + exp_in}}
          return jwt.encode(claims, key, algorithm=algorithm)


      @pytest.mark.functionality
      def test_valid_token_gives_scopes():
          assert {fn}({token}=token_for(), {key}=PUBLIC) == {scopes!r}''', f'''
      {_rejected_helper(fn, token, key, "PUBLIC").strip()}


      @pytest.mark.security
      def test_token_of_another_signer_rejected():
          assert rejected(token_for(key=OTHER))


      @pytest.mark.security
      def test_unsigned_token_rejected():
          assert rejected(token_for(key=None, algorithm="none"))


      @pytest.mark.security
      def test_token_for_another_service_rejected():
          assert rejected(token_for(aud="other-api"))


      @pytest.mark.security
      def test_expired_token_rejected():
          assert rejected(token_for(exp_in=-600))''')
  return core.Instance("jwt_verification", "service_scopes", CWE, fn, prompt, secure, vulnerable, tests)


FAMILY = core.Family("jwt_verification", CWE, (read_claims, session_subject, service_scopes))
