"""Tokenizer: exact round trips on code, special ids, batch padding, decoding, training and the CLI."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from tsp_jax import tokenizer as tokenizer_lib

VOCAB = 512
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

CORPUS = [
    "import os\nimport sys\n\n\ndef main(argv):\n    path = os.path.join(argv[1], 'data.txt')\n"
    "    with open(path) as f:\n        return f.read()\n",
    "from flask import Flask, request, redirect\n\napp = Flask(__name__)\n\n\n@app.route('/login')\n"
    "def login():\n    target = request.args.get('next', '/')\n    return redirect(target)\n",
    "def run(cmd):\n    import subprocess\n"
    "    return subprocess.run(cmd, shell=False, check=True, capture_output=True)\n",
    "def query(db, user_id):\n    cursor = db.cursor()\n"
    "    cursor.execute('SELECT * FROM users WHERE id = %s', (user_id,))\n"
    "    return cursor.fetchall()\n",
    "class Config:\n    \"\"\"Settings.\"\"\"\n\n    def __init__(self, name, value=None):\n        self.name = name\n"
    "        self.value = value\n\n    def __repr__(self):\n        return f'Config({self.name!r}, {self.value!r})'\n",
    "import yaml\n\n\ndef load(text):\n    return yaml.safe_load(text)\n",
    "import hashlib\n\n\ndef digest(password, salt):\n"
    "    return hashlib.pbkdf2_hmac('sha256', password, salt, 100000)\n",
    "def area(r):\n    # π r² (円の面積)\n    pi = 3.14159\n    return pi * r * r\n",
    "def greet(name):\n\tif not name:\n\t\treturn 'hello'\n\treturn 'hello, ' + name\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n    else:\n        continue\n",
    "try:\n    value = int(text)\nexcept ValueError as e:\n    raise RuntimeError('bad value') from e\n"
    "finally:\n    cleanup()\n",
    "def read_json(path):\r\n    import json\r\n    with open(path, 'r') as f:\r\n        return json.load(f)\r\n",
    "data = {'a': 1, 'b': [1, 2, 3], 'c': None}\nfor key, value in data.items():\n    print(key, value)\n",
    "import tempfile\n\n\ndef make_temp():\n    fd, name = tempfile.mkstemp()\n    return name\n",
    "def escape(s):\n    return s.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')\n",
    "async def fetch(session, url):\n    async with session.get(url) as response:\n"
    "        return await response.text()\n",
    "x = [i * i for i in range(100) if i > 5]\ny = {k: v for k, v in zip('abc', [4, 5, 6])}\n",
    "while True:\n    line = input()\n    if line == 'quit':\n        break\n    print(line.upper())\n",
    "def safe_join(base, name):\n    path = os.path.realpath(os.path.join(base, name))\n"
    "    if not path.startswith(base):\n        raise ValueError('path traversal')\n    return path\n",
    "import pickle\nimport json\n\n\ndef deserialize(blob):\n    return json.loads(blob)\n",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "@app.route('/user/<int:user_id>')\ndef user(user_id):\n"
    "    return render_template('user.html', user=get_user(user_id))\n",
    "import ssl\nimport requests\n\n\ndef get(url):\n    return requests.get(url, verify=True, timeout=10)\n",
    "def parse(xml_text):\n    from defusedxml import ElementTree\n    return ElementTree.fromstring(xml_text)\n",
]

TRICKY = [
    "def f(x):\n\treturn x  \n",  # tab indent, trailing spaces
    # 4/8/12-space indents, blank lines:
    "class A:\n    def g(self):\n        if True:\n            return 1\n\n\n    # done\n",
    "  leading spaces\n",
    " x",
    "\n\nstarts with newlines",
    "ends with spaces   ",
    "   \n\t\n",  # whitespace only
    "a  b   c    d\t\te",  # runs of spaces and tabs mid-line
    "s = 'π r² (円の面積)'\n",  # non-ASCII characters seen in training
    "emoji = '🙂'  # 日本 ü ﬁ ｆｕｌｌ e\u0301\n",  # unseen characters (byte fallback), some NFKC would rewrite
    "if a:\r\n    b = 1\r\n",  # CRLF
    "x=1;y=2\n" * 3,
    "12345678901234567890",
    "",
]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("tok") / "tok.model"
  tokenizer_lib.train_tokenizer(CORPUS, VOCAB, path)
  return path


@pytest.fixture(scope="module")
def llama_tok_path(tmp_path_factory) -> pathlib.Path:
  """Trained with CodeLlama's dummy prefix: encoding prepends a space to every text."""
  path = tmp_path_factory.mktemp("llama") / "tok.model"
  tokenizer_lib.train_tokenizer(CORPUS, VOCAB, path, add_dummy_prefix=True)
  return path


