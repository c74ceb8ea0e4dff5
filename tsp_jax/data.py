"""Training data: JSONL task records, prompts, and risk nodes derived offline from security patches.

A record (see `../shared/data/README.md`) holds a task description and, for SVEN/SafeCoder pairs, the vulnerable
function before a security fix and the fixed function after it. The fixed function is the golden path. Risk
nodes are the lines of the golden function where the fix changed something: each diff hunk's first line in the
fixed function (for a pure deletion: the line that follows it). The prefix of a node is the prompt plus the golden
code up to the start of the node's line; the trainer's trees start there or, by default, at the first token where
the golden function and its twin part (`pairs.tokenize_node`).

Languages: every record has one (`language`, python when the record has none); the loaders keep the records of
the `languages` asked for (the trainer's `config.languages`, python by default) and count the others. A data
folder may hold any mix of languages, and `data_dir` may name several folders, comma-separated (e.g.
`../shared/data,../shared/xlang/data`). A record without a prompt (SVEN's C/C++ pairs) is prompted with its
fixed function's first line, the signature, as SVEN's Python pairs are; prompts are comments in the record's
language.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from absl import logging

from tsp_jax.verify import types
from tsp_jax.verify.program import BRACE_LANGUAGES, LANGUAGES, PYTHON, check_language, normalize_code

if TYPE_CHECKING:  # grain is imported where a dataset is built: the models' benchmarks run without it
  import grain


@dataclasses.dataclass(frozen=True)
class Record:
  """One task. `golden` / `vulnerable`: the code the model writes after the prompt (`reference_code`), LF line
  ends; None when the source has none."""
  id: str
  cwe: str
  prompt: str
  golden: str | None
  vulnerable: str | None
  functional_tests: str | None = None
  security_tests: str | None = None
  source: str = ""
  task: types.Task | None = None  # the verifier's task of the record (its tests), None where the record has none
  language: str = PYTHON


@dataclasses.dataclass(frozen=True)
class Node:
  """A risk node: where the golden function and its vulnerable twin part."""
  record_id: str
  cwe: str
  line: int  # 0-based line index in the golden function
  prefix: str  # prompt text + golden lines before `line` (ends with "\n")
  golden_rest: str  # golden lines from `line` to the end of the function
  fixed_lines: tuple[str, ...]  # the hunk's lines in the golden function (may be empty: a pure deletion)
  vulnerable_lines: tuple[str, ...]  # the hunk's lines in the vulnerable function (may be empty: an insertion)
  language: str = PYTHON

  @property
  def vulnerable_rest(self) -> str:
    """The vulnerable twin from the node's line on: the hunk's vulnerable lines, then the golden lines after it."""
    after = self.golden_rest.split("\n")[len(self.fixed_lines):]
    return "".join(line + "\n" for line in self.vulnerable_lines) + "\n".join(after)


@dataclasses.dataclass
class LoadStats:
  """What loading skipped, by reason (never silent)."""
  records: int = 0
  malformed_lines: int = 0
  missing_fields: int = 0
  no_golden: int = 0
  no_nodes: int = 0
  other_language: int = 0  # records of a language not asked for (left out, not an error)

  def as_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)


REQUIRED_FIELDS = ("id", "cwe", "prompt")
DEFAULT_LANGUAGES = (PYTHON,)
COMMENT_PREFIX = {PYTHON: "#", **{lang: "//" for lang in BRACE_LANGUAGES}}


def prompt_text(description: str, language: str = PYTHON) -> str:
  """The model's prompt for a task: its description as a comment block in `language`, then the code follows."""
  mark = COMMENT_PREFIX[check_language(language)]
  lines = description.strip().replace("\r\n", "\n").split("\n")
  return "".join(f"{mark} {line}".rstrip() + "\n" for line in lines)


def record_language(raw: Mapping[str, Any]) -> str:
  """A raw record's language (python when it names none)."""
  return raw.get("language") or PYTHON


def check_languages(languages: Iterable[str]) -> tuple[str, ...]:
  """`languages` as a tuple, each checked (`program.LANGUAGES`); ValueError when empty or unknown."""
  out = tuple(check_language(lang) for lang in languages)
  if not out:
    raise ValueError(f"no language asked for; expected some of {LANGUAGES}")
  return out


def data_dirs(data_dir: str | os.PathLike) -> list[str]:
  """The folders of a `data_dir` setting: one path, or several separated by commas."""
  dirs = [d.strip() for d in os.fspath(data_dir).split(",") if d.strip()]
  if not dirs:
    raise FileNotFoundError("empty data_dir")
  return dirs


def _with_prompt(raw: dict) -> dict:
  """`raw` with a prompt: its own, or (no prompt, a fixed function: SVEN's C/C++ pairs) the fixed function's
  first non-blank line, its signature."""
  if raw.get("prompt") or not isinstance(raw.get("reference_secure"), str):
    return raw
  first = next((line for line in raw["reference_secure"].splitlines() if line.strip()), "")
  return {**raw, "prompt": first.strip()} if first.strip() else raw


