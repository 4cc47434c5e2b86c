"""2-D convolution as one matrix product (im2col), and the ODE-Net's time-concatenating conv.

A convolution of ``x`` (N, C, H, W) with ``w`` (O, C, kh, kw) is a matrix
product once every input patch is laid out as a row ("im2col")::

    cols[(n, i, j), (a, b, c)] = xpad[n, c, i*s + a, j*s + b]     shape (N*Ho*Wo, kh*kw*C)
    out = cols @ W2         with W2[(a, b, c), o] = w[o, c, a, b]  shape (N*Ho*Wo, O)

so it runs at BLAS speed. The rows are built channels-last (``c`` fastest): each
of the ``kh*kw`` copies then moves whole contiguous runs of C values, which
measured about 1.7x faster than the classic (c, a, b) column order.

The two primitives registered here are each other's adjoints:

* ``im2col`` copies (and repeats) input entries into patch rows; its VJP
  ``col2im`` adds each patch row back where it came from, summing overlaps.
* ``col2im``'s VJP is therefore ``im2col``.

Because each VJP is the other primitive, called on Tensors, a convolution can be
differentiated twice (``create_graph=True``). The weight gradient and the bias
gradient come for free from the ``matmul`` and ``add`` rows of the table.
"""
from __future__ import annotations


import numpy as np

from nodeform.autodiff import functions as F
from nodeform.autodiff.primitive import defprim
from nodeform.autodiff.tensor import Tensor
from nodeform.backend import DEFAULT_DTYPE, get_xp
from nodeform.nn import init
from nodeform.nn.layers import as_tensor
from nodeform.nn.module import Module, Parameter


def _pair(v, name):
    """An int or a pair of ints as a pair of non-negative ints."""
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) != 2 or min(v) < 0:
        raise ValueError(f"`{name}` must be an int or a pair of ints >= 0, got {v!r}.")
    return v


def out_size(size, k, stride, pad):
    """Output length of a convolution along one axis: ``(size + 2 pad - k) // stride + 1``."""
    return (size + 2 * pad - k) // stride + 1


# ======================================================================== the two primitives
def _im2col(x, ksize, stride, padding):
    """Patch rows of ``x`` (N, C, H, W): an array (N*Ho*Wo, kh*kw*C), channels fastest."""
    xp = get_xp(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = ksize, stride, padding
    ho, wo = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    xh = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)     # padded, channels-last
    xh[:, ph:ph + h, pw:pw + w, :] = x.transpose(0, 2, 3, 1)
    cols = xp.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            cols[:, :, :, a, b, :] = xh[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw, :]
    return cols.reshape(n * ho * wo, kh * kw * c)


def _col2im(cols, x_shape, ksize, stride, padding):
    """Add the patch rows ``cols`` back into an image of shape ``x_shape`` (the adjoint of im2col)."""
    xp = get_xp(cols)
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = ksize, stride, padding
    ho, wo = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    g = cols.reshape(n, ho, wo, kh, kw, c)
    xh = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=cols.dtype)
    for a in range(kh):
        for b in range(kw):
            xh[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw, :] += g[:, :, :, a, b, :]
    return xh[:, ph:ph + h, pw:pw + w, :].transpose(0, 3, 1, 2)


im2col = defprim("im2col", _im2col,
                 lambda g, ans, x, ksize, stride, padding:
                     col2im(g, x_shape=tuple(x.shape), ksize=ksize, stride=stride, padding=padding))
col2im = defprim("col2im", _col2im,
                 lambda g, ans, cols, x_shape, ksize, stride, padding:
                     im2col(g, ksize=ksize, stride=stride, padding=padding))


