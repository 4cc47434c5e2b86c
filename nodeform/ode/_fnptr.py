"""Vector fields as function pointers, so that the compiled loops cache across processes.

Why: a compiled loop that receives an ``@numba.njit`` function ``f`` as an argument is
specialized on the *dispatcher type* of ``f``, and Numba's on-disk cache cannot match
that type in a new process (it keys on the dispatcher object), so every process
recompiles the loop (seconds) and the cache index grows an entry per process.

The fix: hand the loop a *handle* instead of ``f``, a pair of integers
``(c_addr, jit_addr)``, the addresses of ``f``'s compiled code for one exact signature.
Inside the loop, :func:`field_function` rebuilds a first-class function
(``numba.types.FunctionType``) from the handle, its signature derived from the types
of ``args`` (so it needs no type object as an argument). The loop is then specialized
on ``UniTuple(int64, 2)`` plus the types of ``args`` and the arrays: the same key in
every process, so ``cache=True`` loads it from disk.

:func:`field_handle` builds the handle once per (``f``, types of ``args``) and keeps it
in a dictionary, so a repeated solve pays one dictionary lookup. It returns ``None``
(the caller then passes ``f`` itself: the dispatcher path, recompiled per process) when
``f`` cannot be compiled to the exact signature the loop calls, e.g. when it returns a
non-contiguous, non-float64 or non-1-D array, or when an argument has no Numba type.

The calls go through a pointer (``f`` is not inlined into the loop); Numba's native
calling convention is used, so an exception raised inside ``f`` still propagates.
"""
from __future__ import annotations

import numba
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

__all__ = ["field_handle", "field_function", "function_handle", "build_function", "args_key",
           "FIELD_RETURN", "STATE", "HANDLE", "INPLACE_HANDLE", "is_handle_type",
           "install_compile_log", "is_inplace", "is_inplace_type", "check_field", "field_call"]

#: The state type every vector field receives: a 1-D C-contiguous float64 array.
STATE = types.float64[::1]
#: The return type a vector field must have for the pointer path (else: dispatcher path).
FIELD_RETURN = types.float64[::1]
#: The Numba type of a handle: (address of the C wrapper, address of the native function).
HANDLE = types.UniTuple(types.int64, 2)
#: The handle of an in-place field ``f(t, y, out, *args) -> None``: the same two addresses
#: and a third, unused entry that tells the two kinds apart by type.
INPLACE_HANDLE = types.UniTuple(types.int64, 3)

# (f, numba types of args) -> handle, or None when f cannot be called through a pointer
_HANDLES = {}


def function_handle(f, sig):
    """``(c_addr, jit_addr)`` of the njit function ``f`` compiled for ``sig``, or None.

    Parameters
    ----------
    f : numba dispatcher
    sig : numba Signature
        The exact signature the caller will call through (return type included).

    Returns
    -------
    tuple of int or None
        None when ``f`` does not compile for ``sig.args`` or infers another return type
        than ``sig.return_type`` (calling it through the pointer would be undefined).
    """
    try:
        cres = f.get_compile_result(sig)
    except Exception:  # noqa: BLE001 - any typing failure means: use the dispatcher path
        return None
    if cres.signature.return_type != sig.return_type:
        return None
    lib = cres.library
    c_addr = lib.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)
    jit_addr = lib.get_pointer_to_function(cres.fndesc.llvm_func_name)
    if not c_addr or not jit_addr:
        return None
    return (int(c_addr), int(jit_addr))


def is_inplace(f, args):
    """True when ``f`` is an in-place field ``f(t, y, out, *args)`` (it writes dy/dt into ``out``).

    Detected from ``f``'s parameters: ``3 + len(args)`` of them (no ``*varargs``) is the
    in-place form, anything else the returning form ``f(t, y, *args) -> dy``.
    """
    key = (f, len(args))
    try:
        return _INPLACE[key]
    except KeyError:
        pass
    except TypeError:  # unhashable f
        key = None
    import inspect
    py = getattr(f, "py_func", f)
    try:
        params = list(inspect.signature(py).parameters.values())
    except (TypeError, ValueError):
        params = None
    if params is None or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        res = False
    else:
        res = len(params) == 3 + len(args)
    if key is not None:
        _INPLACE[key] = res
    return res


_INPLACE = {}  # (f, len(args)) -> is_inplace(f, args)


