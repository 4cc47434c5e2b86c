"""The Numba fast path: small neural vector fields with hand-derived VJPs, all compiled.

A vector field for this path is a pair of ``@numba.njit`` functions over a flat
parameter vector ``theta`` (shape ``(p,)``) and a flat state ``y`` (shape ``(n,)``),
with optional extra arguments ``*args`` passed through unchanged:

* ``f(t, y, theta, *args) -> dy``, shape ``(n,)``;
* ``f_vjp(t, y, theta, a, *args) -> (dy, a_dfdy, a_dfdtheta, a_dfdt)``: the value of f
  and the three vector–Jacobian products of the adjoint method (shapes ``(n,)``,
  ``(n,)``, ``(p,)`` and a float). Returning ``dy`` too saves recomputing the forward
  activations.

Give it to :func:`nodeform.odeint` as a :class:`NumbaField` (or a tuple
``(f, f_vjp)`` / ``(f, f_vjp, args)``) with ``params=theta`` (a Tensor); the forward
solve and the backward (adjoint) solve both run in the compiled loop of
:mod:`nodeform.ode._numba_rk`, the augmented dynamics being :func:`augmented`.

:func:`mlp_field` builds the pair for an MLP ``R^d -> R^d`` (tanh / softplus / ELU
hidden layers, a linear output, optionally t as an extra input), applied row-wise
to a batch stored flat as ``(batch * d,)``. Its architecture travels as an int64
array in ``args``, so the functions are compiled once for every architecture and
cached on disk (``cache=True``). The VJPs are derived by hand, layer by layer,
and tested against the autodiff of :meth:`NumbaField.reference`. Both run over the
batch in blocks of ``_BLOCK`` rows held feature-major in one workspace per call, with
explicit vectorizing loops for the narrow layers, BLAS for wide ones, and a
vectorizing tanh (see the constants below for the measurements behind each choice).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from nodeform.ode._fnptr import (STATE, args_key, build_function, function_handle,
                                 install_compile_log, is_handle_type)

ACTIVATIONS = {"tanh": 0, "softplus": 1, "elu": 2}

# arch = [d, time_input, activation, n_layers, size_0, size_1, ..., size_L]
_ARCH_HEAD = 4


# exp(y) = 2^k exp(r), y = k ln2 + r, |r| <= ln2 / 2; ln2 split in two so k * LN2_HI is exact
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
# below this, exp(-2|x|) underflows and tanh(x) = +-1 to the last bit
_TANH_CLAMP = -700.0
# 1.5 * 2^52: adding it to a float of magnitude below 2^51 rounds it to an integer held in
# the low mantissa bits, so k comes out of the bits by one integer subtraction; unlike
# floor() and a float -> int64 conversion this vectorizes on every x86-64 target
_SHIFTER = 6755399441055744.0
_SHIFTER_BITS = 0x4338000000000000

# Batch rows processed together. The layers run on blocks stored feature-major, (width,
# rows), so that every inner loop runs over contiguous batch rows and vectorizes; 64 rows
# of a 64-unit layer are 32 KiB, so a block's activations and gradients stay in L1/L2
# while the block is worked on, instead of streaming the whole batch through memory per
# layer as full-batch temporaries do.
# The blocks are independent and could run on several threads (prange: 34 -> 19 us per
# evaluation on 2 idle cores), but not robustly: a parallel region per evaluation stalls
# for a scheduler time slice (measured 3 ms a call) whenever another process holds a
# core, and cached parfor code loaded into a fresh process failed to link
# ("Symbol not found: allocate_sched") with Numba 0.68. So the kernels are serial.
_BLOCK = 64
# A layer at least this wide both ways goes through BLAS, narrower ones through the loops
# (which suit the skinny input and output layers): for a 64 x 64 hidden layer BLAS halves
# the VJP (2-64-64-2 field at batch 512: 777 -> 362 us); 8 itself is a guess, not tuned
_BLAS_WIDTH = 8


@intrinsic
def _bits(typingctx, x):
    """The int64 holding the bits of the float64 ``x`` (a free bitcast that vectorizes)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, llargs):
        return builder.bitcast(llargs[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, k):
    """The float64 whose bits are the int64 ``k`` (inverse of :func:`_bits`)."""
    if k != types.int64:
        return None

    def codegen(context, builder, signature, llargs):
        return builder.bitcast(llargs[0], ir.DoubleType())
    return types.float64(types.int64), codegen


# error_model="numpy": no zero-division check on the division (its divisor is in (1, 2]),
# a check whose raise path would keep the loop from vectorizing;
# fastmath "contract" only: lets mul + add become one FMA (rounded once, never less accurate)
@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _tanh_inplace(x, n):
    """``x[:n] = tanh(x[:n])`` in one pass that LLVM vectorizes (x 1-D, contiguous).

    Numba calls the scalar libm ``tanh`` element by element (about 10 ns each, while
    NumPy's SIMD tanh takes about 1 ns); this tanh is ``-expm1(-2|x|) / (2 + expm1(-2|x|))``
    with ``expm1`` by range reduction and a degree-13 Taylor polynomial on
    ``|r| <= ln2 / 2`` (truncation below 1e-17); the scaling by ``2^k`` adds ``k`` to
    the exponent bits and every branch is a select, so the loop body is straight-line
    SIMD code. Agrees with ``np.tanh`` to a few ulps, also for tiny ``x``.
    """
    for i in range(n):
        xi = x[i]
        y = max(-2.0 * abs(xi), _TANH_CLAMP)
        j = y * _LOG2E + _SHIFTER
        kf = j - _SHIFTER
        k = _bits(j) - _SHIFTER_BITS
        r = (y - kf * _LN2_HI) - kf * _LN2_LO
        q = r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (
            1 / 720 + r * (1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (
                1 / 3628800 + r * (1 / 39916800 + r * (1 / 479001600 + r / 6227020800))))))))))))
        e = _from_bits(_bits(q + 1.0) + (k << 52))      # exp(y) = exp(r) * 2^k
        em1 = q if k == 0 else e - 1.0                  # expm1(y), accurate near 0
        t = -em1 / (2.0 + em1)
        x[i] = math.copysign(t, xi)                     # t >= 0; keeps the sign of -0.0


