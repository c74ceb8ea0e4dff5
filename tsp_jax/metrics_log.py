"""The trainer's metrics: one JSON record per line in `<workdir>/metrics.jsonl`, and TensorBoard scalars.

Workdirs may be local folders or object-store URIs (`gs://bucket/run`, through `etils.epath`, which orbax uses too).
A local JSONL file is appended to at every record, so a killed run loses nothing. Cloud objects cannot be appended
to: for a remote workdir the records are buffered and the whole file is rewritten by `flush()` (the trainer flushes
at every checkpoint and at the end; a record also flushes when `flush_seconds` have passed since the last flush),
after reading back what an earlier run wrote, so a resumed run continues the same file.

TensorBoard event files (tensorboardX, no TensorFlow) go to `<workdir>/tensorboard`: every numeric field of a
record becomes the scalar `<event>/<field>` at the record's `global_step`. Remote event files are written through
`etils.epath` as well (registered as tensorboardX's writer for those URI schemes).
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import jax
import numpy as np
import tensorboardX
from absl import logging
from etils import epath
from tensorboardX import record_writer

URI_SCHEMES = ("gs", "s3", "az")


def is_remote(path: str | epath.PathLike) -> bool:
  """Whether `path` is an object-store URI (`gs://...`) rather than a local path."""
  scheme, sep, _ = str(path).partition("://")
  return bool(sep) and scheme in URI_SCHEMES


class _EpathRecordFile:
  """A write-only event file on an object store: buffered, and rewritten whole at each flush."""

  def __init__(self, path: str):
    self.path = epath.Path(path)
    self.buffer = io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    self.path.write_bytes(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _EpathWriterFactory:
  """tensorboardX's writer-factory interface over `etils.epath`."""

  def open(self, path: str) -> _EpathRecordFile:
    return _EpathRecordFile(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


for _scheme in URI_SCHEMES:
  record_writer.register_writer_factory(_scheme, _EpathWriterFactory())


_NOT_SCALARS = ("round", "step", "steps", "global_step")  # positions, not measurements


def _scalar(value: Any) -> Any:
  return float(value) if isinstance(value, (np.ndarray, np.generic, jax.Array)) else value


class MetricsLog:
  """Metrics to the log, `<workdir>/metrics.jsonl` and TensorBoard (the writes happen on `primary` only)."""

  def __init__(self, workdir: str | epath.PathLike, *, tensorboard: bool = True, primary: bool = True,
               flush_seconds: float = 60.0):
    self.path = epath.Path(workdir) / "metrics.jsonl"
    self.primary = primary
    self.remote = is_remote(workdir)
    self.flush_seconds = flush_seconds
    self._lines: list[str] = []  # remote: the whole file's lines, earlier runs' included
    self._last_flush = time.monotonic()
    self._tb = None
    if primary:
      if self.remote and self.path.exists():
        self._lines = self.path.read_text().splitlines(keepends=True)
      if tensorboard:
        self._tb = tensorboardX.SummaryWriter(logdir=str(epath.Path(workdir) / "tensorboard"))

  def write(self, record: dict[str, Any], global_step: int = 0) -> None:
    """Logs one record; its numeric fields go to TensorBoard at `global_step`."""
    record = {k: _scalar(v) for k, v in record.items()}
    if not self.primary:
      return
    line = json.dumps(record) + "\n"
    if self.remote:
      self._lines.append(line)
      if time.monotonic() - self._last_flush >= self.flush_seconds:
        self.flush()
    else:
      with self.path.open("a") as f:
        f.write(line)
    if self._tb is not None:
      event = record.get("event", "metrics")
      for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in _NOT_SCALARS:
          self._tb.add_scalar(f"{event}/{key}", value, global_step)
    logging.info("%s", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

  def flush(self) -> None:
    """Makes everything logged so far durable (rewrites a remote JSONL file; flushes TensorBoard)."""
    if not self.primary:
      return
    if self.remote:
      self.path.write_text("".join(self._lines))
    if self._tb is not None:
      self._tb.flush()
    self._last_flush = time.monotonic()

  def close(self) -> None:
    self.flush()
    if self._tb is not None:
      self._tb.close()
      self._tb = None