# Sources whose `prompt` is code the completion continues (imports + signature), not a task description.
CODE_PROMPT_SOURCES = ("codeguardplus", "cweval", "synth")


def model_prompt(record: Record) -> str:
  """The text the model continues for a record: its code prompt as is, or its description as comments."""
  return record.prompt if record.source in CODE_PROMPT_SOURCES else prompt_text(record.prompt, record.language)


def read_records(paths: Sequence[str | os.PathLike], stats: LoadStats | None = None,
                 languages: Iterable[str] | None = None) -> list[Record]:
  """Records of JSONL files in `languages` (None: every language). Malformed lines and records without the
  required fields are skipped and counted, and so are records of other languages (`other_language`)."""
  stats = stats if stats is not None else LoadStats()
  keep = None if languages is None else check_languages(languages)
  records = []
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    support = types.support_files(path)
    for lineno, raw in types.jsonl_records(path):
      if isinstance(raw, ValueError):
        stats.malformed_lines += 1
        logging.warning("%s:%d: malformed JSONL line skipped (%s)", path, lineno, raw)
        continue
      language = record_language(raw)
      if keep is not None and language not in keep:
        stats.other_language += 1
        continue
      raw = _with_prompt(raw)
      if any(not raw.get(k) for k in REQUIRED_FIELDS):
        stats.missing_fields += 1
        logging.warning("%s:%d: record without %s skipped", path, lineno,
                        [k for k in REQUIRED_FIELDS if not raw.get(k)])
        continue
      code_prompt = raw.get("source", "") in CODE_PROMPT_SOURCES
      golden = reference_code(raw.get("reference_secure"), raw["prompt"], code_prompt)
      vulnerable = reference_code(raw.get("reference_vulnerable"), raw["prompt"], code_prompt)
      records.append(Record(
          id=raw["id"], cwe=raw["cwe"], prompt=raw["prompt"],
          golden=golden, vulnerable=vulnerable,
          functional_tests=raw.get("functional_tests"), security_tests=raw.get("security_tests"),
          source=raw.get("source", ""), task=_task(raw, support), language=check_language(language)))
      stats.records += 1
  return records


def reference_code(program: str | None, prompt: str, code_prompt: bool) -> str | None:
  """The training text of a reference program: for a code prompt that the program starts with, what follows the
  prompt (so training and evaluation see one format: the prompt, then its completion); otherwise the function,
  normalised (`normalize_code`)."""
  if not program:
    return None
  if code_prompt and program.startswith(prompt):
    return program[len(prompt):]
  return normalize_code(program)


def _task(raw: dict, support: dict[str, str] | None) -> types.Task | None:
  """The verifier task of a record, or None when its test fields are incomplete (it is then judged statically)."""
  try:
    return types.task_from_record(raw, support)
  except (ValueError, KeyError):
    return None


def split_files(data_dir: str | os.PathLike, split: str) -> list[str]:
  """`<dir>/<split>.jsonl` and `<dir>/<source>/<split>.jsonl` of every folder of `data_dir` (`data_dirs`), each
  folder's sorted."""
  files = []
  for d in data_dirs(data_dir):
    if not os.path.isdir(d):
      raise FileNotFoundError(f"data_dir {d!r} is not a directory")
    candidates = [os.path.join(d, f"{split}.jsonl")] + sorted(os.path.join(d, s, f"{split}.jsonl")
                                                              for s in os.listdir(d))
    files += [f for f in candidates if os.path.isfile(f)]
  if not files:
    raise FileNotFoundError(f"no {split}.jsonl under {os.fspath(data_dir)!r}")
  return files


def training_cwes(data_dir: str | os.PathLike, splits: Sequence[str] = ("train", "dev")) -> frozenset[str]:
  """The CWEs of every record (any language) of the `splits` of `data_dir`: what a test CWE is `seen` against
  where its record does not say (`cwe_seen_in_train`)."""
  out = set()
  for split in splits:
    for path in split_files(data_dir, split):
      out.update(raw["cwe"] for _, raw in types.jsonl_records(path) if isinstance(raw, dict) and raw.get("cwe"))
  return frozenset(out)


