r"""The planar CNF's augmented field and its VJPs by hand, in NumPy and in Numba.

Both versions follow the ``(f, f_vjp)`` interface of :mod:`nodeform.adjoint.numba_field`
over a flat state ``y`` of ``k`` rows ``[z (D) | l]`` and the flat hypernetwork
parameters ``theta``; ``arch = int64[D, M, H]`` travels in ``args``:

* ``f(t, y, theta, arch) -> [f(z) | -tr]`` row by row, shape ``(k (D+1),)``;
* ``f_vjp(t, y, theta, a, arch) -> (f, a^T df/dy, a^T df/dtheta, a^T df/dt)``.

``theta`` is laid out as :class:`nodeform.models.cnf.HyperNet`'s parameters:
``W1 (H, 1), b1 (H), W2 (H, H), b2 (H), W3 (P, H), b3 (P)`` with ``P = 3 M D + M``, whose
output ``p`` splits into ``W (M, D), U (M, D), G (M, D), B (M)``.

The VJP, derived by hand
------------------------
With ``h = tanh(z W^T + B)`` (k, M), ``U~ = U * sigmoid(G)``, ``c_m = w_m . u~_m`` and
the cotangent ``a = [a_z | a_l]``, the scalar being differentiated is

.. math::  S = \frac1M \sum_{i,m} \big(a_{z,i}\cdot\tilde u_m\, h_{im}
               - a_{l,i}\,(1 - h_{im}^2)\, c_m\big),

so :math:`\partial S/\partial h_{im} = \frac1M (a_{z,i}\cdot\tilde u_m + 2 a_{l,i} h_{im} c_m)`,
:math:`\partial S/\partial \tilde u_m = \frac1M \sum_i a_{z,i} h_{im} + g_{c,m} w_m`,
:math:`g_{c,m} = \partial S/\partial c_m = -\frac1M\sum_i a_{l,i}(1-h_{im}^2)`; through the
pre-activation :math:`\delta_{im} = (1-h_{im}^2)\,\partial S/\partial h_{im}` gives
``dB = sum_i delta``, ``dW = delta^T z + g_c u~``, ``dz = delta W``. The gate:
``dU = dU~ * s``, ``dG = dU~ * U * s (1 - s)`` with ``s = sigmoid(G)``. Then back through
the hypernetwork's three layers to ``theta`` and to ``t``. The ``l`` column of ``y``
does not enter ``f``: its cotangent is zero.

Tested against the autodiff of :class:`nodeform.models.cnf.PlanarField` in
tests/test_models_cnf.py. The Numba kernels run feature-major (``z`` transposed to
(D, k)) so that each loop over the batch is contiguous and vectorizes, with the
vectorizing tanh of :mod:`nodeform.adjoint.numba_field`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from nodeform.adjoint.numba_field import NumbaField, _dot, _sum, _tanh_inplace


def arch_of(dim, width, hidden):
    """The ``arch`` argument: ``int64[D, M, H]``."""
    return np.array([dim, width, hidden], dtype=np.int64)


def n_params(dim, width, hidden):
    """Length of ``theta``: the hypernetwork ``1 -> H -> H -> 3 M D + M``."""
    P = 3 * width * dim + width
    return 2 * hidden + hidden * hidden + hidden + P * hidden + P


# ============================================================ NumPy
# The NumPy kernels are written around what costs time at the paper's size (batch k = 512,
# M = 64, D = 2): an elementwise pass over two k x M arrays takes 3-4 us and np.tanh 26 us,
# but OpenBLAS multiplies a k x M array by an M x 2 (or its transpose by a k x 2) one in
# 12-17 us, four times a matrix-vector product (3 us), and a broadcast along a (k, 1) column
# or an (M,) row costs 8-13 us (measured 2026-12-02, NumPy 2.4, OpenBLAS 0.3.31, AMD EPYC;
# bench/RESULTS-cnf.md). So every product with a skinny factor is D matrix-vector products
# (D = 2 here; the loops over d would want one matrix product again for a large D), the bias
# rides in the one k x (D+1) by (D+1) x M product that makes the pre-activations, and the
# outer product of the trace's cotangent with c comes out of that same kind of product
# instead of broadcasts. The arithmetic is that of the derivation above, summed in other
# orders: equal to rounding, not to the bit.


def _split(theta, D, M, H):
    P = 3 * M * D + M
    o = 0
    W1, o = theta[o:o + H], o + H
    b1, o = theta[o:o + H], o + H
    W2, o = theta[o:o + H * H].reshape(H, H), o + H * H
    b2, o = theta[o:o + H], o + H
    W3, o = theta[o:o + P * H].reshape(P, H), o + P * H
    b3 = theta[o:o + P]
    return W1, b1, W2, b2, W3, b3


def _forward_np(t, y, theta, arch):
    """``[f | -tr]`` (k (D+1),) and what the VJP reuses: the hypernetwork's activations, the
    units ``W (M, D)``, ``U``, the gate ``s``, ``U~^T (D, M)``, ``c``, ``[z | 1]`` (k, D+1),
    ``h`` and ``h^2`` (k, M)."""
    D, M, H = int(arch[0]), int(arch[1]), int(arch[2])
    W1, b1, W2, b2, W3, b3 = _split(theta, D, M, H)
    h1 = np.tanh(W1 * t + b1)
    h2 = np.tanh(W2 @ h1 + b2)
    p = W3 @ h2
    p += b3
    MD = M * D
    W, U, G = p[:3 * MD].reshape(3, M, D)
    s = 1.0 / (1.0 + np.exp(-G))
    UtT = (U * s).T                                       # (D, M): U~ by columns
    c = (W.T * UtT).sum(axis=0)                           # (M,): w_m . u~_m
    # pre-activations z W^T + B as one product [z | 1] @ [W^T ; B]
    Z1 = y.reshape(-1, D + 1).copy()
    Z1[:, D] = 1.0
    WB = np.empty((D + 1, M))
    WB[:D] = W.T
    WB[D] = p[3 * MD:]
    h = Z1 @ WB
    np.tanh(h, out=h)                                     # (k, M)
    hh = h * h
    out = np.empty((D + 1, Z1.shape[0]))                  # by columns: contiguous products
    Us = UtT * (1.0 / M)
    for d in range(D):
        np.matmul(h, Us[d], out=out[d])
    np.matmul(hh, c * (1.0 / M), out=out[D])
    out[D] -= np.add.reduce(c) / M                        # -(1/M) sum_m (1 - h^2) c_m
    out = np.ascontiguousarray(out.T).reshape(-1)        # back to rows [f | -tr]
    return out, (D, M, H, W1, W2, W3, h1, h2, W, U, s, UtT, c, Z1, h, hh)


def planar_f_np(t, y, theta, arch):
    """The augmented planar field in NumPy: ``y`` (k (D+1),) -> ``[f | -tr]`` (k (D+1),)."""
    return _forward_np(t, y, theta, arch)[0]


def planar_vjp_np(t, y, theta, a, arch):
    """``(f, a^T df/dy, a^T df/dtheta, a^T df/dt)`` of :func:`planar_f_np`, by hand."""
    out, (D, M, H, W1, W2, W3, h1, h2, W, U, s, UtT, c, Z1, h, hh) = _forward_np(t, y, theta, arch)
    A = a.reshape(-1, D + 1)
    al = A[:, D]
    inv = 1.0 / M
    MD = M * D
    P = 3 * MD + M
    gp = np.empty(P)                                      # [dW | dU | dG | dB]
    gW, gU, gG = gp[:3 * MD].reshape(3, M, D)
    gc = (al @ hh - np.add.reduce(al)) * inv              # -(1/M) sum_i al (1 - h^2)
    gUt = np.empty((D, M))                                # dS/dU~ by columns
    for d in range(D):
        np.matmul(A[:, d], h, out=gUt[d])
    # dS/dh = a_z U~^T / M + h * (a_l outer 2 c / M): both as products [a_z | a_l] @ (D+1, M)
    # (the outer product so costs less than a column broadcast), each into a contiguous
    # array (elementwise passes over strided halves of one (k, 2M) product cost 4x); h's
    # buffer is reused once h has been read, so three k x M arrays are live, not four
    V = np.zeros((2, D + 1, M))
    V[0, :D] = UtT * inv
    V[1, D] = (2.0 * inv) * c
    delta = A @ V[1]
    h *= delta                                            # h (a_l outer 2 c / M)
    np.matmul(A, V[0], out=delta)
    delta += h                                            # dS/dh (k, M)
    np.multiply(delta, hh, out=h)
    delta -= h                                            # * (1 - h^2): dS/dpre
    g_y = np.zeros((D + 1, Z1.shape[0]))                  # by columns, the l one stays 0
    for d in range(D):
        np.matmul(Z1[:, d], delta, out=gW[:, d])          # delta^T z
        np.matmul(delta, W[:, d], out=g_y[d])             # delta W
    np.matmul(Z1[:, D], delta, out=gp[3 * MD:])           # dB: the sum over the batch (Z1's ones)
    gUt *= inv
    gUt += gc * W.T
    gW += gc[:, None] * UtT.T
    np.multiply(gUt.T, s, out=gU)
    np.multiply(gU, U * (1.0 - s), out=gG)
    ga2 = W3.T @ gp
    ga2 *= 1.0 - h2 * h2
    ga1 = W2.T @ ga2
    ga1 *= 1.0 - h1 * h1
    g_theta = np.empty(theta.size)                        # [W1 | b1 | W2 | b2 | W3 | b3]
    np.multiply(ga1, t, out=g_theta[:H])
    g_theta[H:2 * H] = ga1
    o = 2 * H + H * H
    np.multiply(ga2[:, None], h1, out=g_theta[2 * H:o].reshape(H, H))
    g_theta[o:o + H] = ga2
    o += H
    np.multiply(gp[:, None], h2, out=g_theta[o:o + P * H].reshape(P, H))
    g_theta[o + P * H:] = gp
    return out, np.ascontiguousarray(g_y.T).reshape(-1), g_theta, float(ga1 @ W1)


# ============================================================ Numba
@njit(cache=True)
def _hyper_nb(t, theta, D, M, H, h1, h2, p):
    """The hypernetwork forward into ``h1, h2`` (H,) and ``p`` (P,)."""
    P = 3 * M * D + M
    oW2 = 2 * H
    ob2 = oW2 + H * H
    oW3 = ob2 + H
    ob3 = oW3 + P * H
    for j in range(H):
        h1[j] = theta[j] * t + theta[H + j]
    _tanh_inplace(h1, H)
    for j in range(H):
        h2[j] = theta[ob2 + j] + _dot(theta[oW2 + j * H:oW2 + (j + 1) * H], h1, H)
    _tanh_inplace(h2, H)
    for r in range(P):
        p[r] = theta[ob3 + r] + _dot(theta[oW3 + r * H:oW3 + (r + 1) * H], h2, H)


@njit(cache=True)
def _units_nb(p, D, M, s, Ut, c):
    """Gates ``s = sigmoid(G)``, ``U~ = U s`` (M D,) and ``c_m = w_m . u~_m`` (M,)."""
    MD = M * D
    for r in range(MD):
        s[r] = 1.0 / (1.0 + np.exp(-p[2 * MD + r]))
        Ut[r] = p[MD + r] * s[r]
    for m in range(M):
        acc = 0.0
        for d in range(D):
            acc += p[m * D + d] * Ut[m * D + d]
        c[m] = acc


@njit(cache=True, fastmath={"contract"})
def _unit2_forward(row, z0, z1, w0, w1, b, u0, u1, cm, dz0, dz1, hh, k):
    """One unit of :func:`_field_nb` for D = 2: pre-activation, tanh, then the three sums."""
    for i in range(k):
        row[i] = b + w0 * z0[i] + w1 * z1[i]
    _tanh_inplace(row, k)
    for i in range(k):
        h = row[i]
        dz0[i] += u0 * h
        dz1[i] += u1 * h
        hh[i] += cm * h * h


# reassoc: the sums over the batch split over SIMD lanes (as _dot's); contract: FMAs
@njit(cache=True, fastmath={"reassoc", "contract"})
def _unit2_vjp(h, al, a0, a1, z0, z1, u0, u1, two_c, inv, w0, w1, gz0, gz1, k):
    """One unit of :func:`planar_vjp_nb` for D = 2 in one pass over the batch.

    Returns ``(sum_i al q, sum_i delta, sum_i delta z0, sum_i delta z1, sum_i a0 h,
    sum_i a1 h)`` and adds ``w delta`` into ``gz0, gz1``.
    """
    s_q = s_d = s_dz0 = s_dz1 = s_ah0 = s_ah1 = 0.0
    for i in range(k):
        hi = h[i]
        qi = 1.0 - hi * hi
        ali = al[i]
        a0i = a0[i]
        a1i = a1[i]
        di = inv * qi * (two_c * hi * ali + u0 * a0i + u1 * a1i)
        s_q += ali * qi
        s_d += di
        s_dz0 += di * z0[i]
        s_dz1 += di * z1[i]
        s_ah0 += a0i * hi
        s_ah1 += a1i * hi
        gz0[i] += w0 * di
        gz1[i] += w1 * di
    return s_q, s_d, s_dz0, s_dz1, s_ah0, s_ah1


@njit(cache=True)
def _field_nb(y, p, D, M, Ut, c, zT, Hs, store, out):
    """Write ``[f | -tr]`` into ``out``; the tanh rows go to ``Hs[m]`` (or ``Hs[0]`` if not ``store``)."""
    k = zT.shape[1]
    for d in range(D):
        zd = zT[d]
        for i in range(k):
            zd[i] = y[i * (D + 1) + d]
    dz = np.zeros((D, k))
    hh = np.zeros(k)                               # sum_m c_m h_m^2 / M
    inv = 1.0 / M
    csum = 0.0
    for m in range(M):
        row = Hs[m] if store else Hs[0]
        b = p[3 * M * D + m]
        cm = c[m] * inv
        csum += cm
        if D == 2:                                 # the toy data: one fused pass each way
            _unit2_forward(row, zT[0], zT[1], p[2 * m], p[2 * m + 1], b, Ut[2 * m] * inv,
                           Ut[2 * m + 1] * inv, cm, dz[0], dz[1], hh, k)
            continue
        for i in range(k):
            row[i] = b
        for d in range(D):
            w = p[m * D + d]
            zd = zT[d]
            for i in range(k):
                row[i] += w * zd[i]
        _tanh_inplace(row, k)
        for d in range(D):
            u = Ut[m * D + d] * inv
            dzd = dz[d]
            for i in range(k):
                dzd[i] += u * row[i]
        for i in range(k):
            hh[i] += cm * row[i] * row[i]
    for i in range(k):
        for d in range(D):
            out[i * (D + 1) + d] = dz[d, i]
        out[i * (D + 1) + D] = hh[i] - csum


@njit(cache=True)
def planar_f_nb(t, y, theta, arch):
    """:func:`planar_f_np` compiled."""
    D, M, H = arch[0], arch[1], arch[2]
    k = y.size // (D + 1)
    h1, h2, p = np.empty(H), np.empty(H), np.empty(3 * M * D + M)
    _hyper_nb(t, theta, D, M, H, h1, h2, p)
    s, Ut, c = np.empty(M * D), np.empty(M * D), np.empty(M)
    _units_nb(p, D, M, s, Ut, c)
    out = np.empty(y.size)
    _field_nb(y, p, D, M, Ut, c, np.empty((D, k)), np.empty((1, k)), False, out)
    return out


@njit(cache=True)
def planar_vjp_nb(t, y, theta, a, arch):
    """:func:`planar_vjp_np` compiled: one pass per unit over the batch."""
    D, M, H = arch[0], arch[1], arch[2]
    P = 3 * M * D + M
    MD = M * D
    k = y.size // (D + 1)
    h1, h2, p = np.empty(H), np.empty(H), np.empty(P)
    _hyper_nb(t, theta, D, M, H, h1, h2, p)
    s, Ut, c = np.empty(MD), np.empty(MD), np.empty(M)
    _units_nb(p, D, M, s, Ut, c)
    zT = np.empty((D, k))
    Hs = np.empty((M, k))
    out = np.empty(y.size)
    _field_nb(y, p, D, M, Ut, c, zT, Hs, True, out)
    aT = np.empty((D, k))
    al = np.empty(k)
    for i in range(k):
        for d in range(D):
            aT[d, i] = a[i * (D + 1) + d]
        al[i] = a[i * (D + 1) + D]
    inv = 1.0 / M
    gp = np.empty(P)
    gzT = np.zeros((D, k))
    delta = np.empty(k)
    q = np.empty(k)
    for m in range(M):
        h = Hs[m]
        if D == 2:
            r0, r1 = 2 * m, 2 * m + 1
            w0, w1 = p[r0], p[r1]
            s_q, s_d, s_dz0, s_dz1, s_ah0, s_ah1 = _unit2_vjp(
                h, al, aT[0], aT[1], zT[0], zT[1], Ut[r0], Ut[r1], 2.0 * c[m], inv, w0, w1,
                gzT[0], gzT[1], k)
            gc = -inv * s_q
            gp[3 * MD + m] = s_d
            for r, w, s_dz, s_ah in ((r0, w0, s_dz0, s_ah0), (r1, w1, s_dz1, s_ah1)):
                gut = inv * s_ah + gc * w
                gp[r] = s_dz + gc * Ut[r]
                gp[MD + r] = gut * s[r]
                gp[2 * MD + r] = gut * p[MD + r] * s[r] * (1.0 - s[r])
            continue
        for i in range(k):
            q[i] = 1.0 - h[i] * h[i]
        gc = -inv * _dot(al, q, k)
        two_c = 2.0 * c[m]
        for i in range(k):
            delta[i] = two_c * h[i] * al[i]
        for d in range(D):
            u = Ut[m * D + d]
            ad = aT[d]
            for i in range(k):
                delta[i] += u * ad[i]
        for i in range(k):
            delta[i] *= inv * q[i]
        gp[3 * MD + m] = _sum(delta, k)
        for d in range(D):
            r = m * D + d
            w = p[r]
            gut = inv * _dot(aT[d], h, k) + gc * w
            gp[r] = _dot(delta, zT[d], k) + gc * Ut[r]            # dW
            gp[MD + r] = gut * s[r]                                # dU
            gp[2 * MD + r] = gut * p[MD + r] * s[r] * (1.0 - s[r])  # dG
            gzd = gzT[d]
            for i in range(k):
                gzd[i] += w * delta[i]
    # ---- back through the hypernetwork: theta = [W1, b1, W2, b2, W3, b3]
    g_theta = np.empty(theta.size)
    oW2 = 2 * H
    ob2 = oW2 + H * H
    oW3 = ob2 + H
    ob3 = oW3 + P * H
    ga2 = np.zeros(H)
    for r in range(P):
        g = gp[r]
        g_theta[ob3 + r] = g
        row = theta[oW3 + r * H:oW3 + (r + 1) * H]
        for j in range(H):
            g_theta[oW3 + r * H + j] = g * h2[j]
            ga2[j] += g * row[j]
    ga1 = np.zeros(H)
    for j in range(H):
        ga2[j] *= 1.0 - h2[j] * h2[j]
        g_theta[ob2 + j] = ga2[j]
        for l in range(H):
            g_theta[oW2 + j * H + l] = ga2[j] * h1[l]
            ga1[l] += ga2[j] * theta[oW2 + j * H + l]
    g_t = 0.0
    for j in range(H):
        ga1[j] *= 1.0 - h1[j] * h1[j]
        g_theta[j] = ga1[j] * t
        g_theta[H + j] = ga1[j]
        g_t += ga1[j] * theta[j]
    g_y = np.zeros(y.size)
    for i in range(k):
        for d in range(D):
            g_y[i * (D + 1) + d] = gzT[d, i]
    return out, g_y, g_theta, g_t


# ============================================================ the fields
def planar_cnf_field(dim, width, hidden, engine="numba"):
    """The planar CNF's augmented field as a :class:`~nodeform.NumbaField` for ``odeint``.

    ``engine="numba"``: the compiled kernels (forward and adjoint solves compiled);
    ``engine="numpy"``: the same hand-written VJP in NumPy, run by the reference loops.
    """
    arch = arch_of(dim, width, hidden)
    if engine == "numba":
        return NumbaField(planar_f_nb, planar_vjp_nb, (arch,))
    if engine == "numpy":
        return NumbaField(planar_f_np, planar_vjp_np, (arch,))
    raise ValueError(f"`engine` must be 'numpy' or 'numba', got {engine!r}.")
