"""CWE-338: salts and IVs drawn from the `random` module (getrandbits, randrange, choices) vs secrets / os.urandom."""

from __future__ import annotations

import random
import textwrap

from tsp_jax.synth import core

CWE = "CWE-338"
PASSWORD_ARGS = ("password", "raw_password", "plain_password", "passwd")
PASSPHRASE_ARGS = ("passphrase", "phrase", "master_phrase", "pin_phrase")
KEY_ARGS = ("key", "aes_key", "data_key", "cipher_key")


def _a(word: str) -> str:
  return ("an " if word[0] in "aeiou" else "a ") + word


def _body(*parts: str) -> str:
  """A function body from blocks that are each dedented on their own (so a drawn statement can lead)."""
  return core.body("\n".join(textwrap.dedent(p).strip("\n") for p in parts if p.strip()))


def _draws(var: str, n: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(secure, vulnerable) statements assigning `var` n unpredictable / predictable random bytes."""
  secure = (f"{var} = secrets.token_bytes({n})", f"{var} = os.urandom({n})")
  vulnerable = (f'{var} = random.getrandbits({8 * n}).to_bytes({n}, "big")',
                f"{var} = bytes(random.randrange(256) for _ in range({n}))",
                f"{var} = bytes(random.choices(range(256), k={n}))")
  return secure, vulnerable


def _imports(*modules: str, froms: tuple[str, ...] = ()) -> str:
  """The prompt's import block: `modules` with os, random and secrets (so every body compiles), then `froms`."""
  plain = "".join(f"import {m}\n" for m in sorted(set(modules) | {"os", "random", "secrets"}))
  return plain + ("\n" + "".join(f"{line}\n" for line in froms) if froms else "")


def password_salt(rng: random.Random) -> core.Instance:
  """Store a password as PBKDF2-HMAC-SHA256 under a fresh salt: "<salt hex><sep><digest hex>"."""
  noun = core.pick(rng, core.NOUNS)[0]
  fn = rng.choice((core.snake("hash", noun, "password"), core.snake("store", noun, "password"),
                   core.snake(noun, "password", "record")))
  names = core.Names(rng, reserved=(fn, "_"))
  pw, salt = names.pick(PASSWORD_ARGS), names.pick(("salt", "salt_bytes", "fresh_salt"))
  digest = names.pick(("digest", "derived", "key"))
  n, iters, sep = rng.choice((16, 16, 24, 32)), rng.choice((100_000, 120_000, 150_000)), rng.choice(("$", ":", "."))
  prompt = (_imports("hashlib") + f"\n\ndef {fn}({pw}: str) -> str:\n" +
            core.docstring(rng, (f"Hash the password of {_a(noun)} for storage.",
                                 f"Return the record under which {_a(noun)}'s password is stored.",
                                 f"Derive the stored form of a new {noun} password."),
                           (f"PBKDF2-HMAC-SHA256 with {iters:_} iterations under a new {n}-byte salt; the record is",
                            f'"<salt hex>{sep}<digest hex>".')))
  tail = f"""
      {digest} = hashlib.pbkdf2_hmac("sha256", {pw}.encode(), {salt}, {iters:_})
      return {salt}.hex() + "{sep}" + {digest}.hex()"""
  good, bad = _draws(salt, n)
  secure = tuple(_body(d, tail) for d in good)
  vulnerable = tuple(_body(d, tail) for d in bad)
  tests = core.test_module(fn, f'''
      import hashlib


      @pytest.mark.functionality
      def test_record_verifies():
          record = {fn}("s3cret-Pass")
          salt_hex, digest_hex = record.split("{sep}")
          salt = bytes.fromhex(salt_hex)
          assert len(salt) == {n}
          assert hashlib.pbkdf2_hmac("sha256", b"s3cret-Pass", salt, {iters}).hex() == digest_hex
          assert hashlib.pbkdf2_hmac("sha256", b"other", salt, {iters}).hex() != digest_hex


      @pytest.mark.functionality
      def test_salts_are_fresh():
          assert {fn}("same") != {fn}("same")''', None)
  return core.Instance("insecure_random", "password_salt", CWE, fn, prompt, secure, vulnerable, tests,
                       judge=core.JUDGE_STATIC)


def cbc_iv(rng: random.Random) -> core.Instance:
  """Encrypt with AES-CBC and PKCS7 padding under a fresh IV, returned in front of the ciphertext."""
  noun, field = core.pick(rng, core.NOUNS)[0], core.pick(rng, core.FIELDS)[0]
  fn = rng.choice((core.snake("encrypt", noun, field), core.snake("seal", noun, "record"),
                   core.snake(noun, field, "ciphertext")))
  names = core.Names(rng, reserved=(fn, "_"))
  key, data = names.pick(KEY_ARGS), names.pick(("data", "plaintext", field, "blob"))
  iv = names.pick(("iv", "init_vector", "cbc_iv"))
  padder, padded = names.pick(("padder", "pad")), names.pick(("padded", "block_data"))
  encryptor = names.pick(("encryptor", "enc", "cipher"))
  args = [f"{key}: bytes", f"{data}: bytes"]
  if rng.random() < 0.5:
    args.reverse()
  froms = ("from cryptography.hazmat.primitives import padding",
           "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes")
  prompt = (_imports(froms=froms) + f"\n\ndef {fn}({', '.join(args)}) -> bytes:\n" +
            core.docstring(rng, (f"Encrypt the {field} of {_a(noun)} with AES-CBC under `{key}`.",
                                 f"Return the AES-CBC ciphertext of {_a(noun)} {field}.",
                                 f"Seal {_a(noun)} {field} for storage with AES in CBC mode."),
                           ("Pad with PKCS7, use a new 16-byte IV per call and return IV + ciphertext.",)))
  tail = f"""
      {padder} = padding.PKCS7(128).padder()
      {padded} = {padder}.update({data}) + {padder}.finalize()
      {encryptor} = Cipher(algorithms.AES({key}), modes.CBC({iv})).encryptor()
      return {iv} + {encryptor}.update({padded}) + {encryptor}.finalize()"""
  good, bad = _draws(iv, 16)
  secure = tuple(_body(d, tail) for d in good)
  vulnerable = tuple(_body(d, tail) for d in bad)
  tests = core.test_module(fn, f'''
      from cryptography.hazmat.primitives import padding
      from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

      KEY = bytes(range(32))


      def decrypt(blob):
          decryptor = Cipher(algorithms.AES(KEY), modes.CBC(blob[:16])).decryptor()
          padded = decryptor.update(blob[16:]) + decryptor.finalize()
          unpadder = padding.PKCS7(128).unpadder()
          return unpadder.update(padded) + unpadder.finalize()


      @pytest.mark.functionality
      def test_encrypt_then_decrypt():
          blob = {fn}({key}=KEY, {data}=b"{noun} {field} 42")
          assert len(blob) % 16 == 0 and len(blob) >= 32
          assert decrypt(blob) == b"{noun} {field} 42"


      @pytest.mark.functionality
      def test_fresh_iv_per_call():
          a, b = {fn}({key}=KEY, {data}=b"same"), {fn}({key}=KEY, {data}=b"same")
          assert a[:16] != b[:16] and decrypt(a) == decrypt(b) == b"same"''', None)
  return core.Instance("insecure_random", "cbc_iv", CWE, fn, prompt, secure, vulnerable, tests,
                       judge=core.JUDGE_STATIC)


def passphrase_seal(rng: random.Random) -> core.Instance:
  """Encrypt a note under a passphrase: a PBKDF2HMAC key under a fresh salt, then Fernet; salt + token."""
  noun = core.pick(rng, core.NOUNS)[0]
  fn = rng.choice((core.snake("seal", noun, "note"), core.snake("lock", noun, "secret"),
                   core.snake("encrypt", noun, "with", "passphrase")))
  names = core.Names(rng, reserved=(fn, "_"))
  phrase, note = names.pick(PASSPHRASE_ARGS), names.pick(("note", "text", "memo", "message"))
  salt, n, iters = names.pick(("salt", "kdf_salt", "fresh_salt")), rng.choice((16, 16, 32)), rng.choice((
      100_000, 150_000, 200_000))
  kdf, fernet = names.pick(("kdf", "derivation")), names.pick(("fernet", "box", "sealer"))
  args = [f"{phrase}: str", f"{note}: str"]
  if rng.random() < 0.5:
    args.reverse()
  froms = ("from cryptography.fernet import Fernet", "from cryptography.hazmat.primitives import hashes",
           "from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC")
  prompt = (_imports("base64", froms=froms) + f"\n\ndef {fn}({', '.join(args)}) -> bytes:\n" +
            core.docstring(rng, (f"Encrypt {_a(noun)} {note} so that only the passphrase can open it.",
                                 f"Seal the {note} of {_a(noun)} under `{phrase}`.",
                                 f"Return {_a(noun)} {note} encrypted with a key derived from a passphrase."),
                           (f"Derive a 32-byte key with PBKDF2HMAC (SHA-256, {iters:_} iterations) under a new "
                            f"{n}-byte salt,", "use it (urlsafe base64) as a Fernet key, return salt + token.")))
  tail = f"""
      {kdf} = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt={salt}, iterations={iters:_})
      {fernet} = Fernet(base64.urlsafe_b64encode({kdf}.derive({phrase}.encode())))
      return {salt} + {fernet}.encrypt({note}.encode())"""
  good, bad = _draws(salt, n)
  secure = tuple(_body(d, tail) for d in good)
  vulnerable = tuple(_body(d, tail) for d in bad)
  tests = core.test_module(fn, f'''
      import base64

      from cryptography.fernet import Fernet
      from cryptography.hazmat.primitives import hashes
      from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC


      def open_sealed(blob, phrase):
          kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=blob[:{n}], iterations={iters})
          return Fernet(base64.urlsafe_b64encode(kdf.derive(phrase.encode()))).decrypt(blob[{n}:]).decode()


      @pytest.mark.functionality
      def test_seal_then_open():
          blob = {fn}({phrase}="open sesame", {note}="meet at {noun} 9")
          assert open_sealed(blob, "open sesame") == "meet at {noun} 9"


      @pytest.mark.functionality
      def test_fresh_salt_per_call():
          a, b = {fn}({phrase}="p", {note}="x"), {fn}({phrase}="p", {note}="x")
          assert a[:{n}] != b[:{n}]''', None)
  return core.Instance("insecure_random", "passphrase_seal", CWE, fn, prompt, secure, vulnerable, tests,
                       judge=core.JUDGE_STATIC)


FAMILY = core.Family("insecure_random", CWE, (password_salt, cbc_iv, passphrase_seal))