@njit(cache=True)
def _tanh(a):
    """tanh of a C-contiguous array, as a new array (see :func:`_tanh_inplace`)."""
    out = a.copy().ravel()
    _tanh_inplace(out, out.size)
    return out.reshape(a.shape)


# exp(y) for y >= _EXP_FLOOR is a normal float64 (exp(-708) = 3.3e-308), so 2^k can be
# added to the exponent bits; below it softplus(x) is returned as 0 (its true value is a
# subnormal under 3.3e-308) and expm1(x) as -1 (to the last bit)
_EXP_FLOOR = -708.0


@njit(inline="always", error_model="numpy", fastmath={"contract"})
def _exp_parts(y):
    """``(expm1(y), exp(y))`` for ``_EXP_FLOOR <= y <= 0``, branch-free (vectorizes).

    The same range reduction and degree-13 polynomial as :func:`_tanh_inplace`:
    ``y = k ln2 + r``, ``expm1(r)`` by Taylor, ``exp(y) = 2^k exp(r)`` by adding ``k``
    to the exponent bits; ``expm1(y)`` is the polynomial itself when ``k = 0``.
    """
    j = y * _LOG2E + _SHIFTER
    kf = j - _SHIFTER
    k = _bits(j) - _SHIFTER_BITS
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    q = r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (
        1 / 720 + r * (1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (
            1 / 3628800 + r * (1 / 39916800 + r * (1 / 479001600 + r / 6227020800))))))))))))
    e = _from_bits(_bits(q + 1.0) + (k << 52))
    return (q if k == 0 else e - 1.0), e


@njit(inline="always", error_model="numpy", fastmath={"contract"})
def _log1p_unit(e):
    """``log1p(e)`` for ``0 <= e <= 1``, branch-free: ``2 atanh(s)``, ``s = e / (2 + e)``.

    ``s <= 1/3``, so the odd series ``2 (s + s^3/3 + ... + s^35/35)`` is truncated below
    ``(1/9)^18 / 37``, under 2^-53 relative.
    """
    s = e / (2.0 + e)
    z = s * s
    p = 1 / 35
    p = 1 / 33 + z * p
    p = 1 / 31 + z * p
    p = 1 / 29 + z * p
    p = 1 / 27 + z * p
    p = 1 / 25 + z * p
    p = 1 / 23 + z * p
    p = 1 / 21 + z * p
    p = 1 / 19 + z * p
    p = 1 / 17 + z * p
    p = 1 / 15 + z * p
    p = 1 / 13 + z * p
    p = 1 / 11 + z * p
    p = 1 / 9 + z * p
    p = 1 / 7 + z * p
    p = 1 / 5 + z * p
    p = 1 / 3 + z * p
    return 2.0 * (s + s * (z * p))


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _softplus_inplace(x, n):
    """``x[:n] = log(1 + e^x)`` as ``max(x, 0) + log1p(exp(-|x|))`` (np.logaddexp(0, x)),
    with the vectorizing exp and log1p above instead of scalar libm (about 10x faster)."""
    for i in range(n):
        v = x[i]
        y = max(-abs(v), _EXP_FLOOR)
        _, e = _exp_parts(y)
        sp = max(v, 0.0) + _log1p_unit(e)
        x[i] = 0.0 if v < _EXP_FLOOR else sp


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _elu_inplace(x, n):
    """``x[:n] = x if x > 0 else expm1(x)`` (ELU, alpha = 1), vectorizing (see :func:`_exp_parts`)."""
    for i in range(n):
        v = x[i]
        em1, _ = _exp_parts(max(min(v, 0.0), _EXP_FLOOR))
        x[i] = v if v > 0.0 else (em1 if v >= _EXP_FLOOR else -1.0)


