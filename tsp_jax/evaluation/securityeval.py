"""SecurityEval (the TSP paper's SPR@1 benchmark) from the user's own copy of its `dataset.jsonl`.

Each record has three string fields, `ID` ("CWE-020_author_1.py": the CWE), `Prompt` and `Insecure_code`; the
items are static-only tasks in strict mode (`benchmarks.SECOND_JUDGES` adds the CWE-aware count).
"""

from __future__ import annotations

import os
import re

from tsp_jax.evaluation.benchmarks import EvalItem
from tsp_jax.verify import types
from tsp_jax.verify.program import assemble_program
from tsp_jax.verify.static import normalize_cwe
from tsp_jax.verify.types import Task

SECURITYEVAL_FIELDS = ("ID", "Prompt", "Insecure_code")
_SECURITYEVAL_ID = re.compile(r"(CWE-\d+)_.+", re.I)  # "CWE-020_author_1.py"
_DEF_NAME = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+(\w+)", re.M)


def securityeval_cwe(record_id: str) -> str:
  """The project's CWE name of a SecurityEval ID: "CWE-020_author_1.py" -> "CWE-020", "CWE-78_x.py" -> "CWE-078";
  ValueError when the ID does not start with "CWE-<number>_"."""
  m = _SECURITYEVAL_ID.fullmatch(record_id)
  cwe = normalize_cwe(m.group(1)) if m else None
  if cwe is None:
    raise ValueError(f"ID {record_id!r} does not start with 'CWE-<number>_' (e.g. 'CWE-020_author_1.py')")
  return cwe


def _securityeval_program(prompt: str, insecure_code: str) -> str:
  """The insecure reference program: `Insecure_code` itself when it defines the prompt's function (a whole
  program), else the prompt completed by it."""
  names = _DEF_NAME.findall(prompt)
  if names and re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{names[-1]}\b", insecure_code, re.M):
    return insecure_code
  return assemble_program(prompt, insecure_code)


def load_securityeval(path: str | os.PathLike | None) -> list[EvalItem]:
  """SecurityEval's prompts from the user's copy of its `dataset.jsonl` as static-only tasks, strict mode.

  Each item's CWE comes from its `ID`, its prompt is `Prompt`, its "vulnerable" reference `Insecure_code`.
  A missing file, a malformed line, a missing or non-string field, an empty ID or Prompt, a bad ID or a
  repeated ID is an error naming the file and line (an empty `Insecure_code` only leaves the item without a
  reference).
  """
  if not path:
    raise ValueError("benchmark securityeval needs its dataset: --securityeval_path=PATH/dataset.jsonl (a copy of "
                     "dataset.jsonl from the s2e-lab/SecurityEval repository on GitHub)")
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"SecurityEval file {path!r} does not exist (pass your copy of SecurityEval's "
                            "dataset.jsonl with --securityeval_path)")
  items, seen = [], {}
  for lineno, raw in types.jsonl_records(path):
    where = f"{path}:{lineno}"
    if isinstance(raw, ValueError):
      raise ValueError(f"{where}: malformed JSONL line ({raw})")
    missing = [k for k in SECURITYEVAL_FIELDS if not isinstance(raw.get(k), str)]
    missing += [k for k in ("ID", "Prompt") if k not in missing and not raw[k].strip()]
    if missing:
      raise ValueError(f"{where}: missing, empty or non-string field(s) {missing} (a SecurityEval record has the "
                       f"string fields {list(SECURITYEVAL_FIELDS)})")
    try:
      cwe = securityeval_cwe(raw["ID"])
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None
    if raw["ID"] in seen:
      raise ValueError(f"{where}: ID {raw['ID']!r} already on line {seen[raw['ID']]}")
    seen[raw["ID"]] = lineno
    task = Task(id=raw["ID"], cwe=cwe, prompt=raw["Prompt"], mode=types.MODE_STRICT)
    insecure = raw["Insecure_code"]
    refs = {"vulnerable": _securityeval_program(raw["Prompt"], insecure)} if insecure.strip() else {}
    items.append(EvalItem("securityeval", task, raw["Prompt"], refs))
  if not items:
    raise ValueError(f"{path}: no SecurityEval records")
  return items
