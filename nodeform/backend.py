"""Array backends: which array module (``xp``) a computation runs on.

nodeform never keeps a hidden global device. The array module is read off the
inputs, as ``cupy.get_array_module`` does: NumPy arrays give NumPy, CuPy arrays
give CuPy. float64 is the default dtype everywhere; float32 is a choice the user
makes by passing float32 arrays; on the GPU the training entry points default to
float32 (:data:`GPU_DEFAULT_DTYPE`).

Which backend a *command* uses (``python -m nodeform train --backend cupy``) is
chosen by :func:`resolve_backend`: the argument, else the environment variable
``NODEFORM_BACKEND`` (``numpy`` or ``cupy``), else NumPy.

CuPy is optional (``pip install nodeform[gpu]``). Importing CuPy can succeed on a
machine where no GPU or driver is usable; the first allocation then fails. The
functions here try one small allocation and turn any failure into one sentence
that says why (:func:`cupy_status`).

Host synchronizations. On a GPU, turning a device value into a Python number
(``float(x)``, ``bool(x)``) waits for every queued kernel and copies the value
back: a *host sync*. The solver loop needs one per step (the controller's error
ratio). Every such conversion in nodeform goes through :func:`host_float` /
:func:`host_bool`, which count it, on NumPy too (there it is the place that
*would* sync), so tests on the CPU can read how many a solve makes
(:func:`sync_count`, ``Solution.host_syncs``, ``SolveStats.syncs_forward``).
"""
from __future__ import annotations

import os

import numpy as np

#: The dtype nodeform uses when the user gives Python numbers or lists.
DEFAULT_DTYPE = np.float64

#: The dtype of models and data on a GPU when the user does not choose: float32 is what
#: GPU peers train in, and float64 runs at a fraction of float32's speed on most GPUs.
GPU_DEFAULT_DTYPE = np.float32
#: The environment variable that picks the backend of commands (``numpy`` or ``cupy``).
BACKEND_ENV = "NODEFORM_BACKEND"
#: The names :func:`get_backend` accepts for the two backends.
BACKENDS = ("numpy", "cupy")

_CUPY_CHECKED = None  # (module or None, reason str); filled on first use
#: Array types of other device modules (the CPU tests' fake device): type -> (name, xp)
_EXTRA_TYPES = {}
#: name -> xp for :func:`register_backend`
_EXTRA_NAMES = {}
#: Host syncs so far in this process (one list cell: cheap to bump from anywhere).
_SYNCS = [0]


def cupy_status():
    """Whether CuPy can really run here.

    Returns
    -------
    cupy : module or None
        The CuPy module when a GPU allocation worked, else ``None``.
    reason : str
        ``"ok (<device name>)"`` or one sentence saying why CuPy cannot be used.
    """
    global _CUPY_CHECKED
    if _CUPY_CHECKED is not None:
        return _CUPY_CHECKED
    try:
        import cupy
    except ImportError as exc:
        _CUPY_CHECKED = (None, f"CuPy is not installed ({exc}); "
                               "install it with `pip install nodeform[gpu]`")
        return _CUPY_CHECKED
    except Exception as exc:  # a broken install can raise anything on import
        _CUPY_CHECKED = (None, f"CuPy failed to import: {type(exc).__name__}: {exc}")
        return _CUPY_CHECKED
    try:
        x = cupy.arange(3, dtype=cupy.float64)
        float((x * 2).sum())
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        _CUPY_CHECKED = (cupy, f"ok ({name})")
    except Exception as exc:
        _CUPY_CHECKED = (None, explain_cupy_failure(exc))
    return _CUPY_CHECKED


