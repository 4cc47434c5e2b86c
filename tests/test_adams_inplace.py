"""Adams with the in-place field form f(t, y, out, *args) and with the field compiled into the
loop (``specialize=True``): the very steps, orders and states of the returning form, and the
reference engine's (issue 13). The fields are those of ``test_numba_inplace`` (one set of
compiled signatures for both files)."""
import numpy as np
import pytest

import nodeform as nf
from nodeform.ode.errors import VectorFieldError
from test_numba_inplace import MU, TS, Y0, _inplace_returns, vdp, vdp_inplace


def test_adams_inplace_matches_the_returning_form_bit_for_bit():
    """The in-place form writes into the loop's arrays: same steps, orders and states."""
    ref = nf.solve(vdp, Y0, TS, args=(MU,), method="adams", rtol=1e-8, atol=1e-10, trace=True)
    got = nf.solve(vdp_inplace, Y0, TS, args=(MU,), method="adams", rtol=1e-8, atol=1e-10,
                   trace=True)
    assert got.engine == "numba" and got.stats == ref.stats
    np.testing.assert_array_equal(got.ys, ref.ys)
    np.testing.assert_array_equal(got.trace["h"], ref.trace["h"])
    np.testing.assert_array_equal(got.trace["order"], ref.trace["order"])


def test_adams_inplace_matches_the_reference_engine():
    a = nf.solve(vdp_inplace, Y0, TS, args=(MU,), method="adams", rtol=1e-8, atol=1e-10,
                 trace=True)
    b = nf.solve(lambda t, y, mu: vdp.py_func(t, y, mu), Y0, TS, args=(MU,), method="adams",
                 rtol=1e-8, atol=1e-10, trace=True)
    assert a.engine == "numba" and b.engine == "reference" and a.stats == b.stats
    np.testing.assert_array_equal(a.trace["order"], b.trace["order"])
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_adams_field_compiled_into_the_loop_matches():
    """specialize=True compiles f into the Adams loop (one compile per field and process)."""
    ref = nf.solve(vdp, Y0, TS, args=(MU,), method="adams", rtol=1e-8, atol=1e-10)
    got = nf.solve(vdp_inplace, Y0, TS, args=(MU,), method="adams", rtol=1e-8, atol=1e-10,
                   specialize=True)
    assert got.stats == ref.stats
    np.testing.assert_array_equal(got.ys, ref.ys)


@pytest.mark.parametrize("f,match", [
    (_inplace_returns, r"taken as an in-place field f\(t, y, out, \*args\) that writes dy/dt "
                       r"into `out` and returns nothing, but it returns array\(float64"),
])
def test_wrong_inplace_adams_field_gets_a_clear_error(f, match):
    with pytest.raises(VectorFieldError, match=match):
        nf.solve(f, Y0, [0.0, 1.0], args=(MU,), method="adams")