def field_handle(f, args, inplace=False):
    """The handle of a vector field ``f(t, y, *args) -> float64[::1]``, memoized; or None.

    Parameters
    ----------
    f : numba dispatcher
    args : tuple
        The extra arguments, as they will be passed to the loop.

    Returns
    -------
    tuple of int or None
        None: ``f`` cannot be called through a pointer with this signature (see the
        module docstring); pass ``f`` itself to the loop instead.
    """
    try:
        key = (f, args_key(args), inplace)
        return _HANDLES[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable argument type
        return None
    install_compile_log()
    try:
        arg_types = tuple(numba.typeof(a) for a in args)
    except Exception:  # noqa: BLE001 - no Numba type: the dispatcher path says why
        handle = None
    else:
        if inplace:
            handle = function_handle(f, types.none(types.float64, STATE, STATE, *arg_types))
            handle = None if handle is None else handle + (0,)
        else:
            handle = function_handle(f, FIELD_RETURN(types.float64, STATE, *arg_types))
    _HANDLES[key] = handle
    return handle


def args_key(args):
    """A cheap hashable key that determines ``numba.typeof(args)``.

    Scalars by Python type, arrays by dtype, dimensions, layout and writability; any
    other object by its Numba type (slower, still correct).
    """
    key = []
    for a in args:
        tp = type(a)
        if tp is float or tp is int or tp is bool:
            key.append(tp)
        elif hasattr(a, "__array_interface__") and hasattr(a, "flags"):
            fl = a.flags
            key.append((tp, a.dtype.str, a.ndim, fl.c_contiguous, fl.f_contiguous, fl.writeable,
                        fl.aligned))
        elif tp is tuple:
            key.append(("tuple", args_key(a)))
        else:
            key.append(numba.typeof(a))
    return tuple(key)


def build_function(context, builder, fnty, c_addr, jit_addr):
    """Lowering helper: the FunctionType value ``fnty`` that calls the given addresses."""
    vp = context.get_value_type(types.voidptr)
    fn = cgutils.create_struct_proxy(fnty)(context, builder)
    fn.c_addr = builder.inttoptr(c_addr, vp)
    fn.py_addr = cgutils.get_null_value(vp)
    fn.jit_addr = builder.inttoptr(jit_addr, vp)
    return fn._getvalue()


@intrinsic
def _field_from_handle(typingctx, handle, args):
    """FunctionType ``float64[::1](float64, float64[::1], *args)`` from a handle, or
    ``none(float64, float64[::1], float64[::1], *args)`` from an in-place handle."""
    if handle.count == 3:
        fnty = types.FunctionType(types.none(types.float64, STATE, STATE, *args.types))
    else:
        fnty = types.FunctionType(FIELD_RETURN(types.float64, STATE, *args.types))

    def codegen(context, builder, signature, llargs):
        c_addr = builder.extract_value(llargs[0], 0)
        jit_addr = builder.extract_value(llargs[0], 1)
        return build_function(context, builder, fnty, c_addr, jit_addr)
    return fnty(handle, args), codegen


def field_function(f, args):
    """Inside compiled code: the callable vector field, from a handle or ``f`` itself.

    In Python (``NUMBA_DISABLE_JIT=1``) it returns ``f`` unchanged.
    """
    return f


def is_handle_type(f):
    """True when the Numba type ``f`` is a handle (see the module docstring)."""
    return (isinstance(f, types.UniTuple) and f.count in (2, 3)
            and isinstance(f.dtype, types.Integer))


@overload(field_function, jit_options={"cache": True})
def _field_function_impl(f, args):
    if is_handle_type(f):
        return lambda f, args: _field_from_handle(f, args)
    return lambda f, args: f


# ----------------------------------------------------------------------------- compile log
#: Set to "0" to silence the one line printed per Numba compile of nodeform's code.
COMPILE_LOG_ENV = "NODEFORM_COMPILE_LOG"
#: What each compiled entry point is, for the compile log (by function name).
_COMPILE_WHAT = {
    "mlp_f": "the MLP vector field (mlp_field)",
    "mlp_vjp": "the MLP vector field's hand-derived VJP (mlp_field)",
    "augmented": "the adjoint's augmented dynamics",
    "augmented_mlp": "the adjoint's augmented dynamics of the MLP field",
}
_LOG_STATE = {"installed": False, "depth": 0}


def _describe_compile(dispatcher, args):
    """One line saying what is being compiled and why (see :func:`install_compile_log`)."""
    py = dispatcher.py_func
    name, module = py.__name__, py.__module__ or ""
    field = getattr(py, "_nodeform_field", None)  # a loop with the field compiled in
    if field is not None:
        args = (types.none,) + tuple(args)  # the loop's arguments, f itself left out
    if name.startswith("solve_adaptive") or name.startswith("solve_fixed"):
        method = name.split("_", 2)[2] if name.count("_") >= 2 else "generic"
        kind = "adaptive" if name.startswith("solve_adaptive") else "fixed-grid"
        what = f"the {method} {kind} solver loop"
        if len(args) > 1 and isinstance(args[1], types.BaseTuple) and len(args[1]):
            what += f" for args {args[1]}"
        if field is not None:
            what += f" with the field `{getattr(field, '__name__', field)}` compiled in"
        elif (len(args) and not is_handle_type(args[0])
              and not isinstance(args[0], types.FunctionType)):
            fname = getattr(getattr(args[0], "dispatcher", None), "py_func", None)
            what += f" with the field `{getattr(fname, '__name__', args[0])}` compiled in"
    elif module.startswith("nodeform") and name in _COMPILE_WHAT:
        what = _COMPILE_WHAT[name]
    elif module.startswith("nodeform"):
        what = f"{module}.{name}"
    else:
        what = f"your njit function `{name}`"
    cached = type(dispatcher._cache).__name__ != "NullCache"
    why = ("first use in this environment; cached on disk afterwards" if cached
           else "first use in this process; not cached on disk (cache=False)")
    return f"numba: compiling {what} ({why})"


def install_compile_log():
    """Print one line to stderr whenever Numba compiles an entry point (nested calls not).

    Installed on the first compiled solve (not at import). Compiling the loops takes a few
    seconds each the first time; the line says what and why, so a pause is explained.
    Silence it with ``NODEFORM_COMPILE_LOG=0``.
    """
    if _LOG_STATE["installed"]:
        return
    _LOG_STATE["installed"] = True
    import os
    import sys
    from numba.core import event

    if os.environ.get(COMPILE_LOG_ENV, "1") == "0":
        return

    class _Log(event.Listener):
        def on_start(self, ev):
            if _LOG_STATE["depth"] == 0:
                try:
                    line = _describe_compile(ev.data["dispatcher"], ev.data["args"])
                except Exception:  # noqa: BLE001 - the log must never break a compile
                    line = "numba: compiling (first use)"
                print(line, file=sys.stderr, flush=True)
            _LOG_STATE["depth"] += 1

        def on_end(self, ev):
            _LOG_STATE["depth"] -= 1

    event.register("numba:compile", _Log())


# ----------------------------------------------------------------------------- field checks
#: How a vector field for the compiled engine must look, for the error messages.
FIELD_RULE = ("The Numba engine calls `f(t, y, *args)` with t a float, y the state (a 1-D "
              "float64 array) and the entries of `args`, and needs back a 1-D float64 array "
              "of y's length: e.g. `@numba.njit\ndef f(t, y, mu): return np.array([y[1], "
              "mu * (1 - y[0]**2) * y[1] - y[0]])` with `args=(mu,)`; or, faster (no "
              "allocation per call), the in-place form `def f(t, y, out, mu): out[0] = y[1]; "
              "out[1] = ...` that writes dy/dt into `out` and returns nothing.")
_CHECKED = {}  # (f, args_key) -> True once f is known to be callable by the dispatcher path


def _first_line(exc):
    """The first meaningful line of a Numba error, without its terminal colour codes."""
    import re
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()
             and not ln.strip().startswith("Failed in nopython mode")]
    if not lines:
        return type(exc).__name__
    return lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")


