"""Saving arrays to ``.npz`` so that a crash never leaves a half-written file, and a damaged file is never loaded.

Writing: the arrays go to a fresh temporary file in the same folder (made by
:func:`tempfile.mkstemp`, so its name cannot be predicted and a planted symlink
is never followed), which is flushed to disk (``fsync``), renamed over the
target with ``os.replace`` and then made durable by an ``fsync`` of the folder.
A rename within one file system is atomic, so the target is always either the
old complete file or the new complete file. While it is written the temporary
is locked (``flock``); temporaries of ours that nobody holds any more (left by a
``SIGKILL``) are deleted at the next save into that folder. A full disk or an
unwritable folder raises :class:`CheckpointError` and leaves the old file as it
was. With ``keep=k`` the previous files are kept as ``name.1.npz`` (the one
before), ... ``name.{k-1}.npz``.

Reading: besides the arrays, each file holds a small JSON record (``__meta__``)
with a SHA-256 of every array's name, dtype, shape and bytes. Every array header
is checked against the bytes actually stored before anything is allocated (a
crafted shape cannot ask for terabytes), and every way a damaged file can fail
(truncated, flipped bits, an encrypted or compressed member, odd dtypes, bad
JSON) raises :class:`CheckpointError` saying so, instead of returning bad weights.

No pickle: object arrays are refused on both sides, so a checkpoint cannot run code.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import zipfile

import numpy as np

try:                                    # POSIX: a lock says "a live process is writing this temporary"
    import fcntl
except ImportError:                     # pragma: no cover - Windows: fall back to "is its process alive"
    fcntl = None

#: Written into every file; bump it when the layout changes so old files are recognised.
FORMAT = "nodeform-npz-1"
META_KEY = "__meta__"
#: Temporaries are named ``.<target name>.tmp-<pid>-<random>``; only names of this form are ever cleaned up.
TMP_MARK = ".tmp-"
#: Array kinds a checkpoint may hold: booleans, integers, floats, complex (never objects or strings).
NUMERIC_KINDS = "biufc"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, damaged, not ours, or could not be written; nothing was loaded."""


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


# ======================================================================== folders and temporaries
def older_path(path, i):
    """Where the ``i``-th previous version of ``path`` is kept: ``ck.npz`` -> ``ck.1.npz``, ``ck.2.npz``, ..."""
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}.{i}{ext}"


def _older_indices(path):
    """The ``i`` of every ``older_path(path, i)`` that exists, ascending."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    root, ext = os.path.splitext(os.path.basename(path))
    pattern = re.compile(re.escape(root) + r"\.([1-9][0-9]*)" + re.escape(ext) + "$")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(pattern.match, names) if m)


def existing_versions(path):
    """``path`` and its kept previous versions that exist on disk, newest first."""
    path = os.fspath(path)
    out = [path] if os.path.exists(path) else []
    return out + [older_path(path, i) for i in _older_indices(path)]


def _tmp_pattern(path):
    return re.compile(re.escape("." + os.path.basename(path) + TMP_MARK) + r"([0-9]+)(-.*)?$")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                      # it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(path):
    """Delete temporaries of earlier saves of ``path`` that no live process is writing; returns their names.

    Only files named ``.<name of path>.tmp-<pid>...`` in the folder of ``path`` are
    considered. On POSIX a writer holds an exclusive ``flock`` on its temporary
    until it renames it, and the kernel drops the lock when the writer dies, so
    a temporary we can lock is an orphan. Where ``flock`` is missing or refused
    a temporary counts as an orphan when its process id is not running here.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    pattern = _tmp_pattern(path)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if not m:
            continue
        full = os.path.join(folder, name)
        try:
            if fcntl is None:
                if not _pid_alive(int(m.group(1))):
                    os.remove(full)
                    removed.append(full)
                continue
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:      # a live writer holds it
                os.close(fd)
                continue
            except OSError:              # no flock on this file system: judge by the process id
                if _pid_alive(int(m.group(1))):
                    os.close(fd)
                    continue
            try:
                os.remove(full)
                removed.append(full)
            finally:
                os.close(fd)
        except OSError:                  # vanished meanwhile, or not ours to delete: leave it
            continue
    return removed


