"""Butcher tableaus as data: a method is its numbers, validated when constructed.

An explicit Runge–Kutta method with ``s`` stages advances ``y`` by one step ``h``::

    K_i   = f(t + c_i h,  y + h * sum_{j<i} A_ij K_j)      i = 0 .. s-1
    y_new = y + h * sum_i b_i K_i                          (order p)
    err   =     h * sum_i e_i K_i,   e = b - b_hat         (b_hat: embedded order p_hat)

written as the tableau ::

    c | A
    --+----
      | b
      | b_hat

Three identities make a tableau consistent, and :class:`ButcherTableau` checks
them on construction, naming the one that fails: each row sum of ``A`` equals
``c`` (stage ``i`` samples ``f`` at time ``t + c_i h``), ``sum(b) = 1`` (order 1),
and ``sum(e) = 0`` (the embedded solution is order >= 1 too, so the error
estimate vanishes on ``y' = const``). Then the claimed ``order`` (and ``err_order``
of the embedded weights) is checked against every order condition up to it (one per
rooted tree, :mod:`nodeform.ode.order_conditions`; tabulated up to order 5, so a
claim above 5 is checked up to 5 only): a tableau that claims more than it has is
refused with the name of the first condition it fails.

*FSAL* ("first same as last"): when the last row of ``A`` equals ``b`` and
``c[-1] = 1``, the last stage is ``f(t + h, y_new)``, the first stage of the next
step, so an accepted step costs ``s - 1`` evaluations.

*Dense output*: ``y(t + theta h) = y + h * sum_i K_i * sum_k P[i, k] theta**(k+1)``
for ``theta`` in [0, 1], so outputs between steps cost no evaluations. Dormand–
Prince and Tsitouras ship their own polynomials; any other FSAL pair gets the cubic
Hermite interpolant through ``y, y_new, f(y), f(y_new)`` (built by
:func:`hermite_dense_matrix`).

Taught in chapters/ch02_ode_solvers.py.

References
----------
.. [1] E. Hairer, S. P. Nørsett, G. Wanner, "Solving Ordinary Differential
       Equations I", 2nd ed., Springer, 1993, Sec. II.1-II.6.
.. [2] J. R. Dormand, P. J. Prince, "A family of embedded Runge-Kutta formulae",
       J. Comput. Appl. Math. 6 (1980); dense output: L. F. Shampine, Math. Comp. 46 (1986).
.. [3] P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas",
       Appl. Math. Lett. 2 (1989).
.. [4] Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the first
       column simplifying assumption", Comput. Math. Appl. 62 (2011).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from nodeform.ode.order_conditions import MAX_TABULATED_ORDER, order_conditions

__all__ = ["ButcherTableau", "EULER", "MIDPOINT", "RK4", "BOSH3", "DOPRI5", "TSIT5",
           "METHODS", "get_tableau", "hermite_dense_matrix"]

#: Tolerance of the consistency checks. Coefficients written as fractions are exact to
#: ~1e-16 and Tsitouras' are printed to 20+ digits; 1e-12 leaves room for that round-off
#: and still catches any mistyped digit that matters.
TABLEAU_TOL = 1e-12
#: Tolerance of the order conditions. Products of up to five coefficients (Tsitouras'
#: printed to ~20 digits) meet them to ~1e-15; a wrong coefficient misses by far more
#: (a mistyped digit in the 4th decimal: ~1e-5), so 1e-10 separates the two.
ORDER_TOL = 1e-10


def _nonzero_terms(weights):
    """``((j, w_j), ...)`` for the nonzero weights, as Python floats (Tensor-safe)."""
    return tuple((j, float(w)) for j, w in enumerate(weights) if w != 0.0)


class ButcherTableau:
    """An explicit Runge–Kutta method as data, checked for consistency.

    Parameters
    ----------
    name : str
        Short name used by ``method=`` (``"dopri5"``).
    c : array_like, shape (s,)
        Nodes; ``c[0]`` must be 0.
    A : array_like, shape (s, s)
        Strictly lower triangular coupling matrix.
    b : array_like, shape (s,)
        Weights of the propagated solution.
    order : int
        Order ``p`` of the propagated solution.
    b_hat : array_like, shape (s,), optional
        Weights of the embedded solution (adaptive methods only).
    err_order : int, optional
        Order of the embedded solution; the step-size controller uses it.
    P : array_like, shape (s, n_poly), optional
        Dense-output coefficients (see the module docstring). FSAL pairs without
        their own get the cubic Hermite interpolant.

    Raises
    ------
    ValueError
        Naming the broken identity (row sums, ``sum(b)``, ``sum(e)``, shapes,
        explicitness, dense output at ``theta = 1``) or the first order condition
        (up to ``order``, or ``err_order`` for ``b_hat``) the weights fail.
    """

    def __init__(self, name, c, A, b, order, b_hat=None, err_order=None, P=None):
        self.name = name
        self.c = np.asarray(c, dtype=np.float64)
        self.A = np.asarray(A, dtype=np.float64)
        self.b = np.asarray(b, dtype=np.float64)
        self.order = int(order)
        s = self.c.shape[0]
        self.n_stages = s
        self._check(self.A.shape == (s, s), f"`A` has shape {self.A.shape} but `c` has {s} "
                    f"entries; A must be square with one row per stage ({s}, {s}).")
        self._check(self.b.shape == (s,), f"`b` has shape {self.b.shape}; it needs one weight "
                    f"per stage, shape ({s},).")
        self._check(np.all(np.triu(self.A) == 0.0), "`A` has entries on or above the "
                    "diagonal; an explicit method needs A strictly lower triangular (stage i "
                    "may only use stages j < i).")
        self._check(self.c[0] == 0.0, f"`c[0]` = {self.c[0]!r}; the first stage of an "
                    "explicit method is f(t, y), so c[0] must be 0.")
        rows = self.A.sum(axis=1)
        bad = np.flatnonzero(np.abs(rows - self.c) > TABLEAU_TOL)
        self._check(bad.size == 0, lambda: (
            f"row {bad[0]} of `A` sums to {float(rows[bad[0]])!r} but `c[{bad[0]}]` = "
            f"{float(self.c[bad[0]])!r}; each row sum of A must equal c (stage i samples f at "
            "t + c_i h). Fix that row of A or that entry of c."))
        self._check(abs(self.b.sum() - 1.0) <= TABLEAU_TOL, lambda: (
            f"sum(`b`) = {float(self.b.sum())!r}, not 1; the weights must sum to 1 or the method "
            "is not even first order (it fails on y' = 1)."))
        self.b_hat = None if b_hat is None else np.asarray(b_hat, dtype=np.float64)
        self.e = None
        self.err_order = None
        if self.b_hat is not None:
            self._check(self.b_hat.shape == (s,), f"`b_hat` has shape {self.b_hat.shape}; "
                        f"it needs one weight per stage, shape ({s},).")
            self._check(err_order is not None, "`err_order` is missing; an embedded pair "
                        "must say the order of `b_hat` (the controller's exponent uses it).")
            self.e = self.b - self.b_hat
            self._check(abs(self.e.sum()) <= TABLEAU_TOL, lambda: (
                f"sum(`e`) = sum(b - b_hat) = {float(self.e.sum())!r}, not 0; the error weights must "
                "sum to 0 (both solutions are exact on y' = const, so the estimate must vanish)."))
            self.err_order = int(err_order)
        self._check_order("b", self.b, self.order, "order")
        if self.b_hat is not None:
            self._check_order("b_hat", self.b_hat, self.err_order, "err_order")
        self.fsal = bool(s > 1 and self.c[-1] == 1.0 and np.array_equal(self.A[-1], self.b)
                         and self.b[-1] == 0.0)
        if P is None and self.fsal and self.adaptive:
            P = hermite_dense_matrix(self.b)
        self.P = None if P is None else np.asarray(P, dtype=np.float64)
        if self.P is not None:
            self._check(self.P.ndim == 2 and self.P.shape[0] == s, f"`P` has shape "
                        f"{self.P.shape}; dense output needs one row per stage, ({s}, n_poly).")
            at_one = self.P.sum(axis=1)
            self._check(np.allclose(at_one, self.b, rtol=0, atol=1e-10), lambda: (
                f"the dense output at theta = 1 gives weights {at_one!r}, not `b`; the "
                "interpolant must reach y_new at the end of the step."))
        # Python-float views for the reference engine: Tensors only meet Python floats.
        self.A_terms = tuple(_nonzero_terms(self.A[i, :i]) for i in range(s))
        self.c_list = tuple(float(ci) for ci in self.c)
        self.b_terms = _nonzero_terms(self.b)
        self.e_terms = None if self.e is None else _nonzero_terms(self.e)

    def _check_order(self, label, weights, order, arg):
        """Refuse ``weights`` that fail an order condition up to ``order`` (at most 5)."""
        self._check(order >= 1, f"`{arg}` = {order}; an order must be at least 1.")
        top = min(order, MAX_TABULATED_ORDER)
        for p, cond, v, target in order_conditions(self.A, self.c):
            if p > top:
                break
            value = float(weights @ v)
            self._check(abs(value - target) <= ORDER_TOL, lambda: (
                f"`{arg}` = {order} but `{label}` fails the order-{p} condition "
                f"{cond} = {Fraction(target).limit_denominator(1000)} ({label} gives "
                f"{value!r}, residual {value - target:.3e}); order {order} needs every "
                f"condition up to order {order}. Fix the coefficients, or claim the order "
                "the tableau really has."))

    def _check(self, ok, message):
        if not ok:
            text = message() if callable(message) else message
            raise ValueError(f"ButcherTableau {self.name!r}: {text}")

    @property
    def adaptive(self):
        """True when the tableau has an embedded error estimate."""
        return self.e is not None

    @property
    def evals_per_step(self):
        """Evaluations of ``f`` per accepted step (one less with FSAL)."""
        return self.n_stages - 1 if self.fsal else self.n_stages

    def dense_weights(self, theta):
        """Weights ``w_i(theta)`` with ``y(t + theta h) = y + h * sum_i w_i K_i``.

        Parameters
        ----------
        theta : float
            Position in the step, in [0, 1].

        Returns
        -------
        w : ndarray, shape (s,)
        """
        if self.P is None:
            raise ValueError(f"method {self.name!r} has no dense output; use a fixed grid "
                             "that contains the output times, or an adaptive method.")
        powers = theta ** np.arange(1, self.P.shape[1] + 1)
        return self.P @ powers

    def __repr__(self):
        kind = f"{self.order}({self.err_order})" if self.adaptive else f"order {self.order}"
        return f"ButcherTableau({self.name!r}, {kind}, stages={self.n_stages}, fsal={self.fsal})"


def hermite_dense_matrix(b):
    """Dense-output matrix of the cubic Hermite interpolant of an FSAL pair.

    With ``K_0 = f(y)``, ``K_{s-1} = f(y_new)`` and ``y_new = y + h sum b_i K_i``, the
    Hermite basis ``h10 = theta - 2 theta^2 + theta^3``, ``h11 = -theta^2 + theta^3``,
    ``h01 = 3 theta^2 - 2 theta^3`` gives ``y(theta) = y + h (h10 K_0 + h11 K_{s-1} +
    h01 sum b_i K_i)``: third order between steps, continuous derivative.

    Parameters
    ----------
    b : ndarray, shape (s,)

    Returns
    -------
    P : ndarray, shape (s, 3)
        Coefficients of ``theta, theta^2, theta^3``.
    """
    b = np.asarray(b, dtype=np.float64)
    P = np.outer(b, [0.0, 3.0, -2.0])
    P[0] += [1.0, -2.0, 1.0]
    P[-1] += [0.0, -1.0, 1.0]
    return P


def _poly_rows(polys, degree):
    """Rows of P from polynomials in theta given as ``numpy.polynomial`` objects."""
    P = np.zeros((len(polys), degree))
    for i, p in enumerate(polys):
        coef = np.zeros(degree + 1)
        coef[:len(p.coef)] = p.coef
        assert abs(coef[0]) < 1e-15, "a dense-output weight must vanish at theta = 0"
        P[i] = coef[1:]
    return P


# ----------------------------------------------------------------------------- fixed step

EULER = ButcherTableau("euler", c=[0.0], A=[[0.0]], b=[1.0], order=1)

MIDPOINT = ButcherTableau("midpoint", c=[0.0, 0.5], A=[[0, 0], [0.5, 0]], b=[0.0, 1.0], order=2)

RK4 = ButcherTableau(
    "rk4", c=[0, 0.5, 0.5, 1],
    A=[[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]],
    b=[1 / 6, 1 / 3, 1 / 3, 1 / 6], order=4)

# ----------------------------------------------------------------------------- embedded pairs

BOSH3 = ButcherTableau(
    "bosh3", c=[0, 1 / 2, 3 / 4, 1],
    A=[[0, 0, 0, 0], [1 / 2, 0, 0, 0], [0, 3 / 4, 0, 0], [2 / 9, 1 / 3, 4 / 9, 0]],
    b=[2 / 9, 1 / 3, 4 / 9, 0], order=3,
    b_hat=[7 / 24, 1 / 4, 1 / 3, 1 / 8], err_order=2)

_DOPRI5_B = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
# Shampine's 4th-order continuous extension, as coefficients of theta..theta^4 per stage.
_DOPRI5_P = [
    [1, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
    [0, 0, 0, 0],
    [0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
    [0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
    [0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632],
    [0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
    [0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
]
DOPRI5 = ButcherTableau(
    "dopri5", c=[0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1],
    A=[[0, 0, 0, 0, 0, 0, 0],
       [1 / 5, 0, 0, 0, 0, 0, 0],
       [3 / 40, 9 / 40, 0, 0, 0, 0, 0],
       [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
       [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
       [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
       _DOPRI5_B],
    b=_DOPRI5_B, order=5,
    b_hat=[5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40],
    err_order=4, P=_DOPRI5_P)

_TSIT5_B = [0.09646076681806522951816731316512876, 0.01, 0.47988965041449957477524953229059660,
            1.37900857410374189319227482185687277, -3.29006951543608067990104758571136385,
            2.32471052409977398241535591839876580, 0.0]
_Poly = np.polynomial.Polynomial
_th = _Poly([0.0, 1.0])  # theta
# Tsitouras' 4th-order interpolant b_i(theta), in his factored form.
_TSIT5_P = _poly_rows([
    -1.0530884977290216 * _th * (_th - 1.3299890189751412)
    * (_th ** 2 - 1.4364028541716351 * _th + 0.7139816917074209),
    0.1017 * _th ** 2 * (_th ** 2 - 2.1966568338249754 * _th + 1.2949852507374631),
    2.490627285651252793 * _th ** 2 * (_th ** 2 - 2.38535645472061657 * _th + 1.57803468208092486),
    -16.54810288924490272 * (_th - 1.21712927295533244) * (_th - 0.61620406037800089) * _th ** 2,
    47.37952196281928122 * (_th - 1.203071208372362603) * (_th - 0.658047292653547382) * _th ** 2,
    -34.87065786149660974 * (_th - 1.2) * (_th - 0.666666666666666667) * _th ** 2,
    2.5 * (_th - 1) * (_th - 0.6) * _th ** 2,
], degree=4)
TSIT5 = ButcherTableau(
    "tsit5", c=[0, 0.161, 0.327, 0.9, 0.98002554090450968572981028628702460, 1, 1],
    A=[[0, 0, 0, 0, 0, 0, 0],
       [0.161, 0, 0, 0, 0, 0, 0],
       [-0.00848065549235698854442687425023077, 0.33548065549235698854442687425023077, 0, 0, 0,
        0, 0],
       [2.89715305710549343213043259419293876, -6.35944848997507484314815991238382563,
        4.36229543286958141101772731819088686, 0, 0, 0, 0],
       [5.32586482843925660442887792084051132, -11.74888356406282787774717033978577296,
        7.49553934288983620830460478456435816, -0.09249506636175524925650207933207192, 0, 0, 0],
       [5.86145544294642002865925148698264789, -12.92096931784710929170611868178335940,
        8.15936789857615864318040079453925349, -0.07158497328140099722453054252582974,
        -0.02826905039406838290900305721271224, 0, 0],
       _TSIT5_B],
    b=_TSIT5_B, order=5,
    b_hat=[0.09468075576583945807478876255758923, 0.00918356554034325309677636393664531,
           0.48777052842476157078556425996312282, 1.23429756693047898565510967388423765,
           -2.70771234998352545488110997505932167, 1.86662841817058703575371939956621150,
           1 / 66],
    err_order=4, P=_TSIT5_P)

#: Every method by its ``method=`` name.
METHODS = {tab.name: tab for tab in (EULER, MIDPOINT, RK4, BOSH3, DOPRI5, TSIT5)}


def get_tableau(method):
    """The tableau for ``method`` (a name or a :class:`ButcherTableau`)."""
    if isinstance(method, ButcherTableau):
        return method
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(f"`method` = {method!r} is not a known method; choose one of "
                         f"{sorted(METHODS)} or pass a ButcherTableau.") from None
