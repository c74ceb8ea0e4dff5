"""SentencePiece tokenizer: CodeLlama's `tokenizer.model`, or a small BPE model trained on local code.

Both kinds load into `Tokenizer`, whose `decode(encode(text))` reproduces any text exactly (indentation, tabs,
trailing spaces, blank lines, CRLF, unicode). Special ids follow LLaMA: unk 0, BOS 1, EOS 2, and no pad piece;
`Tokenizer.pad_id` is then EOS, a valid id the model can embed (padded positions are masked anyway), which
`decode` stops at, and which the decoders already emit after a row is done.

Small-model mode trains its own model with the same special ids (`train_tokenizer`): BPE with byte fallback (so
nothing is ever unknown), identity normalization, whitespace kept, whitespace-only pieces for indentation, digits
split, and '\\n' a piece of its own (id 3; the 256 byte pieces are ids 4..259), so every line boundary is a token
boundary, as in CodeLlama (which spells newline as the byte piece <0x0A>). No dummy prefix by default: a text's
first word is encoded like any word after a newline, and decoding a slice of ids gives exactly the characters
those ids encode (unless the slice cuts through a character spelled in byte pieces).

CLI (trains, then prints vocab size, chars/token on the corpus and time):
  python -m tsp_jax.tokenizer --data_dir=../shared/data --vocab_size=4096 --out=/tmp/tok.model
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
import io
import os
import pathlib
import re
import time

from absl import app
from absl import flags
from etils import epath
import numpy as np
import sentencepiece as spm

from tsp_jax.verify import types

MODEL_FILENAME = "tokenizer.model"
NEWLINE = "\n"
NUM_BYTE_PIECES = 256
NUM_SPECIAL_PIECES = 3  # unk, BOS, EOS
# unk, BOS, EOS as in LLaMA; no pad piece (pad_id -1): Tokenizer pads with EOS.
SPECIAL_IDS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
# JSONL fields that hold code (or the prompt the model completes) in the project's data folders.
CODE_FIELDS = ("prompt", "reference_secure", "reference_vulnerable", "reference_solution", "functional_tests",
               "security_tests")
_TRAINER_OPTIONS = {
    "model_type": "bpe",
    "byte_fallback": True,
    "character_coverage": 1.0,  # every character of the corpus gets a piece; unseen ones fall back to bytes
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "allow_whitespace_only_pieces": True,
    "split_digits": True,
    "user_defined_symbols": [NEWLINE],
    # Deterministic: every sentence is used (no sampling or shuffling), one thread.
    "input_sentence_size": 0,
    "shuffle_input_sentence": False,
    "num_threads": 1,
    "minloglevel": 2,
    **SPECIAL_IDS,
}


class Tokenizer:
  """A SentencePiece model with BOS/EOS/pad handling, batch encoding to padded numpy arrays, and decoding."""

  def __init__(self, model_path: str | os.PathLike):
    """Loads a `.model` file: a local path or any `etils.epath` URI (`gs://...`)."""
    self.model_path = os.fspath(model_path)
    self._sp = spm.SentencePieceProcessor(model_proto=epath.Path(model_path).read_bytes())
    if self._sp.bos_id() < 0 or self._sp.eos_id() < 0:
      raise ValueError(f"{model_path}: the model needs BOS and EOS pieces (bos_id={self._sp.bos_id()}, "
                       f"eos_id={self._sp.eos_id()})")

  @classmethod
  def from_dir(cls, path: str | os.PathLike) -> Tokenizer:
    """Loads `tokenizer.model` from a checkpoint folder (e.g. an HF CodeLlama snapshot)."""
    model_path = epath.Path(path) / MODEL_FILENAME
    if not model_path.is_file():
      raise FileNotFoundError(f"no {MODEL_FILENAME} in checkpoint folder {os.fspath(path)!r}")
    return cls(model_path)

  @property
  def vocab_size(self) -> int:
    return self._sp.vocab_size()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def pad_id(self) -> int:
    """The model's pad piece if it has one, else EOS (CodeLlama and `train_tokenizer` models have none)."""
    pad = self._sp.pad_id()
    return pad if pad >= 0 else self.eos_id

  def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
    """Token ids of `text`, optionally with BOS first and EOS last."""
    if not isinstance(text, str):
      raise TypeError(f"encode takes one str, got {type(text).__name__} (use encode_batch for many)")
    return self._sp.encode(text, add_bos=bos, add_eos=eos)

  def encode_batch(self, texts: Sequence[str], *, max_len: int | None = None, bos: bool = True, eos: bool = False,
                   pad_to_multiple: int = 1, truncate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Encodes texts into one right-padded array.

    Args:
      texts: B strings.
      max_len: most tokens a text may have (BOS/EOS included); a longer one raises ValueError, or with
        `truncate=True` keeps its first `max_len` tokens. Must be a multiple of `pad_to_multiple`.
      bos, eos: add BOS first / EOS last to each text.
      pad_to_multiple: the width is the longest text rounded up to this (bucketing bounds recompilation);
        `pad_to_multiple=max_len` gives a fixed width of `max_len`.
      truncate: cut texts longer than `max_len` instead of raising.
    Returns:
      ids [B, L] int32, padded with `pad_id`, and lengths [B] int32 (tokens before the padding).
    """
    if isinstance(texts, str):
      raise TypeError("encode_batch takes a sequence of str, got one str")
    if pad_to_multiple < 1:
      raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    if max_len is not None and (max_len < 1 or max_len % pad_to_multiple):
      raise ValueError(f"max_len {max_len} must be a positive multiple of pad_to_multiple {pad_to_multiple}")
    if truncate and max_len is None:
      raise ValueError("truncate=True needs max_len")
    seqs = self._sp.encode(list(texts), add_bos=bos, add_eos=eos)
    if max_len is not None:
      seqs = [_fit(seq, max_len, truncate, i) for i, seq in enumerate(seqs)]
    return pad_sequences(seqs, self.pad_id, pad_to_multiple)

  def decode(self, ids: Sequence[int] | np.ndarray, *, stop_at_eos: bool = True) -> str:
    """Text of one sequence of ids [L] (list or array): BOS, EOS and pad pieces give no text.

    With `stop_at_eos`, ids from the first EOS on are ignored (padding and whatever a finished row emitted).
    A model with a dummy prefix (CodeLlama) drops the space it added before the text's first word, so decode a
    continuation together with its prompt, not alone.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
      raise ValueError(f"decode takes one sequence of int ids [L], got shape {ids.shape} dtype {ids.dtype} "
                       "(use decode_batch for [B, L])")
    if stop_at_eos:
      eos_at = np.flatnonzero(ids == self.eos_id)
      ids = ids[:eos_at[0]] if eos_at.size else ids
    bad = ids[(ids < 0) | (ids >= self.vocab_size)]
    if bad.size:
      raise ValueError(f"ids out of range [0, {self.vocab_size}): {bad[:8].tolist()}")
    return self._sp.decode(ids.tolist())

  def decode_batch(self, ids: np.ndarray, lengths: np.ndarray | Sequence[int] | None = None, *,
                   stop_at_eos: bool = True) -> list[str]:
    """Texts of a batch: ids [B, L], each row cut to its length [B] (all of it when `lengths` is None)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
      raise ValueError(f"decode_batch takes ids [B, L], got shape {ids.shape}")
    lengths = np.full(ids.shape[0], ids.shape[1]) if lengths is None else np.asarray(lengths)
    if lengths.shape != ids.shape[:1]:
      raise ValueError(f"lengths shape {lengths.shape} does not match ids shape {ids.shape}")
    return [self.decode(row[:n], stop_at_eos=stop_at_eos) for row, n in zip(ids, lengths)]


def _fit(seq: list[int], max_len: int, truncate: bool, index: int) -> list[int]:
  """`seq` cut to `max_len` tokens if `truncate`, else `seq` unchanged; ValueError if it is too long."""
  if len(seq) <= max_len:
    return seq
  if truncate:
    return seq[:max_len]
  raise ValueError(f"text {index} has {len(seq)} tokens > max_len {max_len} (pass truncate=True to cut it)")


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int, pad_to_multiple: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads id lists into ids [B, L] int32 (L: the longest rounded up to `pad_to_multiple`) + lengths [B]."""
  lengths = np.array([len(s) for s in seqs], dtype=np.int32)  # [B]
  width = -(-int(lengths.max(initial=0)) // pad_to_multiple) * pad_to_multiple
  ids = np.full((len(seqs), width), pad_id, dtype=np.int32)  # [B, L]
  for row, seq in zip(ids, seqs):
    row[:len(seq)] = seq
  return ids, lengths


def min_vocab_size(texts: Iterable[str]) -> int:
  """Smallest vocab `train_tokenizer` accepts for this corpus: specials, bytes, newline and one piece per char."""
  chars = set().union(*map(set, texts)) - {NEWLINE}
  return NUM_SPECIAL_PIECES + NUM_BYTE_PIECES + 1 + len(chars)


_WORD_AFTER_SPACE = re.compile(r"(?<= )(?=[A-Za-z_])")
_DELIMITER = "\ue000"  # a private-use character: where pieces may not cross (split_words)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_path: str | os.PathLike, *,
                    seed: int = 0, add_dummy_prefix: bool = False, split_words: bool = False) -> Tokenizer:
  """Trains a byte-fallback BPE model on `texts` (each a whole file or function), writes it, loads it.

  Deterministic: the same texts and settings give a byte-identical model file.

  Args:
    texts: training documents; newlines inside a text are kept (empty texts are skipped).
    vocab_size: number of pieces, at least `min_vocab_size(texts)`; more than the corpus can supply merges for
      makes sentencepiece raise RuntimeError ("Vocabulary size too high").
    out_path: the `.model` file to write, local or `gs://` (parent folders are created).
    seed: sentencepiece's (process-wide) random seed. These settings draw nothing random (every sentence is
      used, unshuffled, one thread), so the model does not depend on it today; it pins any future sampling.
    add_dummy_prefix: prepend a space to each text before encoding, as CodeLlama does (decode removes it).
    split_words: no piece joins a space to the identifier after it, so a name is the same tokens after a space
      as after `(` or `.` (a small model then copies a name from a signature token for token; ~10% more
      tokens on code).
  Returns:
    the trained `Tokenizer`.
  """
  corpus = [t for t in texts if t]
  if not corpus:
    raise ValueError("train_tokenizer needs at least one non-empty text")
  needed = min_vocab_size(corpus)
  if vocab_size < needed:
    raise ValueError(f"vocab_size {vocab_size} is too small for this corpus: it needs at least {needed} "
                     f"({NUM_SPECIAL_PIECES} special + {NUM_BYTE_PIECES} byte + 1 newline piece "
                     "+ one per distinct character)")
  extra = {}
  if split_words:
    if any(_DELIMITER in t for t in corpus):
      raise ValueError("split_words: the corpus holds the private-use delimiter U+E000")
    corpus = [_WORD_AFTER_SPACE.sub(_DELIMITER, t) for t in corpus]
    extra["pretokenization_delimiter"] = _DELIMITER
  writer = io.BytesIO()
  spm.set_random_generator_seed(seed)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus), model_writer=writer, vocab_size=vocab_size,
      add_dummy_prefix=add_dummy_prefix,
      max_sentence_length=max(len(t.encode("utf-8")) for t in corpus),  # longer sentences would be skipped
      **_TRAINER_OPTIONS, **extra)
  out_path = epath.Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  out_path.write_bytes(writer.getvalue())
  return Tokenizer(out_path)


