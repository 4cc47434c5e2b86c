"""The Elman recurrent cell, the recognition network of the paper's latent ODE (Sec. 5).

One step maps an input ``x`` and the previous hidden state ``h`` to::

    h' = tanh(x W_ih^T + h W_hh^T + b)

Run it over a sequence (the latent ODE runs it backwards in time) by calling it
in a loop; the autodiff then backpropagates through time.
"""
from __future__ import annotations

import numpy as np

from nodeform.autodiff import functions as F
from nodeform.autodiff.tensor import Tensor
from nodeform.backend import DEFAULT_DTYPE, get_xp
from nodeform.nn import init
from nodeform.nn.layers import Linear, as_tensor
from nodeform.nn.module import Module


class RNNCell(Module):
    """Elman cell ``h' = tanh(W_ih x + W_hh h + b)``.

    Parameters
    ----------
    input_size, hidden_size : int
    rng : Generator, int or None
    dtype : dtype

    Shapes: ``x`` (N, input_size), ``h`` (N, hidden_size) -> (N, hidden_size).
    """

    def __init__(self, input_size, hidden_size, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        rng = init.as_rng(rng)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.ih = Linear(input_size, hidden_size, bias=True, rng=rng, dtype=dtype)
        self.hh = Linear(hidden_size, hidden_size, bias=False, rng=rng, dtype=dtype)

    def initial_state(self, n):
        """Zeros of shape (n, hidden_size): the hidden state before the first step."""
        w = self.ih.weight.data
        return Tensor(get_xp(w).zeros((n, self.hidden_size), w.dtype))

    def forward(self, x, h):
        x, h = as_tensor(x), as_tensor(h)
        if x.ndim != 2 or x.shape[1] != self.input_size or h.ndim != 2 \
                or tuple(h.shape) != (x.shape[0], self.hidden_size):
            raise ValueError(f"`RNNCell({self.input_size}->{self.hidden_size})`: got x of shape "
                             f"{tuple(x.shape)} and h of shape {tuple(h.shape)}; expected "
                             f"(N, {self.input_size}) and (N, {self.hidden_size}).")
        return F.tanh(self.ih(x) + self.hh(h))

    def extra_repr(self):
        return f"{self.input_size} -> {self.hidden_size}"
