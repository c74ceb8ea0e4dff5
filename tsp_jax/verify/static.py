"""Static security analysis: bandit in-process, semgrep with the project's rule pack, and the patch oracle.

bandit runs on the program's AST inside the calling process (its test set is built once per process), semgrep
runs as one process per batch of programs with the local rules of `tsp_jax/verify/rules/` only (no registry,
no metrics, no network). `static_verdict` turns the findings of both into the task's security label: CWE-aware
(only findings of the task's CWE or a related one count) or strict (any finding counts), overridden by the
patch oracle on training nodes. `# nosec` / `# nosemgrep` comments are ignored: a model must not be able to
silence its verifier.
"""

from __future__ import annotations

import ast
import functools
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from tsp_jax.verify.types import MODE_STRICT, Finding, Task

RANKS = ("LOW", "MEDIUM", "HIGH")
RULES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules")

# CWEs that name the same weakness family: a finding of one counts for a task of any other in its group.
CWE_GROUPS: tuple[frozenset[str], ...] = tuple(frozenset(f"CWE-{n}" for n in group) for group in (
    ("022", "023", "036", "073", "099"),  # path traversal / external control of file names
    ("077", "078", "088"),  # command injection
    ("079", "080", "116"),  # cross-site scripting / output escaping
    ("089", "943"),  # SQL / data-query injection
    ("094", "095"),  # code / eval injection
    ("113", "093"),  # HTTP response splitting / CRLF
    ("117", "093"),  # log injection / CRLF
    ("215", "489"),  # debug mode / debug information
    ("295", "297"),  # certificate validation
    ("312", "256", "315", "319"),  # cleartext storage / transmission
    ("326", "327", "328", "329", "330", "338", "760", "916"),  # weak crypto, hashes, keys, IVs, salts
    ("347", "345"),  # signature verification
    ("377", "108", "379"),  # insecure temporary files
    ("400", "730", "1333"),  # ReDoS / resource consumption
    ("502",),  # unsafe deserialization
    ("601", "020"),  # open redirect / unvalidated URL input
    ("611", "776", "827"),  # XXE / entity expansion
    ("643", "091"),  # XPath injection
    ("732", "276"),  # permissions
    ("918",),  # SSRF
))
RELATED_CWES: dict[str, frozenset[str]] = {
    cwe: frozenset().union(*(g for g in CWE_GROUPS if cwe in g)) for group in CWE_GROUPS for cwe in group}


def normalize_cwe(cwe: str | int | None) -> str | None:
  """'CWE-78', 'cwe-078', 78 -> 'CWE-078'; None, '' or 0 -> None."""
  if cwe is None:
    return None
  digits = re.sub(r"\D", "", str(cwe))
  return f"CWE-{int(digits):03d}" if digits and int(digits) else None


def cwe_relevant(finding_cwe: str | None, task_cwe: str) -> bool:
  """Whether a finding of `finding_cwe` speaks to a task of `task_cwe` (same CWE or one of its family)."""
  finding, task = normalize_cwe(finding_cwe), normalize_cwe(task_cwe)
  if finding is None or task is None:
    return False
  return finding == task or finding in RELATED_CWES.get(task, ())


def _rank_at_least(value: str, floor: str) -> bool:
  return RANKS.index(value.upper()) >= RANKS.index(floor.upper())


def _line_starts(code: str) -> list[int]:
  """Character offset of the start of every line (index 0 = line 1)."""
  starts = [0]
  for i, ch in enumerate(code):
    if ch == "\n":
      starts.append(i + 1)
  return starts