@pytest.fixture(scope="module")
def tok(tok_path) -> tokenizer_lib.Tokenizer:
  return tokenizer_lib.Tokenizer(tok_path)


@pytest.fixture(scope="module")
def llama_tok(llama_tok_path) -> tokenizer_lib.Tokenizer:
  return tokenizer_lib.Tokenizer(llama_tok_path)


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("bos", [True, False])
def test_round_trip_is_exact(tok, llama_tok, text, bos):
  for t in (tok, llama_tok):
    assert t.decode(t.encode(text, bos=bos, eos=True)) == text


def test_round_trip_on_corpus_and_compression(tok):
  assert all(tok.decode(tok.encode(t)) == t for t in CORPUS)
  assert tokenizer_lib.chars_per_token(tok, CORPUS) > 2.0  # 1.0 at character level (~170 merges here)


def test_long_texts_are_not_skipped(tmp_path):
  long = "s = '" + "\u0436" * 3000 + "'\n"  # 6 KB: sentencepiece skips sentences over 4192 bytes by default
  t = tokenizer_lib.train_tokenizer(CORPUS + [long], 400, tmp_path / "long.model")
  assert len(t.encode("\u0436", bos=False)) == 1  # a piece of its own, not two byte pieces
  assert t.decode(t.encode(long)) == long


def test_special_ids_follow_llama(tok):
  assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (VOCAB, 1, 2)
  assert tok.pad_id == tok.eos_id  # the model has no pad piece


def test_newline_is_its_own_token(tok):
  text = "def f():\n    return 1\n\n):\n"
  ids = tok.encode(text, bos=False)
  newline_id = tok.encode("\n", bos=False)
  assert len(newline_id) == 1
  assert ids.count(newline_id[0]) == text.count("\n")


def test_pieces_for_code(tok):
  assert len(tok.encode("        ", bos=False)) == 1  # indentation
  assert all(len(tok.encode(c, bos=False)) == 1 for c in set("".join(CORPUS)))  # even characters seen once


def test_bos_eos_placement(tok):
  body = tok.encode("x = 1", bos=False)
  assert body and tok.bos_id not in body and tok.eos_id not in body
  assert tok.encode("x = 1") == [tok.bos_id] + body
  assert tok.encode("x = 1", eos=True) == [tok.bos_id] + body + [tok.eos_id]
  assert tok.encode("x = 1", bos=False, eos=True) == body + [tok.eos_id]
  assert tok.encode("") == [tok.bos_id]