def iter_code_texts(data_dir: str | os.PathLike, languages: Iterable[str] | None = None) -> Iterator[str]:
  """Yields the non-empty code fields (`CODE_FIELDS`) of every record in the `*.jsonl` files under `data_dir`
  (one folder, or several comma-separated), of the records in `languages` (a record's `language`, python when
  it names none; None: every language, so the tokenizer covers all the data it is built from).

  Files are read in sorted path order, so the corpus (and a tokenizer trained on it) is reproducible.
  """
  dirs = [d.strip() for d in os.fspath(data_dir).split(",") if d.strip()]
  paths = [p for d in dirs for p in sorted(pathlib.Path(d).rglob("*.jsonl"))]
  if not paths:
    raise FileNotFoundError(f"no *.jsonl files under {os.fspath(data_dir)!r}")
  keep = None if languages is None else set(languages)
  for path in paths:
    for lineno, record in types.jsonl_records(path):
      if isinstance(record, ValueError):
        raise ValueError(f"{path}:{lineno}: malformed JSONL line ({record})")
      if keep is not None and (record.get("language") or "python") not in keep:
        continue
      yield from (record[k] for k in CODE_FIELDS if isinstance(record.get(k), str) and record[k])


def chars_per_token(tokenizer: Tokenizer, texts: Iterable[str]) -> float:
  """Characters per token over `texts` (without BOS/EOS): higher is more compact."""
  texts = list(texts)
  tokens = sum(len(tokenizer.encode(t, bos=False)) for t in texts)
  return sum(map(len, texts)) / max(tokens, 1)