@njit(cache=True)
def _act_inplace(x, n, kind):
    """Apply the hidden activation ``kind`` (see ``ACTIVATIONS``) to ``x[:n]`` in place."""
    if kind == 0:
        _tanh_inplace(x, n)
    elif kind == 1:
        _softplus_inplace(x, n)
    else:
        _elu_inplace(x, n)


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _softplus_grad_mul(g, h, n):
    """``g[:n] *= 1 - e^{-h}`` (= sigmoid(pre), as ``-expm1(-h)``: accurate for tiny ``h``)."""
    for i in range(n):
        em1, _ = _exp_parts(max(-h[i], _EXP_FLOOR))
        g[i] *= -em1


@njit(cache=True)
def _act_grad_mul(g, h, n, kind):
    """``g[:n] *= act'(pre)``, written in terms of the activation ``h = act(pre)``.

    tanh' = 1 - h^2; softplus' = sigmoid(pre) = 1 - e^{-h} (as ``-expm1(-h)``, accurate
    for tiny ``h``); ELU' = 1 where ``h > 0`` (exactly where ``pre > 0``), else ``h + 1``.
    So the backward pass needs only the stored activations, not the pre-activations.
    """
    if kind == 0:
        for i in range(n):
            g[i] *= 1.0 - h[i] * h[i]
    elif kind == 1:
        _softplus_grad_mul(g, h, n)
    else:
        for i in range(n):
            hi = h[i]
            g[i] *= 1.0 if hi > 0.0 else hi + 1.0


@njit(cache=True, fastmath={"reassoc"})
def _dot(u, v, n):
    """``sum(u[:n] * v[:n])``, vectorized.

    ``reassoc`` lets LLVM split the sum over SIMD lanes (as BLAS ``ddot`` and NumPy's
    pairwise sums also reorder); the rounding error keeps the usual bound
    ``n eps sum|u v|``. Only this sum is reordered: no other fast-math flag is set.
    """
    s = 0.0
    for i in range(n):
        s += u[i] * v[i]
    return s


@njit(cache=True, fastmath={"reassoc"})
def _sum(u, n):
    """``sum(u[:n])``, vectorized (see :func:`_dot` for the reordering)."""
    s = 0.0
    for i in range(n):
        s += u[i]
    return s


@njit(cache=True)
def _layer(theta, arch, l):
    """Views ``(W (n_out, n_in), b (n_out,))`` of layer ``l`` in the flat ``theta``."""
    off = 0
    for m in range(l):
        off += arch[_ARCH_HEAD + m + 1] * (arch[_ARCH_HEAD + m] + 1)
    n_in, n_out = arch[_ARCH_HEAD + l], arch[_ARCH_HEAD + l + 1]
    W = theta[off:off + n_out * n_in].reshape(n_out, n_in)
    b = theta[off + n_out * n_in:off + n_out * n_in + n_out]
    return W, b


@njit(cache=True)
def _block(buf, off, rows, nb):
    """A contiguous ``(rows, nb)`` view of the flat workspace ``buf`` at ``off``."""
    return buf[off:off + rows * nb].reshape(rows, nb)


@njit(cache=True)
def _load_rows(t, y, d, time_input, r0, nb, x):
    """Batch rows ``r0 .. r0+nb`` of the flat ``y``, transposed into ``x`` (d[+1], nb)."""
    for k in range(d):
        xr = x[k]
        for i in range(nb):
            xr[i] = y[(r0 + i) * d + k]
    if time_input:
        xt = x[d]
        for i in range(nb):
            xt[i] = t


