"""The Tensor: an ``xp`` array that remembers the primitive that made it.

Reverse mode in three pieces, as in micrograd, but over arrays:

* :func:`apply` runs a primitive's forward code on raw arrays and, when an input
  requires a gradient, stores a :class:`Node` ``(primitive, args, kw)`` on the
  output. That is the whole tape.
* :func:`backprop` sorts the graph topologically (iteratively, so graphs with
  hundreds of thousands of nodes, like a solver unrolled over many steps, do not
  hit Python's recursion limit) and walks it from the output back to the inputs,
  calling each primitive's VJP and summing cotangents that meet.
* With ``create_graph=True`` the VJPs, which are written with Tensor operations,
  are themselves recorded, so the gradient can be differentiated again.

After a backward pass without ``retain_graph`` the nodes are freed, so memory held
by intermediate values goes; a second pass through them raises a clear error.

Two guards keep a gradient from being silently wrong:

* Assigning ``x.data`` (``x.data = ...``, ``x.data -= ...``, an optimizer step) stamps
  ``x`` with a new version; each recorded node remembers when it was recorded, and
  :func:`backprop` refuses a node whose inputs or output were reassigned since (the
  values the VJP would use are not those of the forward pass). Writing *into* the
  array (``x.data[0] = 1``) bypasses the Tensor and is not detected: assign instead.
* NumPy functions on Tensors (``np.tanh(x)``) raise a TypeError pointing at the
  ``nodeform`` function (``nf.tanh(x)``): NumPy cannot record gradients.

Whether operations are recorded (:func:`no_grad`) is per thread.
"""
from __future__ import annotations

import contextlib
import itertools
import threading

import numpy as np

from nodeform.backend import DEFAULT_DTYPE, get_xp


class _GradState(threading.local):
    """Per-thread switches: recording on/off, and the active :class:`Watch` (or None)."""

    def __init__(self):
        self.enabled = True
        self.watch = None


_STATE = _GradState()

#: One clock for ``.data`` assignments and recorded nodes: a node recorded at tick k
#: saw every input as it was unless one was reassigned at a later tick.
_tick = itertools.count(1).__next__


class _Freed:
    """Marks a node whose graph was freed by an earlier backward pass."""

    def __repr__(self):
        return "<freed>"


_FREED = _Freed()


@contextlib.contextmanager
def no_grad():
    """Context manager: operations inside it record no graph (inference, optimizer steps).

    The switch is per thread: another thread inside ``no_grad()`` does not stop this
    one from recording.
    """
    st = _STATE
    old = st.enabled
    st.enabled = False
    try:
        yield
    finally:
        st.enabled = old


@contextlib.contextmanager
def enable_grad():
    """Context manager: record the graph again inside a :func:`no_grad` block (this thread)."""
    st = _STATE
    old = st.enabled
    st.enabled = True
    try:
        yield
    finally:
        st.enabled = old


def is_grad_enabled():
    """True unless inside :func:`no_grad` (in this thread)."""
    return _STATE.enabled


class Watch:
    """The Tensors requiring grad that operations read but did not make, while active.

    Inside ``with watching() as w:`` every primitive applied (recording or not) shows
    its Tensor arguments to ``w``; ``w.read`` then holds, in first-use order, each
    Tensor with ``requires_grad=True`` that came from outside the block: the
    parameters a function really used. The differentiable ``odeint`` uses it to find
    the parameters of a vector field at every evaluation.
    """

    __slots__ = ("read", "made")

    def __init__(self):
        self.read = {}   # id -> Tensor read from outside (kept alive while watched)
        self.made = {}   # id -> Tensor made inside (kept alive so ids are not reused)

    def see(self, args, out):
        made, read = self.made, self.read
        for a in args:
            if isinstance(a, Tensor) and a.requires_grad:
                k = id(a)
                if k not in made and k not in read:
                    read[k] = a
        if out.requires_grad:
            made[id(out)] = out

    def outside(self, known_ids):
        """The Tensors read from outside whose ids are not in ``known_ids``, in order."""
        return [a for k, a in self.read.items() if k not in known_ids]


@contextlib.contextmanager
def watching():
    """Context manager yielding a :class:`Watch` of the operations run inside it (this thread).

    Watches nest: what an inner one sees from outside it, the outer one sees too.
    """
    st = _STATE
    outer = st.watch
    w = Watch()
    st.watch = w
    try:
        yield w
    finally:
        st.watch = outer
        if outer is not None:
            for k, a in w.read.items():
                if k not in outer.made:
                    outer.read.setdefault(k, a)