def explain_cupy_failure(exc):
    """One sentence saying why CuPy's first allocation failed: no device, the driver, or other."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    low = (type(exc).__name__ + " " + text).lower()
    if "nodevice" in low or "no cuda-capable device" in low or "no device" in low:
        why = "no GPU device is visible (none installed, or hidden by CUDA_VISIBLE_DEVICES)"
    elif "driver" in low or "libcuda" in low:
        why = "the NVIDIA driver is missing or too old for this CuPy build"
    else:
        why = "the first allocation on the GPU failed"
    return f"CuPy is installed but cannot run here: {why} ({type(exc).__name__}: {first})"


def cupy_available():
    """True when CuPy is installed and a GPU allocation works."""
    return cupy_status()[0] is not None


def get_cupy():
    """Return the CuPy module, or raise ``RuntimeError`` saying why it cannot be used."""
    cp, reason = cupy_status()
    if cp is None:
        raise RuntimeError(f"backend `cupy` cannot run here: {reason}; use backend 'numpy' (the "
                           "default) instead.")
    return cp


def raw(x):
    """The plain array inside ``x``: ``x.data`` for a Tensor, ``x`` itself otherwise."""
    return getattr(x, "data", x) if hasattr(x, "_is_tensor") else x


def get_xp(*arrays):
    """The array module of the inputs: ``cupy`` if any input is a CuPy array, else ``numpy``.

    Tensors are looked through to their data; Python numbers and ``None`` are ignored.
    """
    for a in arrays:
        a = raw(a)
        kind = type(a)
        if kind is np.ndarray:
            continue
        if kind.__module__.startswith("cupy"):
            return get_cupy()
        if kind in _EXTRA_TYPES:
            return _EXTRA_TYPES[kind][1]
    return np


def is_device_array(x):
    """True when ``x`` (or the data of a Tensor) lives on a device (CuPy or a registered backend)."""
    kind = type(raw(x))
    return kind is not np.ndarray and (kind.__module__.startswith("cupy") or kind in _EXTRA_TYPES)


def backend_name(xp):
    """``"numpy"``, ``"cupy"`` or the registered name of the array module ``xp``."""
    if xp is np:
        return "numpy"
    for name, mod in _EXTRA_NAMES.items():
        if mod is xp:
            return name
    return "cupy"


def register_backend(name, xp, array_type):
    """Make ``xp`` (arrays of type ``array_type``) a backend called ``name``.

    For tests: :mod:`nodeform.testing_device` registers a fake "device" that runs on
    NumPy but refuses what CuPy refuses and counts every implicit host sync.
    """
    _EXTRA_NAMES[name] = xp
    _EXTRA_TYPES[array_type] = (name, xp)


def resolve_backend(name=None):
    """The backend name a command runs on: ``name``, else ``$NODEFORM_BACKEND``, else ``"numpy"``.

    Checks that it can run here (:func:`get_backend` raises saying why not).
    """
    if name is None:
        name = os.environ.get(BACKEND_ENV, "").strip() or "numpy"
        where = f"the environment variable {BACKEND_ENV}={name!r}"
    else:
        where = f"`backend`={name!r}"
    if name not in BACKENDS and name not in _EXTRA_NAMES:
        raise ValueError(f"{where} is not a backend: choose one of {', '.join(BACKENDS)}.")
    get_backend(name)
    return name


def default_dtype(xp):
    """The dtype of models and data when the user gives none: float64 on NumPy, float32 on a GPU."""
    return DEFAULT_DTYPE if xp is np else GPU_DEFAULT_DTYPE


def require_host(x, what):
    """Raise ``TypeError`` if ``x`` lives on a device: ``what`` (e.g. the Numba engine) is CPU-only."""
    if is_device_array(x):
        raise TypeError(f"{what} runs on the CPU only (compiled with Numba, NumPy float64), but got a "
                        f"{backend_name(get_xp(x))} device array. Use the reference engine (it runs on "
                        "the GPU), or move the data to the host with `nodeform.to_numpy(x)`.")


# ======================================================================== host syncs
def host_float(x):
    """``float(x)`` for a 0-d array (a host sync on a GPU, counted) or a Python number (not counted)."""
    if type(x) is not float and type(x) is not int:
        _SYNCS[0] += 1
    return float(x)


def host_bool(x):
    """``bool(x)`` for a 0-d array (a host sync on a GPU, counted) or a Python bool (not counted)."""
    if type(x) is not bool:
        _SYNCS[0] += 1
    return bool(x)


def sync_count():
    """Host syncs counted so far in this process (differences give the syncs of a piece of work)."""
    return _SYNCS[0]


def get_backend(name):
    """The array module called ``name`` (``"numpy"`` or ``"cupy"``), with a clear error."""
    if name in (None, "numpy", "np"):
        return np
    if name in ("cupy", "cp", "gpu"):
        return get_cupy()
    if name in _EXTRA_NAMES:
        return _EXTRA_NAMES[name]
    raise ValueError(f"`backend` must be 'numpy' or 'cupy', got {name!r}.")


def asarray(x, dtype=None, backend=None, like=None):
    """Convert ``x`` to an array of the chosen backend.

    Parameters
    ----------
    x : array_like or Tensor
    dtype : dtype, optional
        Python floats and lists become ``DEFAULT_DTYPE`` (float64) unless given.
    backend : {"numpy", "cupy"}, optional
        Target module; defaults to the module of ``like`` or of ``x``.
    like : array, optional
        An array whose module is used.
    """
    x = raw(x)
    if backend is not None:
        xp = get_backend(backend)
    elif like is not None:
        xp = get_xp(like)
    else:
        xp = get_xp(x)
    if xp is np and is_device_array(x):
        x = x.get()
    if dtype is None and not hasattr(x, "dtype"):
        arr = np.asarray(x)
        if arr.dtype.kind in "fc" or arr.dtype == np.float64:
            dtype = DEFAULT_DTYPE if arr.dtype.kind == "f" else arr.dtype
        return xp.asarray(arr, dtype=dtype)
    return xp.asarray(x, dtype=dtype)


def to_numpy(x):
    """A NumPy copy (or view) of ``x``, whatever backend it lives on."""
    x = raw(x)
    if is_device_array(x):
        return x.get()
    return np.asarray(x)