@njit(cache=True)
def _store_rows(x, d, r0, nb, out):
    """Inverse of :func:`_load_rows` for ``d`` rows: ``x`` (>= d, nb) into the flat ``out``."""
    for k in range(d):
        xr = x[k]
        for i in range(nb):
            out[(r0 + i) * d + k] = xr[i]


@njit(cache=True)
def _affine_blas(W, b, x, out):
    """:func:`_affine` by one BLAS product (kept apart so the loops' code stays as is)."""
    np.dot(W, x, out)
    for o in range(W.shape[0]):
        row = out[o]
        bo = b[o]
        for i in range(row.shape[0]):
            row[i] += bo


@njit(cache=True)
def _affine_vjp_blas(W, x, g, gW, gb, gx):
    """:func:`_affine_vjp` by BLAS products."""
    dW = np.dot(g, x.T)
    for o in range(W.shape[0]):
        for m in range(W.shape[1]):
            gW[o, m] += dW[o, m]
    np.dot(W.T, g, gx)
    for o in range(W.shape[0]):
        gb[o] += _sum(g[o], g.shape[1])


@njit(cache=True)
def _affine(W, b, x, out):
    """``out = W @ x + b[:, None]`` on a feature-major block (columns are batch rows).

    Loops, not BLAS: the shapes are skinny (2 or 3 inputs, 2 outputs) and the blocks
    small, where a BLAS call costs more than the arithmetic; every inner loop runs over
    the block's contiguous rows and vectorizes. Inputs 2 and 3 (``d = 2`` with or without
    t) take one fused pass per output unit.
    """
    n_out, n_in = W.shape
    nb = x.shape[1]
    if min(n_in, n_out) >= _BLAS_WIDTH:
        _affine_blas(W, b, x, out)
        return
    for o in range(n_out):
        row = out[o]
        bo = b[o]
        if n_in == 2:
            w0, w1 = W[o, 0], W[o, 1]
            x0, x1 = x[0], x[1]
            for i in range(nb):
                row[i] = bo + w0 * x0[i] + w1 * x1[i]
        elif n_in == 3:
            w0, w1, w2 = W[o, 0], W[o, 1], W[o, 2]
            x0, x1, x2 = x[0], x[1], x[2]
            for i in range(nb):
                row[i] = bo + w0 * x0[i] + w1 * x1[i] + w2 * x2[i]
        else:
            for i in range(nb):
                row[i] = bo
            for m in range(n_in):
                w = W[o, m]
                xm = x[m]
                for i in range(nb):
                    row[i] += w * xm[i]


@njit(cache=True, fastmath={"reassoc"})
def _affine_vjp_few_in(W, x, g, gW, gb, gx):
    """:func:`_affine_vjp` for 2 or 3 inputs (the first layer): one pass per output unit.

    Each pass reads the unit's gradient row once and updates its bias and weight
    gradients (sums, reordered over SIMD lanes as in :func:`_dot`) and the input
    gradient rows ``gx`` (element by element, not reordered).
    """
    n_out, n_in = W.shape
    nb = x.shape[1]
    x0, x1, x2 = x[0], x[1], x[n_in - 1]
    gx0, gx1, gx2 = gx[0], gx[1], gx[n_in - 1]
    for m in range(n_in):
        gxm = gx[m]
        for i in range(nb):
            gxm[i] = 0.0
    for o in range(n_out):
        go = g[o]
        w0, w1, w2 = W[o, 0], W[o, 1], W[o, n_in - 1]
        s, s0, s1, s2 = 0.0, 0.0, 0.0, 0.0
        if n_in == 2:
            for i in range(nb):
                v = go[i]
                s += v
                s0 += v * x0[i]
                s1 += v * x1[i]
                gx0[i] += w0 * v
                gx1[i] += w1 * v
        else:
            for i in range(nb):
                v = go[i]
                s += v
                s0 += v * x0[i]
                s1 += v * x1[i]
                s2 += v * x2[i]
                gx0[i] += w0 * v
                gx1[i] += w1 * v
                gx2[i] += w2 * v
        gb[o] += s
        gW[o, 0] += s0
        gW[o, 1] += s1
        if n_in == 3:
            gW[o, 2] += s2


