"""The metrics log: one JSON object per line, appended as training goes, kept consistent with the checkpoints.

* **Appending** (:class:`MetricsLog`): each record is written as one line and
  flushed; before a checkpoint is written the log is ``fsync``-ed and its size
  in bytes is stored in the checkpoint.
* **Resuming** (:func:`restore_log`): the log is cut back to that size with
  one ``truncate`` call, which is constant time and atomic, so a killed resume
  cannot lose lines and a 400,000-line log costs nothing. When the size is not
  known (a checkpoint written without a log) or no longer fits the file, the
  records up to the checkpoint's step are copied to a temporary file that then
  replaces the log atomically.
* **Reading** (:func:`read_log`): a last line cut by a crash (no newline, not
  JSON) is dropped with a warning; a damaged line anywhere else is an error
  naming the file and line.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings

from nodeform.nn.serialize import TMP_MARK, fsync_folder, remove_stale_temporaries, write_error
from nodeform.train_errors import TrainingError


#: What a failed append leaves behind (said in the error).
_KEPT = "the lines written before are intact and a resume cuts the log back to the checkpoint"


class LogWarning(UserWarning):
    """Something in a metrics log was dropped or repaired; the message says what."""


class MetricsLog:
    """An append-only JSON-lines file.

    Parameters
    ----------
    path : str or PathLike
        Opened for appending at once (its folder must exist).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            self._f = open(self.path, "ab")
        except OSError as exc:
            raise write_error(self.path, exc, "metrics log (`log_path`)", TrainingError, _KEPT) from None

    def write(self, record):
        """Append ``record`` (a JSON-able dict) as one line and flush it."""
        try:
            self._f.write((json.dumps(record) + "\n").encode())
            self._f.flush()
        except OSError as exc:
            raise write_error(self.path, exc, "metrics log (`log_path`)", TrainingError, _KEPT) from None

    def sync(self):
        """Make everything written so far durable; returns the log's size in bytes (stored in checkpoints)."""
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            raise write_error(self.path, exc, "metrics log (`log_path`)", TrainingError, _KEPT) from None
        return self._f.tell()

    def close(self):
        self._f.close()


def _records(f, path):
    """Yield the records of the open binary file ``f``, one line at a time."""
    for i, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            yield rec
        elif not line.endswith(b"\n"):        # only the last line can lack its newline: a cut write
            warnings.warn(f"metrics log {path}: dropped its last line {line[:60]!r}, cut short by a crash.",
                          LogWarning, stacklevel=3)
        else:
            raise ValueError(f"metrics log {path}, line {i}: {line[:80]!r} is not a JSON object; the "
                             "file is damaged. Repair or delete that line.")


def read_log(path):
    """The records of a JSON-lines metrics log, as a list of dicts (a crash-cut last line is dropped)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return list(_records(f, path))


def restore_log(path, step, size=None):
    """Cut the log at ``path`` back to how it was when the checkpoint of ``step`` was written.

    Parameters
    ----------
    path : str or PathLike
    step : int
        The checkpoint's step: records of later steps belong to work that is redone.
    size : int, optional
        The log's size in bytes at that checkpoint. When it fits the file (it ends a
        line there) the file is truncated to it; otherwise the records with
        ``step <= step`` are kept, through a temporary file renamed over the log.

    Returns
    -------
    int
        The log's size afterwards.
    """
    path = os.fspath(path)
    remove_stale_temporaries(path)
    if not os.path.exists(path):
        return 0
    total = os.path.getsize(path)
    if size is not None and _ends_a_line(path, size, total):
        if size < total:
            with open(path, "r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())
        return size
    if size is not None:
        warnings.warn(f"metrics log {path} is {total:,} bytes, but it had {size:,} at the checkpoint of "
                      f"step {step}: it was changed by something else. Keeping its records up to step "
                      f"{step}.", LogWarning, stacklevel=2)
    return _keep_until(path, step)


def _ends_a_line(path, size, total):
    if not 0 <= size <= total:
        return False
    if size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"


def _keep_until(path, step):
    """Rewrite ``path`` keeping the records of steps ``<= step`` (streamed; atomic rename; crash-safe)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as f:
            for rec in _records(f, path):
                if rec.get("step", 0) <= step:
                    out.write((json.dumps(rec) + "\n").encode())
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
        tmp = None
        fsync_folder(folder)
        return size
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
