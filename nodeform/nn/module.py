"""``Module``: a container that finds its parameters by itself.

A module is a Python object whose attributes are parameters (:class:`Parameter`,
or any leaf Tensor with ``requires_grad=True``), buffers (arrays registered with
:meth:`Module.register_buffer`) and other modules. Nothing has to be declared:
:meth:`Module.named_parameters` walks the attributes in the order they were set
(a module's own parameters first, then its submodules') and names each parameter by its path, ``"block.0.weight"``, as PyTorch does.

Also here: :class:`Sequential`, and the helpers that turn a list of parameters
into one flat vector ``theta`` and back (the adjoint method works on ``theta``).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict

import numpy as np

from nodeform.autodiff.tensor import Tensor
from nodeform.backend import get_backend, get_xp, to_numpy


class Parameter(Tensor):
    """A leaf Tensor that always requires a gradient: a trainable weight of a :class:`Module`."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


def _is_param(v):
    return isinstance(v, Tensor) and v.requires_grad and v.is_leaf


class Module:
    """Base class of every layer and model.

    Rules for subclasses:

    1. Call ``super().__init__()`` first in ``__init__``.
    2. Store parameters as attributes (``self.weight = Parameter(...)``) and
       submodules as attributes (``self.conv = Conv2d(...)``); they are found in
       the order they were assigned.
    3. Put the computation in ``forward``; call the module, ``module(x)``.
    4. Read ``self.training`` where train and eval differ (dropout, noise).
    """

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_buffers", [])

    def forward(self, *args, **kw):
        raise NotImplementedError(f"{type(self).__name__} must define `forward`.")

    def __call__(self, *args, **kw):
        return self.forward(*args, **kw)

    # ---------------------------------------------------------------- walking the tree
    def _children(self):
        for name, v in vars(self).items():
            if isinstance(v, Module):
                yield name, v

    def named_modules(self, prefix=""):
        """``(name, module)`` for this module and every submodule, depth first."""
        yield prefix, self
        for name, m in self._children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """Every module in the tree, this one first."""
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix=""):
        """``(name, parameter)`` pairs: a module's own (in assignment order), then each submodule's.

        The order is PyTorch's, so flat vectors and optimizer slots line up with it. A
        parameter shared by two modules appears once, under its first name.
        """
        seen = set()
        for mname, m in self.named_modules(prefix):
            for name, v in vars(m).items():
                if _is_param(v) and id(v) not in seen:
                    seen.add(id(v))
                    yield (f"{mname}.{name}" if mname else name), v

    def parameters(self):
        """The list of trainable tensors (what an optimizer takes)."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        """Total number of trainable scalars."""
        return int(sum(p.size for p in self.parameters()))

    def register_buffer(self, name, array):
        """Store a non-trainable array that belongs in ``state_dict`` (running statistics)."""
        self._buffers.append(name)
        object.__setattr__(self, name, array)

    def named_buffers(self):
        for mname, m in self.named_modules():
            for name in m._buffers:
                yield (f"{mname}.{name}" if mname else name), getattr(m, name)

    # ---------------------------------------------------------------- modes and gradients
    def train(self, mode=True):
        """Set training mode here and in every submodule; returns ``self``."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (``train(False)``)."""
        return self.train(False)

    def zero_grad(self):
        """Forget the gradients accumulated by ``backward()``."""
        for p in self.parameters():
            p.grad = None

    def to(self, dtype=None, backend=None):
        """Convert every parameter and buffer in place to ``dtype`` and/or ``backend``; returns ``self``."""
        xp = get_backend(backend) if backend is not None else None
        for p in self.parameters():
            data = to_numpy(p.data) if xp is np else p.data
            p.data = (xp or get_xp(data)).asarray(data, dtype=dtype)
            p.grad = None
        for mname, m in self.named_modules():
            for name in m._buffers:
                b = getattr(m, name)
                b = to_numpy(b) if xp is np else b
                object.__setattr__(m, name, (xp or get_xp(b)).asarray(b, dtype=dtype))
        return self

    # ---------------------------------------------------------------- saving and loading
    def state_dict(self):
        """An ordered ``{name: NumPy array copy}`` of every parameter and buffer."""
        out = OrderedDict((n, to_numpy(p.data).copy()) for n, p in self.named_parameters())
        out.update((n, to_numpy(b).copy()) for n, b in self.named_buffers())
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into the parameters and buffers, in place.

        Parameters
        ----------
        state : mapping of str to array
            As returned by :meth:`state_dict`.
        strict : bool
            When True, every key must match: a missing, extra or misshapen entry
            raises ``KeyError``/``ValueError`` naming all of them. When False, only
            the keys present in both are loaded (shapes must still match).
        """
        own = OrderedDict(self.named_parameters())
        bufs = OrderedDict(self.named_buffers())
        names = list(own) + list(bufs)
        missing = [k for k in names if k not in state]
        extra = [k for k in state if k not in own and k not in bufs]
        bad = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model "
               f"{tuple((own[k] if k in own else bufs[k]).shape)}"
               for k in names if k in state
               and tuple(np.shape(state[k])) != tuple((own[k] if k in own else bufs[k]).shape)]
        if bad:
            raise ValueError(f"`load_state_dict` into {type(self).__name__}: misshapen entries "
                             f"({'; '.join(bad)}). The checkpoint was made by a different "
                             "architecture; build the model with the same sizes.")
        if strict and (missing or extra):
            raise KeyError(f"`load_state_dict` into {type(self).__name__} (strict=True): "
                           f"missing keys {missing}, unexpected keys {extra}. Check that the "
                           "model matches the checkpoint, or pass `strict=False` to load the "
                           "keys they share.")
        for k, p in own.items():
            if k in state:
                p.data = get_xp(p.data).asarray(np.asarray(state[k]), dtype=p.dtype).copy()
        for mname, m in self.named_modules():
            for name in m._buffers:
                k = f"{mname}.{name}" if mname else name
                if k in state:
                    old = getattr(m, name)
                    object.__setattr__(m, name, get_xp(old).asarray(np.asarray(state[k]),
                                                                     dtype=old.dtype).copy())
        return self

    # ---------------------------------------------------------------- printing
    def extra_repr(self):
        """The text inside the parentheses of this module's repr (its sizes)."""
        return ""

    def __repr__(self):
        kids = list(self._children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        lines = [head]
        for name, m in kids:
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after another; they are named ``"0"``, ``"1"``, ...

    Examples
    --------
    >>> from nodeform import nn
    >>> net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    >>> [n for n, _ in net.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"`Sequential` argument {i} is a {type(layer).__name__}, not a "
                                "Module; wrap functions in a Module (e.g. `nn.Lambda(f)`).")
            setattr(self, str(i), layer)

    def __len__(self):
        return sum(1 for _ in self._children())

    def __getitem__(self, i):
        layers = [m for _, m in self._children()]
        return layers[i]

    def __iter__(self):
        return iter([m for _, m in self._children()])

    def forward(self, x, *args, **kw):
        for m in self:
            x = m(x)
        return x


# ======================================================================== flat parameter vectors
def parameters_to_vector(params):
    """Concatenate the values of ``params`` into one flat array ``theta``.

    Parameters
    ----------
    params : list of Tensor, total size P

    Returns
    -------
    theta : ndarray, shape (P,)
        A copy, in the order of ``params``, dtype of the first parameter.
    """
    params = list(params)
    if not params:
        raise ValueError("`params` is empty: there is nothing to flatten.")
    xp = get_xp(params[0].data)
    return xp.concatenate([p.data.reshape(-1) for p in params]).astype(params[0].dtype, copy=False)


def vector_to_parameters(theta, params):
    """Write the flat ``theta`` (shape (P,)) back into ``params`` in place (the inverse of the above)."""
    params = list(params)
    theta = theta.data if isinstance(theta, Tensor) else theta
    total = sum(p.size for p in params)
    if theta.ndim != 1 or theta.shape[0] != total:
        raise ValueError(f"`theta` has shape {theta.shape} but the parameters hold {total} values; "
                         f"pass a flat vector of shape ({total},).")
    k = 0
    for p in params:
        p.data = theta[k:k + p.size].reshape(p.shape).astype(p.dtype, copy=True)
        k += p.size


def unflatten(theta, like):
    """Differentiable views of a flat Tensor ``theta`` shaped like the tensors in ``like``.

    Parameters
    ----------
    theta : Tensor, shape (P,)
    like : list of Tensor, total size P

    Returns
    -------
    list of Tensor
        ``theta[k:k+n].reshape(shape)`` for each entry; gradients flow back to ``theta``.
    """
    total = sum(int(np.prod(p.shape)) for p in like)
    if tuple(theta.shape) != (total,):
        raise ValueError(f"`theta` has shape {tuple(theta.shape)} but `like` holds {total} values; "
                         f"pass a flat vector of shape ({total},).")
    out, k = [], 0
    for p in like:
        n = int(np.prod(p.shape))
        out.append(theta[k:k + n].reshape(tuple(p.shape)))
        k += n
    return out


@contextlib.contextmanager
def using_parameters(module, tensors):
    """Temporarily replace ``module``'s parameters with ``tensors`` (same order and shapes).

    Inside the block the module computes with the given Tensors, so gradients flow
    to them (for example to a flat ``theta`` through :func:`unflatten`). The
    original parameters are put back on exit.
    """
    named = list(module.named_parameters())
    tensors = list(tensors)
    if len(tensors) != len(named):
        raise ValueError(f"`tensors` has {len(tensors)} entries but {type(module).__name__} has "
                         f"{len(named)} parameters.")
    for (n, p), t in zip(named, tensors):
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"`tensors` entry for `{n}` has shape {tuple(t.shape)}, expected {p.shape}.")
    owners = []
    for (name, p), t in zip(named, tensors):
        *path, attr = name.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        owners.append((owner, attr, p))
        object.__setattr__(owner, attr, t)
    try:
        yield module
    finally:
        for owner, attr, p in owners:
            object.__setattr__(owner, attr, p)