@njit(cache=True, fastmath={"reassoc"})
def _affine_vjp_two_out(W, x, g, gW, gb, gx, tanh_grad):
    """:func:`_affine_vjp` for 2 outputs (the last layer of a planar field): one pass per input.

    With ``tanh_grad`` the input gradient is also multiplied by ``1 - x^2`` in the same
    pass (``x`` being tanh activations), which :func:`_act_grad_mul` would do otherwise.
    """
    n_out, n_in = W.shape
    nb = x.shape[1]
    g0, g1 = g[0], g[1]
    gb[0] += _sum(g0, nb)
    gb[1] += _sum(g1, nb)
    for m in range(n_in):
        xm = x[m]
        row = gx[m]
        w0, w1 = W[0, m], W[1, m]
        s0, s1 = 0.0, 0.0
        if tanh_grad:
            for i in range(nb):
                v = xm[i]
                s0 += g0[i] * v
                s1 += g1[i] * v
                row[i] = (w0 * g0[i] + w1 * g1[i]) * (1.0 - v * v)
        else:
            for i in range(nb):
                v = xm[i]
                s0 += g0[i] * v
                s1 += g1[i] * v
                row[i] = w0 * g0[i] + w1 * g1[i]
        gW[0, m] += s0
        gW[1, m] += s1


@njit(cache=True)
def _affine_vjp(W, x, g, gW, gb, gx):
    """Backward of :func:`_affine` for the block gradient ``g`` (n_out, nb) of its output.

    ``gW += g @ x.T``, ``gb += g.sum(1)`` (accumulated over blocks) and ``gx = W.T @ g``;
    by BLAS for a layer at least ``_BLAS_WIDTH`` wide both ways.
    """
    n_out, n_in = W.shape
    nb = x.shape[1]
    if min(n_in, n_out) >= _BLAS_WIDTH:
        _affine_vjp_blas(W, x, g, gW, gb, gx)
        return
    for o in range(n_out):
        go = g[o]
        gb[o] += _sum(go, nb)
        for m in range(n_in):
            gW[o, m] += _dot(go, x[m], nb)
    for m in range(n_in):
        row = gx[m]
        for i in range(nb):
            row[i] = 0.0
        for o in range(n_out):
            w = W[o, m]
            go = g[o]
            for i in range(nb):
                row[i] += w * go[i]


@njit(cache=True)
def _act_offsets(arch, L, block):
    """Offsets in the activation workspace of each layer input ``x_0 .. x_{L-1}`` and its size."""
    offs = np.empty(L + 1, dtype=np.int64)
    offs[0] = 0
    for l in range(L):
        offs[l + 1] = offs[l] + arch[_ARCH_HEAD + l] * block
    return offs


@njit(cache=True)
def _max_width(arch, L):
    w = 0
    for l in range(L + 1):
        w = max(w, arch[_ARCH_HEAD + l])
    return w


@njit(cache=True)
def _f_block(t, y, theta, arch, r0, nb, buf, out):
    """Rows ``r0 .. r0+nb`` of :func:`mlp_f` into ``out``; ``buf`` is the block's workspace."""
    d, time_input, kind, L = arch[0], arch[1], arch[2], arch[3]
    half = buf.size // 2
    x = _block(buf, 0, arch[_ARCH_HEAD], nb)
    _load_rows(t, y, d, time_input, r0, nb, x)
    cur = 0
    for l in range(L):
        W, b = _layer(theta, arch, l)
        nxt = half - cur
        h = _block(buf, nxt, arch[_ARCH_HEAD + l + 1], nb)
        _affine(W, b, x, h)
        if l < L - 1:
            _act_inplace(h.ravel(), h.size, kind)
        x, cur = h, nxt
    _store_rows(x, d, r0, nb, out)


@njit(cache=True)
def mlp_f(t, y, theta, arch):
    """The MLP vector field: ``y`` (batch*d,) -> dy (batch*d,).

    Runs block by block over the batch (``_BLOCK`` rows), each layer's affine map and
    activation written into one workspace allocated per call. Single-threaded: see
    ``_BLOCK`` for why the blocks are not spread over threads.
    """
    d, L = arch[0], arch[3]
    B = y.shape[0] // d
    out = np.empty(B * d)
    buf = np.empty(2 * _max_width(arch, L) * _BLOCK)
    for r0 in range(0, B, _BLOCK):
        _f_block(t, y, theta, arch, r0, min(_BLOCK, B - r0), buf, out)
    return out


