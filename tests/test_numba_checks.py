"""The Numba engine says what is wrong instead of raising Numba's errors (issue 8, items 11-12),
and tells what it compiles (issue 15).

The fields take the ``(A, p)`` arguments of ``test_ode_numba.quad_linear`` so that the
loops compile for one argument signature only.
"""
import numpy as np
import pytest
from numba import njit

import nodeform as nf
from nodeform import NonFiniteError, SolverError
from nodeform.ode.errors import VectorFieldError

A2 = np.array([[0.0, 1.0], [-1.0, 0.0]])


@njit(cache=True)
def rot(t, y, A, p):
    out = np.empty_like(y)
    for i in range(y.shape[0]):
        acc = 0.0
        for j in range(y.shape[0]):
            acc += A[i, j] * y[j]
        out[i] = acc
    return out


@njit(cache=True)
def nan_after(t, y, A, p):
    """``A y`` up to t = p, NaN after."""
    out = rot(t, y, A, p)
    if t > p:
        out[0] = np.nan
    return out


def _solve(f, y0, **kw):
    return nf.solve(f, np.asarray(y0, dtype=float), [0.0, 1.0], args=(A2, 0.0), engine="numba", **kw)


# ------------------------------------------------------------------ item 11
def test_numba_atol_zero_is_a_solver_error_not_zero_division():
    with pytest.raises(SolverError, match="atol") as info:
        _solve(rot, [1.0, 0.0], atol=0.0)
    assert not isinstance(info.value, ZeroDivisionError)


def test_numba_nan_right_after_t0_is_reported_as_f_not_stiffness():
    # NaN for every t > 0: the minimum step must not be 0 at t = 0 (it was: the solver
    # rejected until max_steps and said "may be stiff")
    with pytest.raises(NonFiniteError, match=r"`f` returned NaN/inf \(stage 1\) for a finite "
                                             r"state") as info:
        _solve(nan_after, [1.0, 0.5])
    assert info.value.t == 0.0 and info.value.step < 100


def test_numba_min_step_floor_is_the_span_rule():
    # h shrinks by MIN_FACTOR = 0.2 per rejection until below 10 eps max(|t|, span):
    # from the first step (1e-6 here) that takes ceil(log(1e-6 / (10 eps)) / log 5) steps
    sol = nf.solve(nan_after, np.array([1.0, 0.5]), [0.0, 1.0], args=(A2, 0.0), engine="numba",
                   first_step=1e-6, throw=False)
    n_expected = int(np.ceil(np.log(1e-6 / (10 * np.finfo(float).eps)) / np.log(5)))
    assert sol.stats["n_rejected"] == n_expected
    assert "NaN" in sol.message


def test_numba_overflowing_state_is_reported_as_overflow():
    with pytest.raises(NonFiniteError, match="the state overflowed float64"):
        _solve(rot, [1e308, 1e308])


# ------------------------------------------------------------------ item 12
@njit
def _f_t_only(t):
    return np.zeros(2)


@njit
def _f_scalar(t, y, A, p):
    return y[0]


@njit
def _f_2d(t, y, A, p):
    return np.zeros((2, 2))


@njit
def _f_int(t, y, A, p):
    return np.zeros(2, dtype=np.int64)


@njit
def _f_f32(t, y, A, p):
    return y.astype(np.float32)


@njit
def _f_mu(t, y, mu):
    return mu * y


@pytest.mark.parametrize("f,args,match", [
    (_f_t_only, (A2, 0.0), r"takes 1 parameter\(s\) \(t\) but is called as f\(t, y, \*args\) "
                           r"with 2 extra"),
    (_f_mu, (), r"taken as an in-place field.*if the last parameter is an extra argument, "
                r"pass it as `args=\(...\)`"),
    (_f_mu, ("fast",), r"does not compile for f\(t: float64, y: float64\[::1\], unicode_type\)"),
    (_f_scalar, (A2, 0.0), r"returned a float, not an array"),
    (_f_2d, (A2, 0.0), r"returned shape \(2, 2\) but `y` has shape \(2,\)"),
    (_f_int, (A2, 0.0), r"returned dtype int64 but `y` has dtype float64"),
    (_f_f32, (A2, 0.0), r"returned dtype float32 but `y` has dtype float64"),
])
def test_numba_bad_field_gets_a_clear_error(f, args, match):
    with pytest.raises(VectorFieldError, match=match) as info:
        nf.solve(f, np.array([1.0, 0.0]), [0.0, 1.0], args=args, engine="numba")
    assert "TypingError" not in str(info.value)


def test_numba_and_reference_refuse_the_same_return_dtypes():
    for f in (_f_int, _f_f32):
        for engine in ("numba", "reference"):
            with pytest.raises(VectorFieldError, match="returned dtype"):
                nf.solve(f, np.array([1.0, 0.0]), [0.0, 1.0], args=(A2, 0.0), engine=engine)


# ------------------------------------------------------------------ compile log (issue 15)
def test_each_compile_is_announced(capsys):
    @njit
    def fresh_field(t, y, A, p):
        return rot(t, y, A, p)

    nf.solve(fresh_field, np.array([1.0, 0.0]), [0.0, 0.1], args=(A2, 0.0), engine="numba")
    err = capsys.readouterr().err
    assert ("numba: compiling your njit function `fresh_field` (first use in this process; "
            "not cached on disk (cache=False))") in err
    nf.solve(fresh_field, np.array([1.0, 0.0]), [0.0, 0.1], args=(A2, 0.0), engine="numba")
    assert "numba: compiling" not in capsys.readouterr().err
