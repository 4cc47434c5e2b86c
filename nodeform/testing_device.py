"""A fake GPU for CPU tests: NumPy arrays that behave like CuPy's where it matters.

The code of chapters 4-7 must run unchanged on CuPy arrays, but CI has no GPU. This
module gives a backend, registered as ``"fakedevice"``, whose arrays
(:class:`DeviceArray`, a NumPy subclass) compute on the CPU and refuse what CuPy
refuses, so a test on the CPU catches host code on the hot path:

* mixing a host (NumPy) array of one or more dimensions into an operation on a
  device array raises ``TypeError``, as CuPy does;
* calling a NumPy *function* on a device array (``np.concatenate``, ``np.where``,
  ``np.asarray`` through ``__array_function__``-aware paths) raises ``TypeError``:
  generic code must call ``xp.<function>`` with ``xp = get_xp(...)``. (CuPy would
  often accept these; the fake is stricter on purpose.)
* every implicit conversion to a Python number (``float(x)``, ``bool(x)``,
  ``int(x)``, ``x.item()``, ``x.tolist()``) is counted in :data:`IMPLICIT_SYNCS`:
  on a GPU each is a host sync. Tests compare it with
  :func:`nodeform.backend.sync_count` to prove that every sync went through the
  counted places;
* ``xp.asarray(host_array)`` counts a host-to-device copy in :data:`TRANSFERS`
  (``"h2d"``), and ``x.get()`` a device-to-host copy (``"d2h"``).

Not caught: ``np.asarray(device_array)`` returns a host view without asking (a NumPy
subclass cannot refuse it); CuPy raises there.

Use :func:`enable` (idempotent) and then ``backend="fakedevice"``, or
``fake.asarray(x)``.
"""
from __future__ import annotations

import numpy as np

from nodeform import backend

#: Implicit device-to-Python conversions (each one a host sync on a real GPU).
IMPLICIT_SYNCS = [0]
#: Copies between host and device: ``{"h2d": n, "d2h": n}``.
TRANSFERS = {"h2d": 0, "d2h": 0}
#: NumPy functions generic code may call on device arrays (they only read metadata).
_ALLOWED_NP_FUNCTIONS = {"shape", "ndim", "size", "result_type", "may_share_memory", "shares_memory",
                         "broadcast_shapes", "iscomplexobj", "isrealobj", "copyto", "dot"}


def _host(x):
    """The plain-NumPy view of a device array; anything else unchanged."""
    return x.view(np.ndarray) if isinstance(x, DeviceArray) else x


def _dev(x):
    """Wrap NumPy results (arrays and scalars of arrays' dtypes) as device arrays."""
    if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray):
        return x.view(DeviceArray)
    if isinstance(x, np.generic) and not isinstance(x, (np.str_, np.bytes_)):
        return np.asarray(x).view(DeviceArray)          # CuPy reductions give 0-d arrays
    if isinstance(x, tuple):
        return tuple(_dev(v) for v in x)
    if isinstance(x, list):
        return [_dev(v) for v in x]
    return x


def _refuse_host(args, what):
    for a in args:
        if type(a) is np.ndarray and a.ndim > 0:
            raise TypeError(f"{what}: a host (NumPy) array of shape {a.shape} was mixed with a device "
                            "array; move it with `xp.asarray(...)` once, outside the hot path "
                            "(CuPy raises here too).")


