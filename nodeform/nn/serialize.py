"""Saving arrays to ``.npz`` so that a crash never leaves a half-written file, and a damaged file is never loaded.

Writing: the arrays go to a temporary file in the same directory, which is
flushed to disk (``fsync``) and then renamed over the target with ``os.replace``.
A rename within one file system is atomic, so the target is always either the old
complete file or the new complete file.

Reading: besides the arrays, each file holds a small JSON record (``__meta__``)
with a SHA-256 of every array's name, dtype, shape and bytes. A truncated or
corrupted file fails to unzip or fails the checksum, and :func:`load_arrays`
raises :class:`CheckpointError` saying so, instead of returning bad weights.

No pickle: ``np.load(..., allow_pickle=False)``, so a checkpoint cannot run code.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

#: Written into every file; bump it when the layout changes so old files are recognised.
FORMAT = "nodeform-npz-1"
META_KEY = "__meta__"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, damaged or not ours; it was not loaded."""


def checksum(arrays):
    """SHA-256 (hex) over the sorted names, dtypes, shapes and bytes of ``arrays``."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path, arrays, meta=None):
    """Write ``arrays`` (name -> array) and the JSON-able ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : str or PathLike
        Usually ending in ``.npz`` (nothing is appended).
    arrays : mapping of str to ndarray
        NumPy arrays (CuPy arrays are copied to the host by the caller).
    meta : dict, optional
        Small metadata (step, RNG state, ...); must be JSON-serialisable.
    """
    path = os.fspath(path)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if META_KEY in arrays:
        raise ValueError(f"`{META_KEY}` is a reserved name; rename that array.")
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"array `{k}` has dtype object; only numeric arrays are saved (no pickle).")
    record = dict(meta or {}, format=FORMAT, sha256=checksum(arrays), keys=sorted(arrays))
    blob = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{META_KEY: blob})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_arrays(path):
    """Read a file written by :func:`save_arrays`, checking it first.

    Returns
    -------
    arrays : dict of str to ndarray
    meta : dict

    Raises
    ------
    CheckpointError
        The file is missing, truncated, corrupted, or was not written by nodeform.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}; check the path, or start without `resume`.")
    size = os.path.getsize(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zipfile.LargeZipFile) as exc:
        raise CheckpointError(f"checkpoint {path!r} ({size} bytes) is damaged, probably truncated by "
                              f"a crash or a full disk ({type(exc).__name__}: {exc}); it was NOT "
                              "loaded. Delete it and resume from an older copy, or start again.") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"{path!r} is an .npz file but not a nodeform checkpoint (no `{META_KEY}`).")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path!r}: its metadata is unreadable ({exc}); not loaded.") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} has format {meta.get('format')!r}, this version "
                              f"reads {FORMAT!r}.")
    if sorted(arrays) != meta.get("keys") or checksum(arrays) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path!r} fails its SHA-256 check: the arrays on disk are "
                              "not the ones that were written (corruption); it was NOT loaded.")
    return arrays, meta


def save_module(path, module, meta=None):
    """Save ``module.state_dict()`` atomically (see :func:`save_arrays`)."""
    save_arrays(path, module.state_dict(), dict(meta or {}, module=type(module).__name__))


def load_module(path, module, strict=True):
    """Load parameters saved by :func:`save_module` into ``module``; returns the metadata."""
    arrays, meta = load_arrays(path)
    module.load_state_dict(arrays, strict=strict)
    return meta
