"""The functional API: gradients of Python functions of arrays.

``grad(fun)(x)`` is ``d fun / d x`` for a scalar ``fun``; ``vjp(fun, x)`` gives the
output and a function mapping a cotangent of the output to cotangents of the
inputs. Arrays go in and arrays come out; Tensors live only inside ``fun``.
"""
from __future__ import annotations

from nodeform.autodiff.tensor import Tensor, backprop, enable_grad
from nodeform.backend import get_xp


def _leaves(args, argnums):
    xs = list(args)
    for i in argnums:
        if not 0 <= i < len(xs):
            raise ValueError(f"`argnums` entry {i} is out of range for {len(xs)} arguments.")
        t = Tensor(xs[i].data if isinstance(xs[i], Tensor) else xs[i])
        t.requires_grad_(True)
        xs[i] = t
    return xs


def _norm_argnums(argnums):
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def value_and_grad(fun, argnums=0):
    """A function returning ``(fun(*args), gradient)``.

    Parameters
    ----------
    fun : callable
        Maps Tensors to a Tensor with one element.
    argnums : int or tuple of int
        Which arguments to differentiate; a tuple gives a tuple of gradients.
    """
    nums = _norm_argnums(argnums)

    def wrapped(*args):
        with enable_grad():
            xs = _leaves(args, nums)
            out = fun(*xs)
            if not isinstance(out, Tensor) or out.size != 1:
                raise ValueError("`grad` needs `fun` to return a Tensor with one element, got "
                                 f"{type(out).__name__} of shape {getattr(out, 'shape', None)}; "
                                 "use `vjp` for non-scalar outputs.")
            ins = [xs[i] for i in nums]
            gs = backprop(out, None, ins) if out.requires_grad else [None] * len(ins)
        gs = [g.data if g is not None else get_xp(x.data).zeros_like(x.data) for g, x in zip(gs, ins)]
        value = out.data.reshape(()).item() if out.data.ndim == 0 or out.size == 1 else out.data
        return value, (gs[0] if isinstance(argnums, int) else tuple(gs))
    return wrapped


def grad(fun, argnums=0):
    """A function returning the gradient of the scalar ``fun`` with respect to ``argnums``.

    Examples
    --------
    >>> import nodeform as nf
    >>> nf.grad(lambda x: (x * x).sum())(3.0)
    array(6.)
    """
    vg = value_and_grad(fun, argnums)
    return lambda *args: vg(*args)[1]


def vjp(fun, *primals):
    """Evaluate ``fun(*primals)`` and return ``(out, vjp_fn)``.

    ``vjp_fn(g)`` maps a cotangent ``g`` (shape of ``out``) to a tuple of cotangents,
    one per primal. It may be called many times.
    """
    with enable_grad():
        xs = _leaves(primals, range(len(primals)))
        out = fun(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"`vjp` needs `fun` to return a Tensor, got {type(out).__name__}.")

    def vjp_fn(g):
        if not out.requires_grad:
            return tuple(get_xp(x.data).zeros_like(x.data) for x in xs)
        gs = backprop(out, g, xs, retain_graph=True)
        return tuple(gg.data if gg is not None else get_xp(x.data).zeros_like(x.data)
                     for gg, x in zip(gs, xs))
    return out.data, vjp_fn