def check_field(f, args, t0, y0, inplace=False):
    """Raise a clear :class:`~nodeform.ode.errors.VectorFieldError` unless the compiled
    loop can call ``f(t, y, *args)`` and gets a 1-D float64 array back.

    Called only when ``f`` has no function-pointer handle (:func:`field_handle` returned
    None), so a good field pays nothing. The reference engine's rules apply: a field that
    returns int64 or float32 is refused as there (the loop would otherwise cast silently).
    """
    try:
        key = (f, args_key(args), inplace)
        if _CHECKED.get(key):  # before the imports: a repeated solve pays one lookup
            return
    except TypeError:
        key = None
    import inspect

    from numba.core.errors import TypingError

    from nodeform.ode.errors import VectorFieldError
    from nodeform.ode.loops import check_vector_field_output

    try:
        arg_types = tuple(numba.typeof(a) for a in args)
    except Exception as exc:  # noqa: BLE001 - any object Numba cannot type
        bad = [i for i, a in enumerate(args) if not _typeable(a)]
        which = f"`args[{bad[0]}]` ({type(args[bad[0]]).__name__})" if bad else "an entry of `args`"
        raise VectorFieldError(
            f"{which} has no Numba type ({_first_line(exc)}), so it cannot be passed to a "
            "compiled field. Pass NumPy arrays, numbers, tuples of them, or strings. "
            + FIELD_RULE) from None
    try:
        params = list(inspect.signature(f.py_func).parameters.values())
    except (TypeError, ValueError):
        params = None
    if not inplace and params is not None and not any(p.kind == p.VAR_POSITIONAL
                                                      for p in params):
        want = 2 + len(args)
        if len(params) != want:
            names = ", ".join(p.name for p in params)
            raise VectorFieldError(
                f"`f` takes {len(params)} parameter(s) ({names}) but is called as f(t, y, *args) "
                f"with {len(args)} extra argument(s) in `args` = {_short(args)}, i.e. {want} in "
                f"all (or {want + 1} for the in-place form f(t, y, out, *args)). "
                + ("Pass the extra parameters as `args=(...)`. " if len(params) > want + 1
                   else "") + FIELD_RULE)
    lead = (types.float64, STATE, STATE) if inplace else (types.float64, STATE)
    form = "f(t: float64, y: float64[::1], out: float64[::1]" if inplace else \
        "f(t: float64, y: float64[::1]"
    try:
        f.compile(lead + arg_types)
        ret = f.overloads[lead + arg_types].signature.return_type
    except TypingError as exc:
        raise VectorFieldError(
            f"`f` does not compile for {form}{_types_tail(arg_types)})"
            + (" (taken as the in-place form: it has 3 + len(args) parameters)" if inplace
               else "") + f": {_first_line(exc)}. " + FIELD_RULE) from None
    if inplace:
        if ret != types.none:
            raise VectorFieldError(
                f"`f` has 3 + len(args) parameters, so it is taken as an in-place field "
                f"f(t, y, out, *args) that writes dy/dt into `out` and returns nothing, but it "
                f"returns {ret}. Either write into `out` and drop the return, or use the "
                "form f(t, y, *args) -> dy with one parameter fewer (if the last parameter is "
                "an extra argument, pass it as `args=(...)`). " + FIELD_RULE,
                t=float(t0), step=0)
        if key is not None:
            _CHECKED[key] = True
        return
    ok = isinstance(ret, types.Array) and ret.ndim == 1 and ret.dtype == types.float64
    if not ok:
        # run it once in the interpreter's terms to get the reference engine's message
        try:
            out = f(float(t0), y0, *args)
        except Exception:  # noqa: BLE001 - describe the type instead
            out = None
        if out is not None:
            check_vector_field_output(out, y0, float(t0))
        raise VectorFieldError(f"`f` returns {ret}, not a 1-D float64 array. " + FIELD_RULE,
                               t=float(t0), step=0)
    if key is not None:
        _CHECKED[key] = True