def risk_nodes(record: Record) -> list[Node]:
  """Nodes of a record with a golden and a vulnerable function: one per diff hunk (see module docstring)."""
  if record.golden is None or record.vulnerable is None:
    return []
  fixed = record.golden.split("\n")[:-1]  # normalize_code guarantees one trailing newline
  vuln = record.vulnerable.split("\n")[:-1]
  matcher = difflib.SequenceMatcher(a=[l.rstrip() for l in vuln], b=[l.rstrip() for l in fixed], autojunk=False)
  prompt = model_prompt(record)
  nodes = []
  for tag, i1, i2, j1, j2 in matcher.get_opcodes():
    if tag == "equal" or j1 >= len(fixed):  # a deletion at the very end has no golden line to branch at
      continue
    nodes.append(Node(record_id=record.id, cwe=record.cwe, line=j1,
                      prefix=prompt + "".join(l + "\n" for l in fixed[:j1]),
                      golden_rest="".join(l + "\n" for l in fixed[j1:]),
                      fixed_lines=tuple(fixed[j1:j2]), vulnerable_lines=tuple(vuln[i1:i2]),
                      language=record.language))
  return nodes


def load_nodes(paths: Sequence[str | os.PathLike], stats: LoadStats | None = None,
               languages: Iterable[str] | None = None) -> tuple[list[Record], list[Node]]:
  """Records (in `languages`, None: all) and their risk nodes; records without a golden function or without
  nodes are counted."""
  stats = stats if stats is not None else LoadStats()
  records = read_records(paths, stats, languages)
  nodes = []
  for r in records:
    if r.golden is None:
      stats.no_golden += 1
      continue
    found = risk_nodes(r)
    if not found:
      stats.no_nodes += 1
    nodes.extend(found)
  return records, nodes


def rollout_records(records: Iterable[Record]) -> list[Record]:
  """Records without a vulnerable twin: no patch to take risk nodes from, so their decision nodes come from the
  verifier, in the model's own rollouts from the prompt (`pairs.localized_pairs`)."""
  return [r for r in records if r.vulnerable is None]


def shuffled(items: Sequence, seed: int, process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """A grain dataset over `items`: deterministic shuffle by seed, then this process's shard (every k-th)."""
  if not items:
    raise ValueError("empty dataset: nothing to train on (check data_dir and split)")
  import grain  # pylint: disable=g-import-not-at-top
  return grain.MapDataset.source(list(items)).shuffle(seed=seed)[process_index::process_count]


def take(ds: grain.MapDataset, n: int | None) -> list:
  """The first n elements (all when n is None or larger)."""
  n = len(ds) if n is None else min(n, len(ds))
  return [ds[i] for i in range(n)]


def round_window(items: Sequence, r: int, n: int, fresh: bool = True) -> list:
  """Round r's `n` items of a shuffled list: fresh, items [r n, (r + 1) n) taken cyclically (new ones each round
  until the list is used up); else the first n every round. All of them when n is 0 or >= their count."""
  if not n or n >= len(items):
    return list(items)
  start = r * n % len(items) if fresh else 0
  return [items[(start + i) % len(items)] for i in range(n)]


@dataclasses.dataclass(frozen=True)
class TrainData:
  """What a trainer run reads: the train split's records and risk nodes, the dev split's, and load counts."""
  records: list[Record]
  nodes: list[Node]  # every risk node, shuffled by seed (a round takes its `round_window`)
  dev_records: list[Record]
  dev_nodes: list[Node]  # shuffled by seed, the first `dev_nodes`
  counts: dict[str, int]  # LoadStats of the train split, and the node counts before selection


def load_train_data(data_dir: str | os.PathLike, train_split: str, dev_split: str, seed: int,
                    dev_nodes: int = 0, languages: Iterable[str] = DEFAULT_LANGUAGES) -> TrainData:
  """Each split read once, the records of `languages` only; every train node and `dev_nodes` (0: all) of the
  dev nodes, in a seeded order. Every process holds the whole data (identical rounds everywhere; verifier work is
  split by process)."""
  stats = LoadStats()
  records, nodes = load_nodes(split_files(data_dir, train_split), stats, languages)
  if not records:
    raise ValueError(f"empty dataset: no usable {train_split} record of {tuple(languages)} under "
                     f"{os.fspath(data_dir)!r} ({stats})")
  dev_recs, dev = load_nodes(split_files(data_dir, dev_split), languages=languages)
  counts = {**stats.as_dict(), "nodes": len(nodes), "dev_nodes": len(dev)}
  return TrainData(records=records, nodes=take(shuffled(nodes, seed), None) if nodes else [],
                   dev_records=dev_recs, dev_nodes=take(shuffled(dev, seed), dev_nodes or None) if dev else [],
                   counts=counts)


def golden_texts(records: Iterable[Record], include_vulnerable: bool = False) -> list[tuple[str, str]]:
  """(prompt text, golden function) of every record that has a golden function: the SFT examples.

  With `include_vulnerable`, the vulnerable versions too (small-model pre-training: real pre-training data
  holds both sides of every security fix, which is where a model learns to write the vulnerable one).
  """
  out = []
  for r in records:
    out += [(model_prompt(r), code) for code in (r.golden, r.vulnerable if include_vulnerable else None)
            if code is not None]
  return out
