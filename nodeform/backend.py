"""Array backends: which array module (``xp``) a computation runs on.

nodeform never keeps a hidden global device. The array module is read off the
inputs, as ``cupy.get_array_module`` does: NumPy arrays give NumPy, CuPy arrays
give CuPy. float64 is the default dtype everywhere; float32 is a choice the user
makes by passing float32 arrays.

CuPy is optional (``pip install nodeform[gpu]``). Importing CuPy can succeed on a
machine where no GPU or driver is usable; the first allocation then fails. The
functions here try one small allocation and turn any failure into one sentence
that says why (:func:`cupy_status`).
"""
from __future__ import annotations

import numpy as np

#: The dtype nodeform uses when the user gives Python numbers or lists.
DEFAULT_DTYPE = np.float64

_CUPY_CHECKED = None  # (module or None, reason str); filled on first use


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _CUPY_CHECKED = (None, "CuPy is installed but no GPU is usable here: "
                               f"the first allocation failed with {type(exc).__name__}: {first}")
    return _CUPY_CHECKED


def cupy_available():
    """True when CuPy is installed and a GPU allocation works."""
    return cupy_status()[0] is not None


def get_cupy():
    """Return the CuPy module, or raise ``RuntimeError`` saying why it cannot be used."""
    cp, reason = cupy_status()
    if cp is None:
        raise RuntimeError(f"backend `cupy` is not usable: {reason}. "
                           "Use backend='numpy' (the default) instead.")
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
        mod = type(a).__module__
        if mod.startswith("cupy"):
            return get_cupy()
    return np


def get_backend(name):
    """The array module called ``name`` (``"numpy"`` or ``"cupy"``), with a clear error."""
    if name in (None, "numpy", "np"):
        return np
    if name in ("cupy", "cp", "gpu"):
        return get_cupy()
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
    if xp is np and type(x).__module__.startswith("cupy"):
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
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)