def _lock(fd):
    """Hold an exclusive ``flock`` on ``fd`` where the file system offers one (best effort)."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:                  # e.g. ENOLCK on some network file systems; the pid still tells
            pass


def _umask():
    """The process umask, read without changing it (``os.umask`` would, and is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def fsync_folder(folder):
    """Make the renames and creations in ``folder`` durable (a no-op where folders cannot be fsynced)."""
    if os.name == "nt":                  # pragma: no cover
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:               # some file systems refuse fsync on a folder; nothing more to do
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def write_error(path, exc, what="checkpoint", error=None, kept="the previous file there (if any) is intact"):
    """The error to raise when writing ``path`` failed with the OSError ``exc``: says why and what to do."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        why = (f"the disk holding {folder} is full ({exc.strerror or exc}). Free some space or "
               "choose another folder")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = (f"the folder {folder} is not writable ({exc.strerror or exc}). Fix its permissions "
               "or choose another folder")
    else:
        why = f"{type(exc).__name__}: {exc}. Check the folder {folder}"
    return (error or CheckpointError)(f"could not write the {what} {path}: {why}; {kept}.")


def check_folder_writable(folder, what, error=CheckpointError, need_bytes=0):
    """Create ``folder`` if it is missing and make sure a file can be created in it, before any work is done.

    Parameters
    ----------
    folder : str or PathLike
    what : str
        How the message names the folder, e.g. ``"checkpoint folder (`checkpoint_path`)"``.
    error : type
        The exception class to raise.
    need_bytes : int
        Raise when the file system has less free space than this.
    """
    folder = os.path.abspath(os.fspath(folder))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise error(f"the {what} {folder} is a file, not a folder; choose another path. Nothing was run.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise error(f"the {what} {folder} does not exist and could not be created ({type(exc).__name__}: "
                    f"{exc}); create it or choose another path. Nothing was run.") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".nodeform-write-test" + TMP_MARK, dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise error(f"the {what} {folder} is not writable ({type(exc).__name__}: {exc}); fix its "
                    "permissions or choose another path. Nothing was run.") from None
    if need_bytes:
        free = shutil.disk_usage(folder).free
        if free < need_bytes:
            raise error(f"the {what} {folder} has {free:,} bytes free, but the files to be written there "
                        f"need about {need_bytes:,}; free some space or choose another path. Nothing was run.")


# ======================================================================== writing
def _rotate(path, keep):
    """Shift ``path`` -> ``.1`` -> ... -> ``.{keep-1}`` (each an atomic rename); the oldest falls off."""
    for i in range(keep - 1, 0, -1):
        src = path if i == 1 else older_path(path, i - 1)
        if os.path.exists(src):
            os.replace(src, older_path(path, i))


def save_arrays(path, arrays, meta=None, *, keep=None):
    """Write ``arrays`` (name -> array) and the JSON-able ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : str or PathLike
        Usually ending in ``.npz`` (nothing is appended). A missing folder is created.
    arrays : mapping of str to ndarray
        NumPy arrays (CuPy arrays are copied to the host by the caller).
    meta : dict, optional
        Small metadata (step, RNG state, ...); must be JSON-serialisable.
    keep : int, optional
        Keep this many versions: the new file at ``path`` and the ``keep - 1``
        previous ones at :func:`older_path` (``ck.1.npz`` the newest of them);
        older versions beyond that are deleted. ``None`` (default) just replaces
        ``path`` and touches no other file.

    Raises
    ------
    CheckpointError
        The folder is not writable or the disk is full; the file at ``path`` is unchanged.
    """
    path = os.fspath(path)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"`keep` must be a positive int (versions to keep) or None, got {keep!r}.")
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if META_KEY in arrays:
        raise ValueError(f"`{META_KEY}` is a reserved name; rename that array.")
    for k, v in arrays.items():
        if v.dtype.kind not in NUMERIC_KINDS:
            raise TypeError(f"array `{k}` has dtype {v.dtype}; only numeric arrays are saved (no pickle).")
    record = dict(meta or {}, format=FORMAT, sha256=checksum(arrays), keys=sorted(arrays))
    blob = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}-", dir=folder)
        with os.fdopen(fd, "wb") as f:
            _lock(f.fileno())                             # "being written": see remove_stale_temporaries
            if hasattr(os, "fchmod"):                     # mkstemp makes it 0600; give it a normal file's mode
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            np.savez(f, **arrays, **{META_KEY: blob})
            f.flush()
            os.fsync(f.fileno())
            if keep is not None:
                _rotate(path, keep)
            os.replace(tmp, path)
            tmp = None
        fsync_folder(folder)
        if keep is not None:
            for i in _older_indices(path):
                if i >= keep:
                    os.remove(older_path(path, i))
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


# ======================================================================== reading
def _read_member(zf, info, size, expect):
    """One ``.npy`` member as an array, its header checked against what is stored before allocating."""
    key = info.filename[:-4]
    if info.flag_bits & 0x1:
        raise CheckpointError(f"array `{key}` is encrypted; nodeform never writes encrypted files")
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"array `{key}` is compressed (zip method {info.compress_type}); nodeform "
                              "writes uncompressed files")
    if info.file_size > size:
        raise CheckpointError(f"array `{key}` claims {info.file_size:,} bytes in a file of {size:,}")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CheckpointError(f"array `{key}` has .npy format version {version}; expected 1.0 or 2.0")
        if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
            raise CheckpointError(f"array `{key}` has dtype {dtype}; only numeric arrays are read (no pickle)")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CheckpointError(f"array `{key}` declares the invalid shape {shape}")
        if expect is not None and key in expect and tuple(shape) != tuple(expect[key]):
            raise CheckpointError(f"array `{key}` has shape {tuple(shape)} but the model needs "
                                  f"{tuple(expect[key])}: the checkpoint was made for another architecture")
        nbytes = math.prod(shape) * dtype.itemsize
        stored = info.file_size - f.tell()
        if nbytes != stored:
            raise CheckpointError(f"array `{key}` declares shape {tuple(shape)} of {dtype} ({nbytes:,} "
                                  f"bytes) but {stored:,} bytes are stored")
        buf = f.read(nbytes)
        if len(buf) != nbytes or f.read(1):        # reading to the end also checks the member's CRC-32
            raise CheckpointError(f"array `{key}` is cut short")
    arr = np.frombuffer(buf, dtype=dtype, count=math.prod(shape))
    return key, arr.reshape(shape, order="F" if fortran else "C").copy()


def load_arrays(path, expect=None):
    """Read a file written by :func:`save_arrays`, checking it first.

    Parameters
    ----------
    path : str or PathLike
    expect : mapping of str to tuple, optional
        Shapes some arrays must have; a mismatch raises before that array is read.

    Returns
    -------
    arrays : dict of str to ndarray
    meta : dict

    Raises
    ------
    CheckpointError
        The file is missing, truncated, corrupted, crafted, or was not written by nodeform.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}; check the path, or start without `resume`.")
    size = os.path.getsize(path)
    try:
        arrays = {}
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.filename[:-4] in arrays:
                    raise CheckpointError(f"unexpected or repeated zip member {info.filename!r}")
                key, arr = _read_member(zf, info, size, expect)
                arrays[key] = arr
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path!r} ({size:,} bytes) is damaged or not ours: {exc}; it "
                              "was NOT loaded. Resume from an older copy, or start again.") from None
    except Exception as exc:    # noqa: BLE001 - every way a damaged zip/npy can fail; the message names it
        raise CheckpointError(f"checkpoint {path!r} ({size:,} bytes) is damaged, probably truncated by "
                              f"a crash or a full disk ({type(exc).__name__}: {exc}); it was NOT "
                              "loaded. Delete it and resume from an older copy, or start again.") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"{path!r} is an .npz file but not a nodeform checkpoint (no `{META_KEY}`).")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path!r}: its metadata is unreadable ({exc}); not loaded.") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path!r}: its metadata is a {type(meta).__name__}, not a "
                              "JSON object; not loaded.")
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