class DeviceArray(np.ndarray):
    """A NumPy array that plays a device array (see the module docstring)."""

    __array_priority__ = 100.0

    @property
    def __cuda_array_interface__(self):    # nodeform's autodiff recognises device arrays by this
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (0, False), "version": 3}

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for a in inputs:      # a Tensor (or other array-like class): let it handle the operation
            if not isinstance(a, (np.ndarray, np.generic, int, float, complex, bool)) and \
                    hasattr(a, "__array_ufunc__"):
                return NotImplemented
        _refuse_host(inputs, f"np.{ufunc.__name__}")
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_host(o) for o in out)
        res = getattr(ufunc, method)(*[_host(a) for a in inputs], **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _dev(res)

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ in _ALLOWED_NP_FUNCTIONS:
            return _dev(func(*[_host(a) for a in args], **{k: _host(v) for k, v in kwargs.items()}))
        raise TypeError(f"np.{func.__name__} was called on a device array; backend-generic code must "
                        f"call `xp.{func.__name__}` with `xp = nodeform.backend.get_xp(...)`.")

    # ---- implicit host syncs, counted
    def __float__(self):
        IMPLICIT_SYNCS[0] += 1
        return float(_host(self))

    def __int__(self):
        IMPLICIT_SYNCS[0] += 1
        return int(_host(self))

    def __index__(self):
        IMPLICIT_SYNCS[0] += 1
        return _host(self).__index__()

    def __bool__(self):
        IMPLICIT_SYNCS[0] += 1
        return bool(_host(self))

    def item(self, *args):
        IMPLICIT_SYNCS[0] += 1
        return _host(self).item(*args)

    def tolist(self):
        IMPLICIT_SYNCS[0] += 1
        return _host(self).tolist()

    def get(self):
        """A host copy, like ``cupy.ndarray.get``."""
        TRANSFERS["d2h"] += 1
        return np.array(_host(self))

    def __repr__(self):
        return "DeviceArray(" + repr(_host(self))[6:]

    # methods that NumPy implements without ufuncs: run them on the host view, wrap the result
    def _wrap(name):
        def method(self, *args, **kwargs):
            return _dev(getattr(_host(self), name)(*[_host(a) for a in args], **kwargs))
        method.__name__ = name
        return method

    for _name in ("argmax", "argmin", "argsort", "nonzero", "searchsorted", "clip", "round",
                  "astype", "copy", "sum", "mean", "max", "min", "any", "all", "prod", "std", "var",
                  "cumsum", "dot", "take", "repeat"):
        locals()[_name] = _wrap(_name)
    del _name, _wrap


class _Module:
    """``xp`` of the fake device: NumPy's names, taking and returning device arrays."""

    def __init__(self, base, name):
        self._base, self.__name__ = base, name

    def __getattr__(self, name):
        attr = getattr(self._base, name)
        if isinstance(attr, type(np)):
            sub = _Module(attr, f"{self.__name__}.{name}")
            setattr(self, name, sub)
            return sub
        if isinstance(attr, np.ufunc) or not callable(attr) or isinstance(attr, type):
            return attr                  # ufuncs dispatch through DeviceArray; dtypes, constants
        if name in ("asarray", "array", "ascontiguousarray"):
            def convert(x, *args, **kwargs):
                if not isinstance(x, DeviceArray) and not backend.is_device_array(x):
                    TRANSFERS["h2d"] += 1
                return _dev(attr(_host(x), *args, **kwargs))
            return convert

        def call(*args, **kwargs):
            _refuse_host(args, f"xp.{name}")
            return _dev(attr(*[_host(a) if not isinstance(a, (list, tuple)) else
                               type(a)(_host(v) for v in a) for a in args],
                             **{k: _host(v) for k, v in kwargs.items()}))
        call.__name__ = name
        return call

    def __repr__(self):
        return f"<fake device module {self.__name__!r}>"


#: The fake device's array module.
xp = _Module(np, "fakedevice")


def enable():
    """Register the backend ``"fakedevice"`` (idempotent); returns its ``xp``."""
    backend.register_backend("fakedevice", xp, DeviceArray)
    return xp


def asarray(x, dtype=None):
    """``x`` (array or Tensor data) moved to the fake device."""
    enable()
    return xp.asarray(backend.to_numpy(x), dtype=dtype)


def reset_counters():
    """Zero :data:`IMPLICIT_SYNCS` and :data:`TRANSFERS`."""
    IMPLICIT_SYNCS[0] = 0
    TRANSFERS["h2d"] = TRANSFERS["d2h"] = 0
