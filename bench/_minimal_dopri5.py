"""Hand-written njit Dormand–Prince 5(4) loops: the speed references of the benchmark.

``minimal_dopri5`` is deliberately bare: fixed tableau written out, I controller (SciPy's constants), one
output at the end, no dense output, no checks. It shows what a compiled loop costs
when it does nothing else, so the benchmark can say how close nodeform's full-featured
Numba engine gets.
"""
import math

import numpy as np
from numba import njit

_C = np.array([0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1])
_A = np.array([[0, 0, 0, 0, 0], [1 / 5, 0, 0, 0, 0], [3 / 40, 9 / 40, 0, 0, 0],
               [44 / 45, -56 / 15, 32 / 9, 0, 0],
               [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0],
               [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]])
_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84])
_E = np.array([-71 / 57600, 0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])


@njit(cache=True)
def minimal_dopri5(f, t0, t1, y0, args, rtol, atol, h):
    """Integrate from t0 to t1 (t1 > t0); returns (y(t1), nfev)."""
    n = y0.shape[0]
    K = np.empty((7, n))
    y = y0.copy()
    ys = np.empty(n)
    yn = np.empty(n)
    K[0] = f(t0, y, *args)
    nfev = 1
    t = t0
    while t < t1:
        if t + h > t1:
            h = t1 - t
        for i in range(1, 6):
            for m in range(n):
                acc = 0.0
                for j in range(i):
                    acc += _A[i, j] * K[j, m]
                ys[m] = y[m] + h * acc
            K[i] = f(t + _C[i] * h, ys, *args)
        for m in range(n):
            acc = 0.0
            for j in range(6):
                acc += _B[j] * K[j, m]
            yn[m] = y[m] + h * acc
        K[6] = f(t + h, yn, *args)
        nfev += 6
        err = 0.0
        for m in range(n):
            e = 0.0
            for j in range(7):
                e += _E[j] * K[j, m]
            sc = atol + rtol * max(abs(y[m]), abs(yn[m]))
            err += (h * e / sc) ** 2
        err = math.sqrt(err / n)
        if err <= 1.0:
            t += h
            y[:] = yn
            K[0] = K[6]
            fac = 10.0 if err == 0.0 else min(10.0, 0.9 * err ** -0.2)
            h *= fac
        else:
            h *= max(0.2, 0.9 * err ** -0.2)
    return y, nfev


# ----------------------------------------------------------------------------- the limit
# Dormand-Prince 5(4) coefficients (Dormand & Prince 1980, Table 2), written as literals.
a21 = 1 / 5
a31, a32 = 3 / 40, 9 / 40
a41, a42, a43 = 44 / 45, -56 / 15, 32 / 9
a51, a52, a53, a54 = 19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729
a61, a62, a63, a64, a65 = 9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656
b1, b3, b4, b5, b6 = 35 / 384, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84
e1, e3, e4, e5, e6, e7 = (71 / 57600, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525,
                          -1 / 40)
c2, c3, c4, c5 = 1 / 5, 3 / 10, 4 / 5, 8 / 9


@njit(cache=True)
def limit_dopri5(f, t0, t1, y0, args, rtol, atol, h):
    """The compiled limit: Dormand-Prince 5(4) with an in-place field compiled into the loop.

    ``f(t, y, out, *args)`` writes dy/dt into ``out`` (no allocation per evaluation) and,
    being passed as a dispatcher, is specialized into this loop at compile time. Every
    stage is straight-line code with the coefficients as literals, FSAL, the I controller
    (safety 0.9, factor in [0.2, 10]); one output at t1, no dense output, no checks.
    Returns ``(y(t1), nfev)``.
    """
    n = y0.shape[0]
    k1, k2, k3, k4 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    k5, k6, k7 = np.empty(n), np.empty(n), np.empty(n)
    y = y0.copy()
    ys = np.empty(n)
    yn = np.empty(n)
    f(t0, y, k1, *args)
    nfev = 1
    t = t0
    while t < t1:
        if t + h > t1:
            h = t1 - t
        for m in range(n):
            ys[m] = y[m] + h * (a21 * k1[m])
        f(t + c2 * h, ys, k2, *args)
        for m in range(n):
            ys[m] = y[m] + h * (a31 * k1[m] + a32 * k2[m])
        f(t + c3 * h, ys, k3, *args)
        for m in range(n):
            ys[m] = y[m] + h * (a41 * k1[m] + a42 * k2[m] + a43 * k3[m])
        f(t + c4 * h, ys, k4, *args)
        for m in range(n):
            ys[m] = y[m] + h * (a51 * k1[m] + a52 * k2[m] + a53 * k3[m] + a54 * k4[m])
        f(t + c5 * h, ys, k5, *args)
        for m in range(n):
            ys[m] = y[m] + h * (a61 * k1[m] + a62 * k2[m] + a63 * k3[m] + a64 * k4[m]
                                + a65 * k5[m])
        f(t + h, ys, k6, *args)
        for m in range(n):
            yn[m] = y[m] + h * (b1 * k1[m] + b3 * k3[m] + b4 * k4[m] + b5 * k5[m] + b6 * k6[m])
        f(t + h, yn, k7, *args)
        nfev += 6
        err = 0.0
        for m in range(n):
            e = h * (e1 * k1[m] + e3 * k3[m] + e4 * k4[m] + e5 * k5[m] + e6 * k6[m]
                     + e7 * k7[m])
            sc = atol + rtol * max(abs(y[m]), abs(yn[m]))
            err += (e / sc) ** 2
        err = math.sqrt(err / n)
        if err <= 1.0:
            t += h
            for m in range(n):
                y[m] = yn[m]
                k1[m] = k7[m]
            h *= 10.0 if err == 0.0 else min(10.0, 0.9 * err ** -0.2)
        else:
            h *= max(0.2, 0.9 * err ** -0.2)
    return y, nfev