class Node:
    """How a Tensor was made: the primitive, its arguments and keyword arguments.

    ``tick`` is when it was recorded (see ``_tick``): an argument or output whose
    ``.data`` was assigned later makes the node unusable for backward.
    """

    __slots__ = ("prim", "args", "kw", "tick")

    def __init__(self, prim, args, kw):
        self.prim, self.args, self.kw = prim, args, kw
        self.tick = _tick()


def _as_array(data, dtype=None):
    """``data`` as an xp array; Python floats and lists become float64."""
    if isinstance(data, Tensor):
        data = data._data
    if type(data) is np.ndarray:
        return data if dtype is None else data.astype(dtype, copy=False)
    if hasattr(data, "__cuda_array_interface__"):
        return data if dtype is None else data.astype(dtype, copy=False)
    arr = np.asarray(data, dtype=dtype)
    if dtype is None and arr.dtype.kind == "f" and arr.dtype != DEFAULT_DTYPE \
            and not isinstance(data, np.generic):
        arr = arr.astype(DEFAULT_DTYPE)
    return arr


class Tensor:
    """An array with a gradient.

    Parameters
    ----------
    data : array_like or Tensor
        NumPy or CuPy array, or anything ``np.asarray`` takes (floats become float64).
    requires_grad : bool
        Whether :meth:`backward` should compute ``.grad`` for this tensor. Only
        floating-point tensors can require a gradient.
    dtype : dtype, optional

    Attributes
    ----------
    data : ndarray
        The values (NumPy or CuPy). Assigning it (``x.data = ...``, ``x.data -= ...``)
        after ``x`` was used in a recorded computation makes ``backward`` through that
        computation raise, since the gradient would use the new values. Writing into
        the array in place (``x.data[...] = ...``) is not detected: do not.
    grad : Tensor or None
        The accumulated gradient of a leaf after :meth:`backward`.
    """

    __slots__ = ("_data", "_version", "grad", "requires_grad", "_node", "_retain", "__weakref__")
    _is_tensor = True
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, dtype=None):
        self._data = _as_array(data, dtype)
        self._version = 0
        self.grad = None
        self._node = None
        self._retain = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------ the values
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data = value
        self._version = _tick()   # nodes recorded before now must not use the new values

    # ------------------------------------------------------------ NumPy functions
    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        # ``ndarray <op> Tensor`` arrives here as a ufunc: hand it to the Tensor's reflected
        # operator, as Python would; any other NumPy ufunc on a Tensor gets the advice
        name = _REFLECTED.get(ufunc.__name__)
        if (method == "__call__" and not kw and name is not None and len(inputs) == 2
                and inputs[1] is self and not isinstance(inputs[0], Tensor)):
            op = getattr(Tensor, name, None)
            if op is not None:
                return op(self, inputs[0])
        raise TypeError(_numpy_on_tensor(f"np.{ufunc.__name__}" + (
            "" if method == "__call__" else f".{method}"), ufunc.__name__))

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(_numpy_on_tensor(f"np.{func.__name__}", func.__name__))

    # ------------------------------------------------------------ basic facts
    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def size(self):
        return self._data.size

    @property
    def is_leaf(self):
        """True for tensors made by the user rather than by an operation."""
        return self._node is None

    @property
    def xp(self):
        """The array module of the data (numpy or cupy)."""
        return get_xp(self._data)

    def requires_grad_(self, flag=True):
        """Set ``requires_grad`` in place; only floating-point leaves may require it."""
        if flag and self._data.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype "
                            f"{self._data.dtype}; convert with `Tensor(x, dtype=np.float64)`.")
        if not flag and self._node is not None:
            raise ValueError("`requires_grad_(False)` is only for leaves; use `.detach()` "
                             "for a tensor made by an operation.")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after :meth:`backward`."""
        self._retain = True
        return self

    def detach(self):
        """A new leaf sharing the data, cut off from the graph."""
        return Tensor(self._data)

    def numpy(self):
        """The values as a NumPy array (copied off the GPU if needed)."""
        from nodeform.backend import to_numpy
        return to_numpy(self._data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self._data.size != 1:
            raise ValueError(f"`item()` needs a tensor with one element, got shape {self.shape}.")
        return self._data.reshape(()).item()

    def zero_grad(self):
        """Forget the accumulated gradient."""
        self.grad = None

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, threshold=20, separator=", ")
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    def __bool__(self):
        if self._data.size != 1:
            raise ValueError("the truth value of a tensor with more than one element is "
                             "ambiguous; use `.data.any()` or `.data.all()`.")
        return bool(self._data)

    def __float__(self):
        return float(self.item())

    __hash__ = object.__hash__

    # ------------------------------------------------------------ backward
    def backward(self, grad=None, create_graph=False, retain_graph=None):
        """Accumulate ``d(self)/d(leaf)`` into ``leaf.grad`` for every leaf that requires it.

        Parameters
        ----------
        grad : array_like or Tensor, optional
            The seed cotangent, same shape as ``self``. Needed unless ``self`` has
            one element.
        create_graph : bool
            Record the backward pass so the gradients can be differentiated again.
        retain_graph : bool, optional
            Keep the graph for another backward pass; defaults to ``create_graph``.
        """
        backprop(self, grad, None, create_graph, retain_graph, accumulate=True)


# ufunc name -> the Tensor method that ``ndarray <op> tensor`` means
_REFLECTED = {"add": "__radd__", "subtract": "__rsub__", "multiply": "__rmul__",
              "true_divide": "__rtruediv__", "divide": "__rtruediv__", "power": "__rpow__",
              "matmul": "__rmatmul__", "less": "__gt__", "less_equal": "__ge__",
              "greater": "__lt__", "greater_equal": "__le__"}


def _numpy_on_tensor(call, name):
    import nodeform
    alias = {"absolute": "abs", "true_divide": "div", "divide": "div", "multiply": "mul",
             "subtract": "sub", "negative": "neg", "amax": "max"}.get(name, name)
    use = (f"`nf.{alias}(x)`" if hasattr(nodeform, alias)
           else "the `nf.` functions (nf.tanh, nf.exp, nf.sum, nf.matmul, ...) and operators")
    return (f"`{call}` was called on a nodeform Tensor, but NumPy functions cannot record "
            f"gradients. Use {use} instead (`import nodeform as nf`); inside a vector field "
            "or a VJP (which receives Tensors) that keeps the gradient. For plain values "
            "without a gradient, take `x.numpy()` (or `x.data`) first.")


def _modified_message(prim, what, x):
    return (f"a Tensor of shape {tuple(x.shape)} ({x.dtype}), {what} of `{prim.name}`, had its "
            "`.data` assigned after the operation was recorded, so the backward pass would use "
            "the new values and give a wrong gradient. Run the forward pass again after "
            "changing `.data` (or change values only between backward passes, as optimizers "
            "do); to start from other values, make a new Tensor.")


def _check_seed(out, seed):
    if seed is None:
        if out.data.size != 1:
            raise ValueError(
                f"`backward()` on a tensor of shape {out.shape} needs a seed: the gradient "
                "of a non-scalar output is only defined against a cotangent. Pass "
                "`grad=` of the same shape (e.g. ones), or reduce the output first with `.sum()`.")
        xp = get_xp(out.data)
        return Tensor(xp.ones(out.shape, dtype=out.dtype))
    seed = seed if isinstance(seed, Tensor) else Tensor(_as_array(seed, out.dtype))
    if seed.shape != out.shape:
        raise ValueError(f"the seed `grad` has shape {seed.shape} but the output has shape "
                         f"{out.shape}; they must match.")
    return seed


def _toposort(root, stop=()):
    """Tensors reachable from ``root`` that require grad, inputs before outputs.

    Tensors whose id is in ``stop`` count as leaves: the walk does not go past them.
    """
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        node = t._node
        if node is None or node is _FREED or id(t) in stop:
            continue
        for a in node.args:
            if isinstance(a, Tensor) and a.requires_grad and id(a) not in seen:
                stack.append((a, False))
    return order


def backprop(out, seed=None, inputs=None, create_graph=False, retain_graph=None,
             accumulate=False, stop_at_inputs=False):
    """Reverse-mode pass from ``out``; the engine behind ``backward`` and ``gradients``.

    Parameters
    ----------
    out : Tensor
    seed : array_like or Tensor, optional
    inputs : sequence of Tensor, optional
        When given, return their cotangents (``None`` where none arrived).
    create_graph, retain_graph : bool
    accumulate : bool
        Add into ``.grad`` of leaves (``backward``) rather than only returning.
    stop_at_inputs : bool
        Treat ``inputs`` as leaves: their cotangents are partial derivatives (an input
        computed from another input does not pass its cotangent on to it).
    """
    if not isinstance(out, Tensor):
        raise TypeError(f"`backward` needs a Tensor, got {type(out).__name__}.")
    if not out.requires_grad:
        raise RuntimeError(
            "this tensor does not require grad, so there is nothing to differentiate: no input "
            "of the computation had `requires_grad=True` (or it ran inside `no_grad()`).")
    if out._node is _FREED:
        raise RuntimeError(_FREED_MESSAGE)
    if retain_graph is None:
        retain_graph = create_graph
    seed = _check_seed(out, seed)
    wanted = {id(t): None for t in inputs} if inputs is not None else None
    order = _toposort(out, wanted if stop_at_inputs else ())
    grads = {id(out): seed}
    ctx = contextlib.nullcontext() if create_graph else no_grad()
    with ctx:
        for t in reversed(order):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if wanted is not None and id(t) in wanted:
                wanted[id(t)] = g
                if stop_at_inputs:
                    continue
            node = t._node
            if node is None:
                if accumulate:
                    t.grad = g if t.grad is None else t.grad + g
                continue
            if node is _FREED:
                raise RuntimeError(_FREED_MESSAGE)
            if accumulate and t._retain:
                t.grad = g if t.grad is None else t.grad + g
            prim, args, kw = node.prim, node.args, node.kw
            if t._version > node.tick:
                raise RuntimeError(_modified_message(prim, "the output", t))
            for i, a in enumerate(args):
                if not isinstance(a, Tensor):
                    continue
                if a._version > node.tick:
                    raise RuntimeError(_modified_message(prim, f"argument {i}", a))
                if not a.requires_grad:
                    continue
                ga = prim.vjp(i, g, t, args, kw)
                if not isinstance(ga, Tensor):
                    ga = Tensor(ga)
                if ga.shape != a.shape:
                    raise RuntimeError(f"internal: VJP of `{prim.name}` for argument {i} has shape "
                                       f"{ga.shape}, expected {a.shape}.")
                prev = grads.get(id(a))
                grads[id(a)] = ga if prev is None else prev + ga
            if not retain_graph:
                t._node = _FREED
    if wanted is not None:
        return [wanted[id(t)] for t in inputs]
    return None


_FREED_MESSAGE = (
    "trying to backward through a graph a second time, but its intermediate values were "
    "freed by the first `backward()`. Pass `retain_graph=True` to the first call if you "
    "need two passes, or recompute the forward pass.")


def gradients(out, inputs, seed=None, create_graph=False, retain_graph=None):
    """Cotangents of ``inputs`` for ``out`` without touching any ``.grad``.

    Like ``torch.autograd.grad``. An input that ``out`` does not depend on gets zeros.

    Parameters
    ----------
    out : Tensor
    inputs : Tensor or sequence of Tensor
    seed : array_like, optional
        Cotangent of ``out``; required unless ``out`` has one element.
    create_graph : bool
        Record the pass so the result can be differentiated again.

    Returns
    -------
    list of Tensor (or one Tensor when ``inputs`` is a Tensor)
    """
    single = isinstance(inputs, Tensor)
    ins = [inputs] if single else list(inputs)
    for k, t in enumerate(ins):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise ValueError(f"`inputs[{k}]` must be a Tensor with requires_grad=True.")
    res = backprop(out, seed, ins, create_graph, retain_graph, accumulate=False)
    res = [r if r is not None else Tensor(get_xp(t.data).zeros_like(t.data)) for r, t in zip(res, ins)]
    return res[0] if single else res


#: Exceptions from a primitive's forward code that get the primitive's name and the
#: input shapes added to their message (these exact classes only: a subclass, e.g. a
#: solver error or the user's own, is re-raised as it is, with a note).
_WRAPPED = (ValueError, TypeError, IndexError)


def apply(prim, args, kw):
    """Run ``prim`` on ``args`` and record it when an input requires a gradient."""
    raws = [a._data if isinstance(a, Tensor) else a for a in args]
    try:
        out = prim.forward(*raws, **kw)
    except _WRAPPED as exc:
        shapes = ", ".join(str(getattr(r, "shape", type(r).__name__)) for r in raws)
        if type(exc) not in _WRAPPED:        # keep the user's class and attributes
            exc.add_note(f"(raised inside `{prim.name}` on inputs of shapes ({shapes}))")
            raise
        raise type(exc)(f"`{prim.name}` failed on inputs of shapes ({shapes}): {exc}") from exc
    if type(out) is not np.ndarray and not hasattr(out, "__cuda_array_interface__"):
        out = np.asarray(out)
    t = Tensor.__new__(Tensor)
    t._data = out
    t._version = 0
    t.grad = None
    t._retain = False
    st = _STATE
    if st.enabled and any(isinstance(a, Tensor) and a.requires_grad for a in args):
        t.requires_grad = True
        t._node = Node(prim, args, kw)
    else:
        t.requires_grad = False
        t._node = None
    if st.watch is not None:
        st.watch.see(args, t)
    return t