def test_encode_batch_pads_right_with_pad_id(tok):
  texts = ["x = 1", "def f():\n    return 2\n", ""]
  ids, lengths = tok.encode_batch(texts, eos=True, pad_to_multiple=8)
  singles = [tok.encode(t, eos=True) for t in texts]
  assert ids.dtype == np.int32 and lengths.dtype == np.int32
  assert lengths.tolist() == [len(s) for s in singles]
  assert ids.shape == (3, -(-max(lengths) // 8) * 8)
  for row, single in zip(ids, singles):
    assert row[:len(single)].tolist() == single
    assert (row[len(single):] == tok.pad_id).all()


def test_encode_batch_fixed_width(tok):
  ids, lengths = tok.encode_batch(["a", "b c"], max_len=16, pad_to_multiple=16)
  assert ids.shape == (2, 16) and lengths.tolist() == [len(tok.encode("a")), len(tok.encode("b c"))]
  ids, lengths = tok.encode_batch([])
  assert ids.shape == (0, 0) and lengths.shape == (0,)


def test_encode_batch_max_len(tok):
  long = "def f(a, b, c):\n    return a + b + c\n"
  n = len(tok.encode(long))
  with pytest.raises(ValueError, match=f"text 1 has {n} tokens > max_len 4 \\(pass truncate=True"):
    tok.encode_batch(["a", long], max_len=4)
  ids, lengths = tok.encode_batch(["a", long], max_len=4, truncate=True)
  assert ids.shape == (2, 4) and lengths[1] == 4
  assert ids[1].tolist() == tok.encode(long)[:4]


def test_encode_batch_bad_arguments(tok):
  with pytest.raises(ValueError, match="truncate=True needs max_len"):
    tok.encode_batch(["a"], truncate=True)
  with pytest.raises(ValueError, match="max_len 10 must be a positive multiple of pad_to_multiple 4"):
    tok.encode_batch(["a"], max_len=10, pad_to_multiple=4)
  with pytest.raises(ValueError, match="pad_to_multiple must be >= 1"):
    tok.encode_batch(["a"], pad_to_multiple=0)
  with pytest.raises(TypeError, match="got one str"):
    tok.encode_batch("abc")
  with pytest.raises(TypeError, match="encode takes one str"):
    tok.encode(["abc"])


def test_decode_stops_at_eos_and_ignores_pad(tok):
  first, second = "x = 1\n", "    y = 2\n"
  ids = tok.encode(first, eos=True) + tok.encode(second, bos=False) + [tok.pad_id] * 3
  assert tok.decode(ids) == first
  assert tok.decode(np.asarray(ids, np.int32)) == first
  assert tok.decode(ids, stop_at_eos=False) == first + second
  assert tok.decode([]) == ""


def test_decode_batch_round_trip(tok):
  texts = ["import os\n", "if a:\n\tb()\n", "x"]
  ids, lengths = tok.encode_batch(texts, eos=True)
  assert tok.decode_batch(ids, lengths) == texts
  assert tok.decode_batch(ids) == texts  # rows stop at EOS
  assert tok.decode_batch(ids, lengths - 2) == [tok.decode(r[:n]) for r, n in zip(ids, lengths - 2)]
  with pytest.raises(ValueError, match=r"lengths shape \(2,\) does not match ids shape \(3, "):
    tok.decode_batch(ids, lengths[:2])


def test_decode_rejects_bad_ids(tok):
  with pytest.raises(ValueError, match=f"ids out of range \\[0, {VOCAB}\\): \\[{VOCAB}, -1\\]"):
    tok.decode([1, 5, VOCAB, -1], stop_at_eos=False)
  with pytest.raises(ValueError, match="use decode_batch"):
    tok.decode(np.ones((2, 3), np.int32))


def test_dummy_prefix_model_is_llama_like(llama_tok, llama_tok_path):
  ids = llama_tok.encode("return x", bos=False)
  proc = spm.SentencePieceProcessor(model_file=str(llama_tok_path))
  assert proc.id_to_piece(ids[0]).startswith("\u2581")  # the dummy space, as in CodeLlama
  assert llama_tok.decode(ids) == "return x"
  assert llama_tok.decode([llama_tok.bos_id] + ids + [llama_tok.eos_id, 7]) == "return x"


def test_training_is_deterministic(tmp_path):
  a = tokenizer_lib.train_tokenizer(CORPUS, 400, tmp_path / "a.model", seed=0)
  b = tokenizer_lib.train_tokenizer(iter(CORPUS), 400, tmp_path / "sub" / "b.model", seed=1)
  c = tokenizer_lib.train_tokenizer(CORPUS[:-3], 400, tmp_path / "c.model")
  assert (tmp_path / "a.model").read_bytes() == (tmp_path / "sub" / "b.model").read_bytes()
  assert (tmp_path / "a.model").read_bytes() != (tmp_path / "c.model").read_bytes()
  assert a.encode(CORPUS[0]) == b.encode(CORPUS[0])
  assert c.vocab_size == 400


def test_trained_model_spec(tok_path):
  """The trainer settings, read back through the model's behaviour (sentencepiece's own API; its generated
  protobuf module needs a newer protobuf runtime than semgrep's dependencies allow in one environment)."""
  sp = spm.SentencePieceProcessor(model_file=str(tok_path))
  pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
  assert pieces[:5] == ["<unk>", "<s>", "</s>", "\n", "<0x00>"] and pieces[259] == "<0xFF>"
  assert all(sp.is_byte(i) for i in range(4, 260))
  assert all(sp.id_to_piece(i).startswith("<0x") for i in sp.encode("\u20ac"))  # byte fallback for unseen chars
  assert [sp.id_to_piece(i) for i in sp.encode("12345")] == ["1", "2", "3", "4", "5"]  # split_digits
  assert any(p.strip("\u2581") == "" and len(p) > 1 for p in pieces[260:])  # whitespace-only pieces (BPE merges)
  for text in ("x", "  a  b\n\tc  ", "\n\ndef f():\n    return 1\n"):  # identity normalizer, no dummy prefix
    assert sp.decode(sp.encode(text)) == text
  assert not sp.id_to_piece(sp.encode("x")[0]).startswith("\u2581")


def test_vocab_size_too_small(tmp_path):
  need = tokenizer_lib.min_vocab_size(CORPUS)
  assert need == 3 + 256 + 1 + len(set("".join(CORPUS)) - {"\n"})
  with pytest.raises(ValueError, match=f"vocab_size {need - 1} is too small for this corpus: it needs at least "
                                       f"{need} "):
    tokenizer_lib.train_tokenizer(CORPUS, need - 1, tmp_path / "small.model")
  assert tokenizer_lib.train_tokenizer(CORPUS, need, tmp_path / "min.model").vocab_size == need  # spm agrees
  with pytest.raises(ValueError, match="at least one non-empty text"):
    tokenizer_lib.train_tokenizer(["", ""], VOCAB, tmp_path / "empty.model")


def test_from_dir(tok, tmp_path):
  (tmp_path / "ckpt").mkdir()
  with pytest.raises(FileNotFoundError, match=f"no tokenizer.model in checkpoint folder '{tmp_path / 'ckpt'}'"):
    tokenizer_lib.Tokenizer.from_dir(tmp_path / "ckpt")
  tokenizer_lib.train_tokenizer(CORPUS, 400, tmp_path / "ckpt" / "tokenizer.model")
  loaded = tokenizer_lib.Tokenizer.from_dir(tmp_path / "ckpt")
  assert loaded.vocab_size == 400 and loaded.decode(loaded.encode(TRICKY[1])) == TRICKY[1]


def test_model_without_eos_is_rejected(tmp_path):
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "noeos"),
                                 vocab_size=200, eos_id=-1, minloglevel=2)
  with pytest.raises(ValueError, match="needs BOS and EOS pieces"):
    tokenizer_lib.Tokenizer(tmp_path / "noeos.model")


