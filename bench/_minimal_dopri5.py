"""A minimal hand-written njit Dormand–Prince 5(4) loop: the speed reference of the benchmark.

Deliberately bare: fixed tableau written out, I controller (SciPy's constants), one
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