# ======================================================================== functional conv
def conv2d(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlation of ``x`` with ``weight`` (what deep learning calls convolution).

    Parameters
    ----------
    x : Tensor, shape (N, C, H, W)
    weight : Tensor, shape (O, C, kh, kw)
    bias : Tensor, shape (O,), optional
    stride, padding : int or (int, int)
        Zero padding on each side.

    Returns
    -------
    Tensor, shape (N, O, Ho, Wo)
        ``Ho = (H + 2 ph - kh) // sh + 1``, likewise ``Wo``. The result is a
        channels-last array seen through a transpose; elementwise operations keep
        that memory order, which makes the next ``im2col`` a contiguous copy.
    """
    x, weight = as_tensor(x), as_tensor(weight)
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    if min(stride) < 1:
        raise ValueError(f"`stride` must be >= 1, got {stride}.")
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"`conv2d`: input has shape {tuple(x.shape)} and weight "
                         f"{tuple(weight.shape)}; expected (N, C, H, W) and (O, C, kh, kw) "
                         "with the same C.")
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = out_size(h, kh, stride[0], padding[0]), out_size(w, kw, stride[1], padding[1])
    if ho < 1 or wo < 1:
        raise ValueError(f"`conv2d`: a {kh}x{kw} kernel with padding {padding} does not fit an "
                         f"input of spatial size {h}x{w}; pad more or use a smaller kernel.")
    cols = im2col(x, ksize=(kh, kw), stride=stride, padding=padding)     # (N*Ho*Wo, kh*kw*C)
    w2 = weight.transpose((2, 3, 1, 0)).reshape(kh * kw * c, o)          # (kh*kw*C, O)
    out = cols @ w2                                                      # (N*Ho*Wo, O)
    if bias is not None:
        out = out + bias
    return out.reshape(n, ho, wo, o).transpose((0, 3, 1, 2))


# kept here for existing callers; see nodeform.memory (applied at import by default)
from nodeform.memory import keep_freed_memory  # noqa: E402,F401


# ======================================================================== layers
class Conv2d(Module):
    """2-D convolution layer.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding : int or (int, int)
    bias : bool
    rng : Generator, int or None
    dtype : dtype

    Shapes: (N, in_channels, H, W) -> (N, out_channels, Ho, Wo).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        if min(self.stride) < 1 or min(self.kernel_size) < 1:
            raise ValueError(f"`kernel_size` and `stride` must be >= 1, got {self.kernel_size} "
                             f"and {self.stride}.")
        shape = (self.out_channels, self._weight_in()) + self.kernel_size
        w, b = init.torch_default(shape, rng, dtype, bias)
        self.weight = Parameter(w)
        self.bias = Parameter(b) if bias else None

    def _weight_in(self):
        return self.in_channels

    def name(self):
        return f"{type(self).__name__}({self.in_channels}->{self.out_channels})"

    def _check(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"`{self.name()}`: input has shape {tuple(x.shape)} but the layer "
                             f"expects (N, {self.in_channels}, H, W).")

    def forward(self, x):
        x = as_tensor(x)
        self._check(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class ConcatConv2d(Conv2d):
    """``Conv2d`` on ``[t, x]``: a channel filled with ``t`` is put in front of the input.

    This is how the ODE-Net of the paper lets its vector field ``f(z(t), t)`` see
    time. The weight has ``in_channels + 1`` input channels, channel 0 for ``t``
    (the layout of the paper's ``ConcatConv2d``, so weights can be compared).

    The concatenated input is never built. A convolution is linear in its input,
    so with ``w = [w_t | w_x]`` split along the input channels::

        conv([t, x], w) + b = conv(x, w_x) + (b + t * conv(ones, w_t))

    The last term is one small map (1, O, Ho, Wo), the same for every example
    (not a constant: zero padding makes it smaller at the borders), computed on a
    single image of ones and added in the pass that adds the bias. This saves the
    copy into an (N, C+1, H, W) array, its gradient slice, and keeps the im2col
    rows at C channels. Built from primitives, so it differentiates twice.

    Shapes: ``t`` scalar (number or 0-d Tensor), ``x`` (N, in_channels, H, W) ->
    (N, out_channels, Ho, Wo).
    """

    def _weight_in(self):
        return self.in_channels + 1

    def forward(self, t, x):
        x = as_tensor(x)
        self._check(x)
        _, _, h, w = x.shape
        w_t, w_x = self.weight[:, :1], self.weight[:, 1:]                # (O, 1, kh, kw), (O, C, kh, kw)
        ones = Tensor(get_xp(x.data).ones((1, 1, h, w), dtype=x.dtype))
        tmap = conv2d(ones, w_t, None, self.stride, self.padding)        # (1, O, Ho, Wo)
        if isinstance(t, Tensor):
            t = F.reshape(t.astype(x.dtype) if t.dtype != x.dtype else t, 1, 1, 1, 1)
        else:
            t = float(t)
        shift = tmap * t
        if self.bias is not None:
            shift = shift + self.bias.reshape(1, self.out_channels, 1, 1)
        return conv2d(x, w_x, None, self.stride, self.padding) + shift