def _typeable(a):
    try:
        numba.typeof(a)
    except Exception:  # noqa: BLE001
        return False
    return True


def _types_tail(arg_types):
    return "".join(f", {t}" for t in arg_types) + ("" if not arg_types else "")


def _short(args):
    text = repr(args)
    return text if len(text) < 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- calling f
def field_call(f, t, y, args, K, i):
    """Inside compiled code: f's value at ``(t, y)`` as an array; in-place fields write ``K[i]``.

    ``f`` is what :func:`field_function` returned: a returning field (a FunctionType or a
    dispatcher), called as ``f(t, y, *args)``; or an in-place one (a FunctionType returning
    none, or a dispatcher whose function has ``3 + len(args)`` parameters, see
    :func:`is_inplace`), called as ``f(t, y, K[i], *args)`` and then ``K[i]`` is returned.
    """
    if is_inplace(f, args):
        out = K[i]
        f(t, y, out, *args)
        return out
    return f(t, y, *args)


@overload(field_call)
def _field_call_impl(f, t, y, args, K, i):
    if is_inplace_type(f, args):
        def impl(f, t, y, args, K, i):
            out = K[i]
            f(t, y, out, *args)
            return out
        return impl
    return lambda f, t, y, args, K, i: f(t, y, *args)


def is_inplace_type(f, args):
    """At compile time: True when the Numba type ``f`` (with ``args``' tuple type) is an
    in-place field, as :func:`field_call` tells them apart."""
    if isinstance(f, types.FunctionType):
        return f.signature.return_type == types.none
    return isinstance(f, types.Dispatcher) and is_inplace(f.dispatcher, args.types)
