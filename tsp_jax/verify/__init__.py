"""Host-side verifier: static security analysis, sandboxed tests and the process pool that runs them."""

from tsp_jax.verify.types import (CRASHED, ERROR, OK, SYNTAX_ERROR, TIMEOUT, Finding, Task, Verdict, load_raw,
                                  load_tasks, task_from_record)
from tsp_jax.verify.program import assemble_program, cut_continuation, node_task, normalize_code
from tsp_jax.verify.pool import VerifierError, VerifierPool, WorkerStartError

__all__ = ["CRASHED", "ERROR", "OK", "SYNTAX_ERROR", "TIMEOUT", "Finding", "Task", "Verdict", "load_raw",
           "load_tasks", "task_from_record", "assemble_program", "cut_continuation", "node_task", "normalize_code",
           "VerifierError", "VerifierPool", "WorkerStartError"]