@njit(cache=True)
def _vjp_block(t, y, theta, a, arch, r0, nb, acts, aoff, gbuf, out, g_y, g_theta):
    """Rows ``r0 .. r0+nb`` of :func:`mlp_vjp`: writes ``out``, ``g_y``, adds into
    ``g_theta``, returns this block's part of ``a^T df/dt``. ``acts`` holds the layer
    inputs (offsets ``aoff``), ``gbuf`` two gradient blocks."""
    d, time_input, kind, L = arch[0], arch[1], arch[2], arch[3]
    half = gbuf.size // 2
    x = _block(acts, 0, arch[_ARCH_HEAD], nb)
    _load_rows(t, y, d, time_input, r0, nb, x)
    for l in range(L):
        W, b = _layer(theta, arch, l)
        if l < L - 1:
            h = _block(acts, aoff[l + 1], arch[_ARCH_HEAD + l + 1], nb)
            _affine(W, b, x, h)
            _act_inplace(h.ravel(), h.size, kind)
            x = h
        else:
            h = _block(gbuf, 0, d, nb)
            _affine(W, b, x, h)
            _store_rows(h, d, r0, nb, out)
    g = _block(gbuf, 0, d, nb)
    _load_rows(0.0, a, d, 0, r0, nb, g)
    cur = 0
    off = theta.size
    for l in range(L - 1, -1, -1):
        W, _ = _layer(theta, arch, l)
        n_out, n_in = W.shape
        off -= n_out * n_in + n_out
        gW = g_theta[off:off + n_out * n_in].reshape(n_out, n_in)
        gb = g_theta[off + n_out * n_in:off + n_out * n_in + n_out]
        x = _block(acts, aoff[l], n_in, nb)
        nxt = half - cur
        gx = _block(gbuf, nxt, n_in, nb)
        fused = False
        if n_in == 2 or n_in == 3:
            _affine_vjp_few_in(W, x, g, gW, gb, gx)
        elif n_out == 2:
            fused = l > 0 and kind == 0
            _affine_vjp_two_out(W, x, g, gW, gb, gx, fused)
        else:
            _affine_vjp(W, x, g, gW, gb, gx)
        if l > 0 and not fused:
            _act_grad_mul(gx.ravel(), x.ravel(), gx.size, kind)
        g, cur = gx, nxt
    _store_rows(g, d, r0, nb, g_y)
    return _sum(g[d], nb) if time_input else 0.0


@njit(cache=True)
def mlp_vjp(t, y, theta, a, arch):
    """``(f, a^T df/dy, a^T df/dtheta, a^T df/dt)`` of :func:`mlp_f`, by hand.

    Block by block over the batch: the forward keeps each layer's input ``x_l`` (the
    activations, from which ``act'`` is computed); backward walks the layers in reverse:
    ``dW += g x_l^T``, ``db += sum_rows g``, ``g <- W^T g``, then ``g <- g * act'``.
    Parameter gradients accumulate over blocks.
    """
    d, L = arch[0], arch[3]
    B = y.shape[0] // d
    out = np.empty(B * d)
    g_y = np.empty(B * d)
    g_theta = np.zeros_like(theta)
    g_t = 0.0
    aoff = _act_offsets(arch, L, _BLOCK)
    acts = np.empty(aoff[L])
    gbuf = np.empty(2 * _max_width(arch, L) * _BLOCK)
    for r0 in range(0, B, _BLOCK):
        g_t += _vjp_block(t, y, theta, a, arch, r0, min(_BLOCK, B - r0), acts, aoff, gbuf,
                          out, g_y, g_theta)
    return out, g_y, g_theta, g_t


#: What ``f_vjp`` must return for the pointer path: ``(dy, a_dfdy, a_dfdtheta, a_dfdt)``.
VJP_RETURN = types.Tuple((STATE, STATE, STATE, types.float64))

# (f_vjp, type key of (theta, *args)) -> handle, or None (then the dispatcher is passed)
_VJP_HANDLES = {}


def vjp_handle(f_vjp, theta, args):
    """A function-pointer handle of ``f_vjp`` for :func:`augmented`, memoized; or None.

    Passing the handle instead of the dispatcher ``f_vjp`` in the augmented field's
    arguments keeps the compiled adjoint loop's cache key the same in every process
    (see :mod:`nodeform.ode._fnptr`), so a second process does not recompile it. None
    when ``f_vjp`` does not compile to ``VJP_RETURN(float64, float64[::1], theta,
    float64[::1], *args)`` exactly: pass ``f_vjp`` itself then (recompiled per process).
    """
    key = (f_vjp, args_key((theta,) + tuple(args)))
    if key not in _VJP_HANDLES:
        install_compile_log()
        try:
            sig = VJP_RETURN(types.float64, STATE, numba.typeof(theta), STATE,
                             *(numba.typeof(x) for x in args))
        except Exception:  # noqa: BLE001 - no Numba type: keep the dispatcher path
            _VJP_HANDLES[key] = None
        else:
            _VJP_HANDLES[key] = function_handle(f_vjp, sig)
    return _VJP_HANDLES[key]


