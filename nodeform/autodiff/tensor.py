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
"""
from __future__ import annotations

import contextlib

import numpy as np

from nodeform.backend import DEFAULT_DTYPE, get_xp

_GRAD_ENABLED = [True]


class _Freed:
    """Marks a node whose graph was freed by an earlier backward pass."""

    def __repr__(self):
        return "<freed>"


_FREED = _Freed()


@contextlib.contextmanager
def no_grad():
    """Context manager: operations inside it record no graph (inference, optimizer steps)."""
    old = _GRAD_ENABLED[0]
    _GRAD_ENABLED[0] = False
    try:
        yield
    finally:
        _GRAD_ENABLED[0] = old


@contextlib.contextmanager
def enable_grad():
    """Context manager: record the graph again inside a :func:`no_grad` block."""
    old = _GRAD_ENABLED[0]
    _GRAD_ENABLED[0] = True
    try:
        yield
    finally:
        _GRAD_ENABLED[0] = old


def is_grad_enabled():
    """True unless inside :func:`no_grad`."""
    return _GRAD_ENABLED[0]


class Node:
    """How a Tensor was made: the primitive, its arguments and keyword arguments."""

    __slots__ = ("prim", "args", "kw")

    def __init__(self, prim, args, kw):
        self.prim, self.args, self.kw = prim, args, kw


def _as_array(data, dtype=None):
    """``data`` as an xp array; Python floats and lists become float64."""
    if isinstance(data, Tensor):
        data = data.data
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
        The values (NumPy or CuPy).
    grad : Tensor or None
        The accumulated gradient of a leaf after :meth:`backward`.
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "_retain", "__weakref__")
    _is_tensor = True
    # Let NumPy defer to us: ``ndarray * Tensor`` calls ``Tensor.__rmul__``.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._node = None
        self._retain = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------ basic facts
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def is_leaf(self):
        """True for tensors made by the user rather than by an operation."""
        return self._node is None

    @property
    def xp(self):
        """The array module of the data (numpy or cupy)."""
        return get_xp(self.data)

    def requires_grad_(self, flag=True):
        """Set ``requires_grad`` in place; only floating-point leaves may require it."""
        if flag and self.data.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype "
                            f"{self.data.dtype}; convert with `Tensor(x, dtype=np.float64)`.")
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
        return Tensor(self.data)

    def numpy(self):
        """The values as a NumPy array (copied off the GPU if needed)."""
        from nodeform.backend import to_numpy
        return to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"`item()` needs a tensor with one element, got shape {self.shape}.")
        return self.data.reshape(()).item()

    def zero_grad(self):
        """Forget the accumulated gradient."""
        self.grad = None

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, threshold=20, separator=", ")
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError("the truth value of a tensor with more than one element is "
                             "ambiguous; use `.data.any()` or `.data.all()`.")
        return bool(self.data)

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


def _toposort(root):
    """Tensors reachable from ``root`` that require grad, inputs before outputs."""
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
        if node is None or node is _FREED:
            continue
        for a in node.args:
            if isinstance(a, Tensor) and a.requires_grad and id(a) not in seen:
                stack.append((a, False))
    return order


def backprop(out, seed=None, inputs=None, create_graph=False, retain_graph=None,
             accumulate=False):
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
    order = _toposort(out)
    grads = {id(out): seed}
    ctx = contextlib.nullcontext() if create_graph else no_grad()
    with ctx:
        for t in reversed(order):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if wanted is not None and id(t) in wanted:
                wanted[id(t)] = g
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
            for i, a in enumerate(args):
                if not (isinstance(a, Tensor) and a.requires_grad):
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


def apply(prim, args, kw):
    """Run ``prim`` on ``args`` and record it when an input requires a gradient."""
    raws = [a.data if isinstance(a, Tensor) else a for a in args]
    try:
        out = prim.forward(*raws, **kw)
    except (ValueError, TypeError, IndexError) as exc:
        shapes = ", ".join(str(getattr(r, "shape", type(r).__name__)) for r in raws)
        message = f"`{prim.name}` failed on inputs of shapes ({shapes}): {exc}"
        try:
            wrapped = type(exc)(message)      # keep the kind of error the user can catch
        except Exception:                     # an exception class with another signature
            wrapped = ValueError(message)
        raise wrapped from exc
    if type(out) is not np.ndarray and not hasattr(out, "__cuda_array_interface__"):
        out = np.asarray(out)
    t = Tensor.__new__(Tensor)
    t.data = out
    t.grad = None
    t._retain = False
    if _GRAD_ENABLED[0] and any(isinstance(a, Tensor) and a.requires_grad for a in args):
        t.requires_grad = True
        t._node = Node(prim, args, kw)
    else:
        t.requires_grad = False
        t._node = None
    return t