def _cli_main() -> None:
  """Defines the CLI flags here, not at import, so modules importing this one keep their own flag names."""
  flags.DEFINE_string("data_dir", None, "Folder(s), comma-separated, whose *.jsonl files (searched recursively) "
                      "hold the code.", required=True)
  flags.DEFINE_list("languages", None, "Only the records of these languages (default: every language).")
  flags.DEFINE_integer("vocab_size", 4096, "Number of pieces.")
  flags.DEFINE_string("out", None, "The .model file to write.", required=True)
  flags.DEFINE_bool("add_dummy_prefix", False, "Prepend a space to each text, as CodeLlama does.")

  def run(argv: Sequence[str]) -> None:
    del argv
    fl = flags.FLAGS
    start = time.perf_counter()
    texts = list(iter_code_texts(fl.data_dir, fl.languages))
    tok = train_tokenizer(texts, fl.vocab_size, fl.out, add_dummy_prefix=fl.add_dummy_prefix)
    train_s = time.perf_counter() - start
    ratio = chars_per_token(tok, texts)
    print(f"wrote {fl.out}: vocab_size={tok.vocab_size} texts={len(texts)} chars={sum(map(len, texts))} "
          f"chars/token={ratio:.3f} train_s={train_s:.2f} total_s={time.perf_counter() - start:.2f}")

  app.run(run)


if __name__ == "__main__":
  _cli_main()