@intrinsic
def _vjp_from_handle(typingctx, handle, theta, args):
    fnty = types.FunctionType(VJP_RETURN(types.float64, STATE, theta, STATE, *args.types))

    def codegen(context, builder, signature, llargs):
        c_addr = builder.extract_value(llargs[0], 0)
        jit_addr = builder.extract_value(llargs[0], 1)
        return build_function(context, builder, fnty, c_addr, jit_addr)
    return fnty(handle, theta, args), codegen


def vjp_function(f_vjp, theta, args):
    """Inside compiled code: the callable ``f_vjp``, from a handle or the dispatcher itself."""
    return f_vjp


@overload(vjp_function, jit_options={"cache": True})
def _vjp_function_impl(f_vjp, theta, args):
    if is_handle_type(f_vjp):
        return lambda f_vjp, theta, args: _vjp_from_handle(f_vjp, theta, args)
    return lambda f_vjp, theta, args: f_vjp


@njit(cache=True)
def augmented(t, s, f_vjp, theta, n, p, with_t, args):
    """The adjoint's augmented dynamics on ``s = [z | a | a_theta | a_t]`` (see continuous.py).

    ``d/dt [z, a, a_theta, a_t] = [f, -a^T df/dz, -a^T df/dtheta, -a^T df/dt]``.
    ``f_vjp`` is the njit VJP function or its :func:`vjp_handle` (which lets the compiled
    adjoint loop cache across processes).
    """
    f_vjp = vjp_function(f_vjp, theta, args)
    dy, g_y, g_theta, g_t = f_vjp(t, s[:n], theta, s[n:2 * n], *args)
    return _pack_augmented(s, dy, g_y, g_theta, g_t, n, p, with_t)


@njit(cache=True)
def _pack_augmented(s, dy, g_y, g_theta, g_t, n, p, with_t):
    """``[dy, -g_y, -g_theta, (-g_t)]`` as a new array shaped like ``s`` (element loops:
    no slice assignment, whose shape check compiles Numba's string formatting)."""
    out = np.empty_like(s)
    for i in range(n):
        out[i] = dy[i]
        out[n + i] = -g_y[i]
    for i in range(p):
        out[2 * n + i] = -g_theta[i]
    if with_t:
        out[2 * n + p] = -g_t
    return out


def augmented_numpy(t, s, f_vjp, theta, n, p, with_t, args):
    """:func:`augmented` for a plain NumPy ``f_vjp`` (not compiled), in NumPy: the same
    values (a negation is exact), without a Numba dispatch per evaluation (about 3 us of
    the 6 us :func:`_pack_augmented` takes from Python on a 19,000-entry state)."""
    dy, g_y, g_theta, g_t = f_vjp(t, s[:n], theta, s[n:2 * n], *args)
    out = np.empty_like(s)
    out[:n] = dy
    np.negative(g_y, out=out[n:2 * n])
    np.negative(g_theta, out=out[2 * n:2 * n + p])
    if with_t:
        out[2 * n + p] = -g_t
    return out


@njit(cache=True)
def augmented_mlp(t, s, theta, meta):
    """:func:`augmented` for :func:`mlp_vjp`, called directly; ``meta = [n, p, with_t, *arch]``.

    Its arguments ``(theta, meta)`` have the types of the forward field's ``(theta, arch)``,
    so the adjoint solve runs the very loop the forward solve compiled (one compile, not two).
    """
    n, p, with_t = meta[0], meta[1], meta[2] != 0
    dy, g_y, g_theta, g_t = mlp_vjp(t, s[:n], theta, s[n:2 * n], meta[3:])
    return _pack_augmented(s, dy, g_y, g_theta, g_t, n, p, with_t)