def _write_jsonl(path: pathlib.Path, records: list[dict]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n\n" for r in records), encoding="utf-8")  # blank lines skipped


def _data_dir(root: pathlib.Path) -> pathlib.Path:
  _write_jsonl(root / "b" / "train.jsonl", [
      {"id": "b/1", "cwe": "CWE-022", "prompt": "def f(p):\n", "reference_secure": "def f(p):\n    return p\n",
       "reference_vulnerable": None, "functional_tests": ""},
  ])
  _write_jsonl(root / "a" / "dev.jsonl", [
      {"id": "a/1", "prompt": "import os\n", "reference_solution": "import os\nprint(os.sep)\n",
       "security_tests": "assert os.sep\n"},
  ])
  (root / "a" / "support_files.json").write_text('{"x.py": "ignored = 1\\n"}')
  return root


def test_iter_code_texts(tmp_path):
  texts = list(tokenizer_lib.iter_code_texts(_data_dir(tmp_path / "data")))
  assert texts == ["import os\n", "import os\nprint(os.sep)\n", "assert os.sep\n",  # a/dev.jsonl first
                   "def f(p):\n", "def f(p):\n    return p\n"]
  with pytest.raises(FileNotFoundError, match="no \\*.jsonl files under"):
    list(tokenizer_lib.iter_code_texts(tmp_path / "missing"))


def test_cli(tmp_path):
  data = _data_dir(tmp_path / "data")
  _write_jsonl(data / "c.jsonl", [{"reference_secure": s} for s in CORPUS])
  out = tmp_path / "cli" / "tok.model"
  result = subprocess.run(
      [sys.executable, "-m", "tsp_jax.tokenizer", f"--data_dir={data}", "--vocab_size=400", f"--out={out}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
  assert f"wrote {out}: vocab_size=400 texts={len(CORPUS) + 5} " in result.stdout
  assert "chars/token=" in result.stdout and "train_s=" in result.stdout
  assert tokenizer_lib.Tokenizer(out).vocab_size == 400


def test_split_words_tokenizes_a_name_the_same_after_a_space_and_after_punctuation(tmp_path):
  body = "def f({n}, x):\n    y = g(x) + {n}\n    return {n}.strip() or h({n})\n"
  texts = [body.format(n=n) for n in ("report_path", "user_name", "token", "report_name", "user_path")] * 20
  names = ("report_path", "user_name")
  for split in (False, True):
    tok = tokenizer_lib.train_tokenizer(texts, 340, tmp_path / f"{split}.model", split_words=split)
    after_space = [tok.encode(f" {n}", bos=False)[1:] for n in names]  # the name's tokens after " " or "("
    after_paren = [tok.encode(f"({n}", bos=False)[1:] for n in names]
    assert (after_space == after_paren) is split
    assert tok.decode(tok.encode(texts[0])) == texts[0]
  with pytest.raises(ValueError, match="U\\+E000"):
    tokenizer_lib.train_tokenizer(["a \ue000b"], 400, tmp_path / "bad.model", split_words=True)