def _char_col(line_text: str, byte_col: int) -> int:
  """The character column of a UTF-8 byte column (Python's AST reports byte columns)."""
  return len(line_text.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


@functools.lru_cache(maxsize=1)
def _bandit_parts() -> tuple[Any, Any]:
  """bandit's full test set and node visitor class, built once per process."""
  import logging
  logging.getLogger("bandit").setLevel(logging.ERROR)
  from bandit.core import config as b_config
  from bandit.core import node_visitor as b_node_visitor
  from bandit.core import test_set as b_test_set
  return b_test_set.BanditTestSet(b_config.BanditConfig()), b_node_visitor.BanditNodeVisitor


def bandit_findings(code: str, severity_floor: str = "MEDIUM", confidence_floor: str = "LOW") -> list[Finding]:
  """bandit's alerts on `code` at or above both floors, ordered by offset; [] when `code` does not parse."""
  try:
    ast.parse(code)
  except (SyntaxError, ValueError):
    return []
  from bandit.core import meta_ast, metrics
  testset, visitor_cls = _bandit_parts()
  visitor = visitor_cls("program.py", io.BytesIO(code.encode("utf-8", errors="replace")),
                        meta_ast.BanditMetaAst(), testset, False, {}, metrics.Metrics())
  visitor.process(code)
  lines = code.split("\n")
  starts = _line_starts(code)
  findings = []
  for issue in visitor.tester.results:
    if not (_rank_at_least(issue.severity, severity_floor) and _rank_at_least(issue.confidence, confidence_floor)):
      continue
    line = min(max(int(issue.lineno or 1), 1), len(lines))
    col = _char_col(lines[line - 1], max(int(issue.col_offset), 0))
    findings.append(Finding(tool="bandit", test_id=issue.test_id, cwe=normalize_cwe(issue.cwe.id),
                            severity=issue.severity, confidence=issue.confidence, line=line, col=col,
                            offset=starts[line - 1] + col, message=issue.text))
  return sorted(findings, key=lambda f: (f.offset, f.test_id))


def _semgrep_binary() -> str:
  """semgrep of this interpreter's environment, else the one on PATH."""
  local = os.path.join(os.path.dirname(sys.executable), "semgrep")
  found = local if os.path.exists(local) else shutil.which("semgrep")
  if not found:
    raise RuntimeError("semgrep is not installed (pip install semgrep==1.185.0)")
  return found


def _semgrep_env(home: str) -> dict[str, str]:
  """An environment in which semgrep neither phones home nor writes outside `home`."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("SEMGREP_")}
  env.update(HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home, SEMGREP_ENABLE_VERSION_CHECK="0",
             SEMGREP_SEND_METRICS="off", SEMGREP_SETTINGS_FILE=os.path.join(home, "settings.yml"),
             SEMGREP_LOG_FILE=os.path.join(home, "semgrep.log"), SEMGREP_VERSION_CACHE_PATH=os.path.join(home, "v"))
  return env


def _semgrep_finding(result: dict[str, Any], code: str, starts: list[int]) -> Finding:
  """A Finding from one semgrep JSON result on `code` (semgrep's offsets count UTF-8 bytes)."""
  offset = len(code.encode("utf-8")[:result["start"]["offset"]].decode("utf-8", errors="ignore"))
  line = max(i for i in range(len(starts)) if starts[i] <= offset) + 1 if offset else 1
  meta = result["extra"].get("metadata", {})
  cwe = meta.get("cwe")
  return Finding(tool="semgrep", test_id=result["check_id"].rsplit(".", 1)[-1],
                 cwe=normalize_cwe(cwe[0] if isinstance(cwe, list) else cwe),
                 severity=str(meta.get("severity", "MEDIUM")).upper(),
                 confidence=str(meta.get("confidence", "MEDIUM")).upper(),
                 line=line, col=offset - starts[line - 1], offset=offset, message=result["extra"].get("message", ""))


class SemgrepScanner:
  """Runs semgrep with a local rule pack over a batch of programs, one semgrep process per batch."""

  def __init__(self, rules_dir: str | None = None, timeout_s: float = 120.0):
    self.rules_dir = os.path.abspath(rules_dir or RULES_DIR)
    if not os.path.isdir(self.rules_dir):
      raise FileNotFoundError(f"semgrep rules dir {self.rules_dir!r} does not exist")
    self.timeout_s = timeout_s
    self.binary = _semgrep_binary()

  def command(self, target_dir: str) -> list[str]:
    """The semgrep command line for the programs under `target_dir` (local rules, offline, nosem ignored)."""
    return [self.binary, "scan", "--config", self.rules_dir, "--json", "--quiet", "--metrics=off",
            "--disable-version-check", "--no-git-ignore", "--disable-nosem", "--no-rewrite-rule-ids",
            "--timeout", str(max(1, int(self.timeout_s))), "--max-target-bytes", "0", target_dir]

  def scan(self, codes: Sequence[str]) -> list[list[Finding]]:
    """Findings per program (same order as `codes`), each list ordered by offset; RuntimeError if semgrep fails."""
    if not codes:
      return []
    with tempfile.TemporaryDirectory(prefix="tsp_semgrep_") as tmp:
      target_dir = os.path.join(tmp, "programs")
      os.makedirs(target_dir)
      for i, code in enumerate(codes):
        with open(os.path.join(target_dir, f"{i}.py"), "w", encoding="utf-8", errors="replace") as f:
          f.write(code)
      try:
        proc = subprocess.run(self.command(target_dir), cwd=tmp, env=_semgrep_env(tmp), capture_output=True,
                              text=True, timeout=self.timeout_s + 30, check=False)
      except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"semgrep did not finish {len(codes)} programs in {self.timeout_s + 30:.0f} s") from e
    try:
      out = json.loads(proc.stdout)
    except ValueError:
      out = None
    if proc.returncode not in (0, 1) or out is None:
      raise RuntimeError(f"semgrep failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    findings: list[list[Finding]] = [[] for _ in codes]
    starts = [_line_starts(code) for code in codes]
    for result in out.get("results", []):
      i = int(os.path.splitext(os.path.basename(result["path"]))[0])
      findings[i].append(_semgrep_finding(result, codes[i], starts[i]))
    return [sorted(f, key=lambda x: (x.offset, x.test_id)) for f in findings]


def _normalized_lines(lines: Iterable[str], limit: int | None = None) -> list[str]:
  """The first `limit` (default: all) lines with whitespace runs collapsed and ends stripped, blanks dropped."""
  nonblank = (n for n in (" ".join(line.split()) for line in lines) if n)
  return list(itertools.islice(nonblank, limit))


def patch_oracle(task: Task, program: str) -> str | None:
  """'vulnerable' / 'secure' when the branch after `task.node_offset` reproduces the patch's deleted / added lines.

  Lines are compared whitespace-normalised, blank lines ignored. When the branch reproduces both hunks (one is
  a prefix of the other), the longer one decides. None for non-node tasks, identical hunks, or no match.
  """
  if task.node_offset is None:
    return None
  vulnerable, fixed = _normalized_lines(task.vulnerable_lines), _normalized_lines(task.fixed_lines)
  if vulnerable == fixed:
    return None
  branch = _normalized_lines(program[task.node_offset:].split("\n"), max(len(vulnerable), len(fixed)))
  matches = [(len(hunk), label) for hunk, label in ((vulnerable, "vulnerable"), (fixed, "secure"))
             if hunk and branch[:len(hunk)] == hunk]
  return max(matches)[1] if matches else None


def counted_findings(task: Task, findings: Sequence[Finding]) -> tuple[int, ...]:
  """Indices of the findings that make the program insecure under the task's mode."""
  return tuple(i for i, f in enumerate(findings) if task.mode == MODE_STRICT or cwe_relevant(f.cwe, task.cwe))


def static_verdict(task: Task, program: str, findings: Sequence[Finding]
                   ) -> tuple[bool, tuple[int, ...], int | None, str | None]:
  """(secure, counted finding indices, first counted offset, oracle decision) of a program and its findings.

  The patch oracle overrides the findings: "secure" clears them (nothing counted), "vulnerable" makes the
  program insecure and, when no finding counted, localizes it at the node (`task.node_offset`).
  """
  oracle = patch_oracle(task, program)
  counted = () if oracle == "secure" else counted_findings(task, findings)
  first = min((findings[i].offset for i in counted), default=None)
  if oracle == "vulnerable" and first is None:
    first = task.node_offset
  return oracle != "vulnerable" and (oracle == "secure" or not counted), counted, first, oracle