def augmented_call(f_vjp, vjp, theta, n, p, with_t, args):
    """``(field, args)`` of the augmented dynamics for the compiled adjoint solve.

    :func:`augmented_mlp` for an :func:`mlp_field` (``f_vjp`` is :func:`mlp_vjp` with its
    architecture as the only argument), else :func:`augmented` with ``vjp`` (a
    :func:`vjp_handle` or ``f_vjp`` itself).
    """
    if f_vjp is mlp_vjp and len(args) == 1 and isinstance(args[0], np.ndarray):
        meta = np.concatenate([np.array([n, p, int(bool(with_t))], dtype=np.int64),
                               np.ascontiguousarray(args[0], dtype=np.int64)])
        return augmented_mlp, (theta, meta)
    return augmented, (vjp, theta, n, p, with_t, args)


@dataclass
class NumbaField:
    """A compiled vector field for the Numba fast path (see the module docstring).

    Attributes
    ----------
    f, f_vjp : numba dispatchers
    args : tuple
        Extra arguments passed to both.
    sizes : tuple of int, optional
        Layer sizes, for an MLP built by :func:`mlp_field`.
    activation : str, optional
    time_input : bool
    """

    f: object
    f_vjp: object
    args: tuple = ()
    sizes: tuple = ()
    activation: str = "tanh"
    time_input: bool = False

    @property
    def n_params(self):
        """Length of ``theta`` for an MLP field."""
        return int(sum(o * i + o for i, o in zip(self.sizes[:-1], self.sizes[1:])))

    def check_theta(self, theta):
        """Raise unless ``theta`` has exactly ``n_params`` entries (an MLP field's layout)."""
        if self.sizes and theta.size != self.n_params:
            raise ValueError(
                f"`theta` has {theta.size} entries but this MLP field (layer sizes "
                f"{self.sizes}) has {self.n_params} parameters; a longer theta would be "
                "read in part and given wrong gradients, a shorter one cannot fill the "
                "layers. Make it with `field.init_theta(rng)` or of shape (field.n_params,).")

    def init_theta(self, rng, scale=1.0):
        """Glorot-like random parameters, shape ``(n_params,)``."""
        parts = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            parts.append(rng.standard_normal(n_out * n_in) * scale / np.sqrt(n_in))
            parts.append(np.zeros(n_out))
        return np.concatenate(parts)

    def unflatten(self, theta):
        """``[(W_0, b_0), ...]`` views of a flat ``theta`` (Tensors or arrays)."""
        self.check_theta(theta)
        out, off = [], 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            W = theta[off:off + n_out * n_in].reshape(n_out, n_in)
            b = theta[off + n_out * n_in:off + n_out * n_in + n_out]
            off += n_out * n_in + n_out
            out.append((W, b))
        return out

    def reference(self, theta):
        """The same field as an autodiff function ``func(t, y)`` of Tensors (for checks)."""
        import nodeform as nf
        act = {"tanh": nf.tanh, "softplus": nf.softplus, "elu": nf.elu}[self.activation]
        d = self.sizes[-1]

        def func(t, y):
            layers = self.unflatten(theta)      # sliced inside: each call builds its own graph
            z = y.reshape(-1, d)
            x = z
            if self.time_input:
                tt = t if isinstance(t, nf.Tensor) else \
                    nf.Tensor(nf.get_xp(theta.data).full((), float(t), dtype=theta.dtype))
                x = nf.concatenate([z, nf.broadcast_to(tt.reshape(1, 1), (z.shape[0], 1))], axis=1)
            for k, (W, b) in enumerate(layers):
                x = x @ W.T + b
                if k < len(layers) - 1:
                    x = act(x)
            return x.reshape(y.shape)
        return func


def mlp_field(dim, hidden, activation="tanh", time_input=False):
    """An MLP vector field ``R^dim -> R^dim`` for the Numba path.

    Parameters
    ----------
    dim : int
        State dimension ``d``; the flat state holds ``batch`` rows of ``d``.
    hidden : sequence of int
        Hidden layer widths, e.g. ``(64,)``.
    activation : {"tanh", "softplus", "elu"}
    time_input : bool
        Feed ``t`` as an extra input of the first layer.

    Returns
    -------
    NumbaField
        ``theta`` layout: for each layer, ``W`` (out, in) row-major, then ``b`` (out,).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1 or int(dim) < 1:
        raise ValueError(f"`dim` and every entry of `hidden` must be positive integers, got "
                         f"dim={dim}, hidden={hidden}.")
    sizes = (int(dim) + (1 if time_input else 0),) + hidden + (int(dim),)
    arch = np.array([dim, int(time_input), ACTIVATIONS[activation], len(sizes) - 1] + list(sizes),
                    dtype=np.int64)
    return NumbaField(mlp_f, mlp_vjp, (arch,), sizes, activation, bool(time_input))
