"""Primitives: a forward function on raw arrays and one VJP per argument.

A primitive is the smallest unit the autodiff knows how to differentiate. It is
registered once with :func:`defprim`, its forward code beside its vector–Jacobian
products (VJPs), in the table of :mod:`nodeform.autodiff.vjps`::

    defprim("mul", lambda x, y: x * y,
            lambda g, ans, x, y: unbroadcast(g * y, shape(x)),
            lambda g, ans, x, y: unbroadcast(g * x, shape(y)))

Rules of the table (the contract every primitive follows):

1. ``forward(*raw_args, **kw)`` sees plain ``xp`` arrays (or Python numbers) and
   returns one array. It never sees a Tensor.
2. There is one VJP maker per positional argument, ``None`` for an argument that
   is never differentiated (an index, a condition). A VJP maker is called as
   ``vjp(g, ans, *args, **kw)`` with the incoming cotangent ``g`` and the output
   ``ans`` as Tensors and the arguments as they were given (Tensors or constants),
   and returns the cotangent for its argument, with that argument's shape.
3. VJPs are written with Tensor operations, never on raw arrays of ``g``; so
   ``backward(create_graph=True)`` records them and gradients of gradients work.
   ``g``, ``ans`` and the Tensor arguments are Tensors: use ``nodeform`` functions
   and operators on them (``nf.exp(x)``, ``g * y``), not NumPy's (``np.exp(x)``
   raises a TypeError saying so).
4. A primitive with a variable number of arguments (``concatenate``, ``stack``,
   ``einsum``) gives ``vjp_i=callable(i, g, ans, *args, **kw)`` instead.

The registry ``PRIMITIVES`` maps names to primitives; the test suite checks that
each has an entry in :data:`nodeform.testing.CASES`.
"""
from __future__ import annotations

import contextlib

PRIMITIVES = {}


class Primitive:
    """One differentiable operation: ``name``, ``forward`` and its VJPs.

    Calling a primitive applies it to Tensors (or constants) and records it on the
    tape when an input requires a gradient.
    """

    __slots__ = ("name", "forward", "vjps", "vjp_i")

    def __init__(self, name, forward, vjps=(), vjp_i=None):
        self.name = name
        self.forward = forward
        self.vjps = tuple(vjps)
        self.vjp_i = vjp_i

    def vjp(self, i, g, ans, args, kw):
        """The cotangent of argument ``i`` given the output cotangent ``g``."""
        if self.vjp_i is not None:
            return self.vjp_i(i, g, ans, *args, **kw)
        maker = self.vjps[i] if i < len(self.vjps) else None
        if maker is None:
            raise TypeError(f"`{self.name}` is not differentiable in its argument {i}; "
                            "pass a constant (an array, not a Tensor that requires grad) there.")
        return maker(g, ans, *args, **kw)

    def __call__(self, *args, **kw):
        from nodeform.autodiff.tensor import apply
        return apply(self, args, kw)

    def __repr__(self):
        return f"<primitive {self.name}>"


def defprim(name, forward, *vjps, vjp_i=None):
    """Register a primitive called ``name`` and return it.

    Parameters
    ----------
    name : str
        Unique name; it appears in error messages and in the test catalog.
    forward : callable
        ``forward(*raw_args, **kw) -> array`` on plain ``xp`` arrays.
    *vjps : callable or None
        One VJP maker per positional argument: ``vjp(g, ans, *args, **kw)``. It
        receives Tensors (``g``, ``ans``, the Tensor arguments) and must compute with
        Tensor operations (``nodeform.exp``, ``*``, ...), never NumPy functions.
    vjp_i : callable, optional
        For variadic primitives: ``vjp_i(i, g, ans, *args, **kw)``.

    Notes
    -----
    Registering a name again *from the same place* (the forward function has the same
    module and qualified name as the registered one) replaces the old primitive: that is
    what re-running a notebook cell does. A name registered from elsewhere (e.g. one of
    the built-in primitives) is refused, so a clash never replaces a derivative silently.
    """
    old = PRIMITIVES.get(name)
    if old is not None and _origin(old.forward) != _origin(forward):
        raise ValueError(f"a primitive called `{name}` is already registered (from "
                         f"{'.'.join(_origin(old.forward))}); pick another name. Registering "
                         "the same name again from the same cell or module replaces it.")
    prim = Primitive(name, forward, vjps, vjp_i)
    PRIMITIVES[name] = prim
    return prim


@contextlib.contextmanager
def counting_calls():
    """Count the forward calls of every registered primitive made inside the ``with`` block.

    Yields a one-element list whose entry is the running count (reset it to 0 to start
    over inside the block). On a GPU each call is at least one kernel launch, so the
    count is a lower bound on launches (taught in chapters/ch08_gpu.py).

    Examples
    --------
    >>> with counting_calls() as calls:
    ...     loss = model(x).sum()
    >>> calls[0]  # doctest: +SKIP
    """
    calls = [0]
    saved = {name: p.forward for name, p in PRIMITIVES.items()}

    def wrap(fn):
        def counted(*args, **kw):
            calls[0] += 1
            return fn(*args, **kw)
        return counted

    for name, p in PRIMITIVES.items():
        p.forward = wrap(saved[name])
    try:
        yield calls
    finally:
        for name, p in PRIMITIVES.items():
            if name in saved:
                p.forward = saved[name]


def _origin(fn):
    """``(module, qualified name)`` of a function: where a primitive was defined."""
    return (str(getattr(fn, "__module__", None)), str(getattr(fn, "__qualname__", type(fn).__name__)))
