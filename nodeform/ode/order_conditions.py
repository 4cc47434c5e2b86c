"""Order conditions of explicit Runge–Kutta methods, up to order 5.

A method has order ``p`` when its Taylor expansion matches the exact solution's up
to ``h^p``. Each rooted tree with at most ``p`` nodes gives one condition (Butcher's
theory, [1]_ Sec. II.2): 1, 1, 2, 4 and 9 trees of orders 1 to 5. Below, ``c``,
``A``, ``b`` are the tableau, ``Ac = A @ c`` and products are elementwise.

Taught in chapters/ch02_ode_solvers.py.

.. [1] E. Hairer, S. P. Nørsett, G. Wanner, "Solving Ordinary Differential
       Equations I", 2nd ed., Springer, 1993, Table II.2.2.
"""
from __future__ import annotations

import numpy as np

__all__ = ["MAX_TABULATED_ORDER", "order_conditions", "order_residuals"]

#: Trees up to this many nodes are tabulated below (17 conditions); order 6 would add 20.
MAX_TABULATED_ORDER = 5


def order_conditions(A, c):
    """Every condition up to order 5 as ``(order, name, vector v, target)`` with b·v = target.

    Parameters
    ----------
    A : ndarray, shape (s, s)
    c : ndarray, shape (s,)

    Returns
    -------
    list of tuple
    """
    A = np.asarray(A, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    one = np.ones_like(c)
    Ac, Ac2, Ac3 = A @ c, A @ c ** 2, A @ c ** 3
    AAc, AAc2, AAAc = A @ Ac, A @ Ac2, A @ (A @ Ac)
    return [
        (1, "sum b", one, 1.0),
        (2, "b.c", c, 1 / 2),
        (3, "b.c^2", c ** 2, 1 / 3),
        (3, "b.Ac", Ac, 1 / 6),
        (4, "b.c^3", c ** 3, 1 / 4),
        (4, "b.(c*Ac)", c * Ac, 1 / 8),
        (4, "b.Ac^2", Ac2, 1 / 12),
        (4, "b.AAc", AAc, 1 / 24),
        (5, "b.c^4", c ** 4, 1 / 5),
        (5, "b.(c^2*Ac)", c ** 2 * Ac, 1 / 10),
        (5, "b.(c*Ac^2)", c * Ac2, 1 / 15),
        (5, "b.(c*AAc)", c * AAc, 1 / 30),
        (5, "b.(Ac)^2", Ac * Ac, 1 / 20),
        (5, "b.Ac^3", Ac3, 1 / 20),
        (5, "b.A(c*Ac)", A @ (c * Ac), 1 / 40),
        (5, "b.AAc^2", AAc2, 1 / 60),
        (5, "b.AAAc", AAAc, 1 / 120),
    ]


def order_residuals(A, c, b, max_order):
    """Residuals ``b·v - target`` of all conditions up to ``max_order`` (<= 5).

    Returns
    -------
    list of (order, name, residual)
    """
    if not 1 <= max_order <= 5:
        raise ValueError(f"`max_order` = {max_order} is outside 1..5; only trees up to five "
                         "nodes are tabulated here.")
    b = np.asarray(b, dtype=np.float64)
    return [(p, name, float(b @ v - target))
            for p, name, v, target in order_conditions(A, c) if p <= max_order]
