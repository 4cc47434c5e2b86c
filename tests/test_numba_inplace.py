"""The in-place field form f(t, y, out, *args) and the field compiled into the loop
(``specialize=True``) give the very states and statistics of the returning form (issue 15)."""
import numpy as np
import pytest
from numba import njit

import nodeform as nf
from nodeform.ode._fnptr import is_inplace
from nodeform.ode.errors import VectorFieldError

MU = 1.5


@njit(cache=True)
def vdp(t, y, mu):
    return np.array([y[1], mu * (1.0 - y[0] * y[0]) * y[1] - y[0]])


@njit(cache=True)
def vdp_inplace(t, y, out, mu):
    out[0] = y[1]
    out[1] = mu * (1.0 - y[0] * y[0]) * y[1] - y[0]


@njit(cache=True)
def vdp_noargs_inplace(t, y, out):
    out[0] = y[1]
    out[1] = MU * (1.0 - y[0] * y[0]) * y[1] - y[0]


Y0 = np.array([2.0, 0.0])
TS = np.linspace(0.0, 6.0, 13)


def test_inplace_form_is_detected_from_the_parameters():
    assert is_inplace(vdp_inplace, (1.0,)) and not is_inplace(vdp, (1.0,))
    assert is_inplace(vdp_noargs_inplace, ()) and not is_inplace(vdp_inplace, ())


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_inplace_and_args_match_the_returning_form_bit_for_bit(method):
    ref = nf.solve(vdp, Y0, TS, args=(MU,), method=method, rtol=1e-8, atol=1e-10, trace=True)
    for f, args in ((vdp_inplace, (MU,)), (vdp_noargs_inplace, ())):
        got = nf.solve(f, Y0, TS, args=args, method=method, rtol=1e-8, atol=1e-10, trace=True)
        assert got.engine == "numba" and got.stats == ref.stats
        np.testing.assert_array_equal(got.ys, ref.ys)
        np.testing.assert_array_equal(got.trace["h"], ref.trace["h"])


def test_inplace_fixed_grid_matches():
    ref = nf.solve(vdp, Y0, TS, args=(MU,), method="rk4", step_size=0.01)
    got = nf.solve(vdp_inplace, Y0, TS, args=(MU,), method="rk4", step_size=0.01)
    assert got.stats == ref.stats
    np.testing.assert_array_equal(got.ys, ref.ys)


def test_field_compiled_into_the_loop_matches():
    ref = nf.solve(vdp, Y0, TS, args=(MU,), rtol=1e-8, atol=1e-10)
    got = nf.solve(vdp_inplace, Y0, TS, args=(MU,), rtol=1e-8, atol=1e-10, specialize=True)
    assert got.stats == ref.stats
    np.testing.assert_array_equal(got.ys, ref.ys)


@njit
def _inplace_returns(t, y, out, mu):
    out[0] = y[1]
    out[1] = -y[0]
    return out


@njit
def _inplace_bad_out(t, y, out, mu):
    out[0] = "x"


@pytest.mark.parametrize("f,match", [
    (_inplace_returns, r"taken as an in-place field f\(t, y, out, \*args\) that writes dy/dt "
                       r"into `out` and returns nothing, but it returns array\(float64"),
    (_inplace_bad_out, r"does not compile for f\(t: float64, y: float64\[::1\], out: "
                       r"float64\[::1\], float64\) \(taken as the in-place form"),
])
def test_wrong_inplace_field_gets_a_clear_error(f, match):
    with pytest.raises(VectorFieldError, match=match):
        nf.solve(f, Y0, [0.0, 1.0], args=(MU,))


def test_field_compiled_into_the_fixed_grid_loop_matches():
    ref = nf.solve(vdp, Y0, TS, args=(MU,), method="rk4", step_size=0.01)
    got = nf.solve(vdp_inplace, Y0, TS, args=(MU,), method="rk4", step_size=0.01,
                   specialize=True)
    assert got.stats == ref.stats
    np.testing.assert_array_equal(got.ys, ref.ys)


def test_specialized_loop_is_built_once_and_named_in_the_compile_log():
    from numba import types

    from nodeform.ode._fnptr import _describe_compile
    from nodeform.ode._numba_rk import ADAPTIVE_LOOPS, specialized

    loop = specialized(ADAPTIVE_LOOPS["dopri5"], vdp_inplace)
    assert specialized(ADAPTIVE_LOOPS["dopri5"], vdp_inplace) is loop
    line = _describe_compile(loop, (types.UniTuple(types.float64, 1), types.float64[::1]))
    assert line.startswith("numba: compiling the dopri5 adaptive solver loop for args "
                           "UniTuple(float64 x 1) with the field `vdp_inplace` compiled in")
    assert "not cached on disk" in line
