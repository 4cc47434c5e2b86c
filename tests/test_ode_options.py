"""Options of the step-size control and the outputs: `safety`, exponent pairs, `norm`, `interpolant`.

They let the exercises of chapter 2 change the solver without editing the library; both
engines honour them (the compiled one falls back on the reference engine, or refuses with
`engine="numba"`, for the values it has not built in).
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform import SolverArgumentError
from nodeform.ode import controller as ctl
from test_ode_numba import LIN, Y0, quad_linear

VDP0 = np.array([2.0, 0.0])
TOL = dict(rtol=1e-6, atol=1e-9)


def vdp(t, y):
    return np.array([y[1], (1.0 - y[0] ** 2) * y[1] - y[0]])


def test_safety_sets_the_step_ratio_exactly():
    """I controller: between accepted steps with no clamp, h_new / h = safety * r^(-1/5)."""
    for safety in (0.5, 0.99):
        sol = nf.solve(vdp, VDP0, [0.0, 5.0], controller="i", safety=safety, trace=True, **TOL)
        tr = sol.trace
        h, r, acc = np.abs(tr["h"]), tr["error_ratio"], tr["accepted"]
        checked = 0
        for k in range(1, len(h) - 1):
            free = ctl.MIN_FACTOR < safety * r[k] ** -0.2 < ctl.MAX_FACTOR
            if acc[k] and acc[k - 1] and acc[k + 1] and free and tr["t"][k + 1] + h[k + 1] < 5.0:
                assert h[k + 1] / h[k] == pytest.approx(safety * r[k] ** -0.2, rel=1e-12)
                checked += 1
        assert checked > 10


def test_safety_trades_evaluations_for_rejections():
    low = nf.solve(vdp, VDP0, [0.0, 20.0], controller="i", safety=0.5, **TOL).stats
    high = nf.solve(vdp, VDP0, [0.0, 20.0], controller="i", safety=0.99, **TOL).stats
    default = nf.solve(vdp, VDP0, [0.0, 20.0], controller="i", **TOL).stats
    assert low["nfev"] > default["nfev"] and low["n_rejected"] < high["n_rejected"]
    assert nf.solve(vdp, VDP0, [0.0, 20.0], controller="i", safety=0.9, **TOL).stats == default


@pytest.mark.parametrize("name, pair", [("i", (1, 0)), ("pi", (0.85, 0.2))])
def test_exponent_pairs_equal_the_named_controllers(name, pair):
    a = nf.solve(vdp, VDP0, [0.0, 8.0], controller=name, **TOL)
    b = nf.solve(vdp, VDP0, [0.0, 8.0], controller=pair, **TOL)
    assert a.stats == b.stats and np.array_equal(a.ys, b.ys)
    c = nf.solve(vdp, VDP0, [0.0, 8.0], controller=(0.5, 0.0), **TOL)
    assert c.stats["nfev"] != a.stats["nfev"]


def test_exponent_pairs_in_the_compiled_engine():
    a = nf.solve(quad_linear, Y0, [0.0, 3.0], args=LIN, controller=(0.85, 0.2), engine="numba")
    b = nf.solve(quad_linear, Y0, [0.0, 3.0], args=LIN, controller="pi", engine="numba")
    c = nf.solve(quad_linear, Y0, [0.0, 3.0], args=LIN, controller=(0.6, 0.1),
                 engine="reference")
    d = nf.solve(quad_linear, Y0, [0.0, 3.0], args=LIN, controller=(0.6, 0.1), engine="numba")
    assert a.stats == b.stats and np.array_equal(a.ys, b.ys)
    assert c.stats == d.stats and np.allclose(c.ys, d.ys, rtol=1e-12, atol=1e-14)


def test_norm_options():
    calls = []

    def my_rms(x):
        calls.append(x.shape)
        return float(np.sqrt(np.mean(x * x)))

    a = nf.solve(vdp, VDP0, [0.0, 5.0], norm=my_rms, **TOL)
    b = nf.solve(vdp, VDP0, [0.0, 5.0], **TOL)
    assert a.stats == b.stats and np.array_equal(a.ys, b.ys)
    assert len(calls) == a.stats["n_steps"] and calls[0] == (2,)
    m = nf.solve(vdp, VDP0, [0.0, 5.0], norm="max", trace=True, **TOL)
    assert m.stats["nfev"] > b.stats["nfev"]          # max >= rms: never longer steps
    y_err = nf.solve(vdp, VDP0, [0.0, 5.0], norm=lambda x: 2.0 * my_rms(x), **TOL)
    assert y_err.stats["nfev"] > b.stats["nfev"]


def test_linear_interpolant_joins_the_step_ends():
    ref = nf.solve(vdp, VDP0, [0.0, 4.0], trace=True, **TOL)
    acc = ref.trace["accepted"]
    starts, hs = ref.trace["t"][acc], ref.trace["h"][acc]
    ends = starts + hs
    mids = starts[2:6] + 0.3 * hs[2:6]
    t_out = np.sort(np.concatenate([[0.0], ends[1:7], mids, [4.0]]))
    dense = nf.solve(vdp, VDP0, t_out, **TOL)
    lin = nf.solve(vdp, VDP0, t_out, interpolant="linear", **TOL)
    assert lin.stats == dense.stats == ref.stats
    at = {t: y for t, y in zip(t_out, lin.ys)}
    for k in range(2, 6):
        y0_, y1_ = at[ends[k - 1]], at[ends[k]]
        assert np.allclose(at[mids[k - 2]], y0_ + 0.3 * (y1_ - y0_), rtol=1e-12, atol=1e-14)
    gap = np.abs(lin.ys - dense.ys).max()
    assert gap > 1e-6                                   # mid-step: linear is less accurate


def test_compiled_engine_falls_back_or_refuses():
    for opt in (dict(safety=0.5), dict(norm="max"), dict(interpolant="linear")):
        sol = nf.solve(quad_linear, Y0, [0.0, 1.0, 2.0], args=LIN, **opt)
        ref = nf.solve(quad_linear, Y0, [0.0, 1.0, 2.0], args=LIN, engine="reference", **opt)
        assert sol.engine == "reference" and sol.stats == ref.stats
        with pytest.raises(SolverArgumentError, match="cannot honour"):
            nf.solve(quad_linear, Y0, [0.0, 1.0], args=LIN, engine="numba", **opt)


@pytest.mark.parametrize("opt, message", [
    (dict(safety=0.0), "`safety`"), (dict(safety=1.2), "`safety`"), (dict(norm="l2"), "`norm`"),
    (dict(norm=3), "`norm`"), (dict(interpolant="cubic"), "`interpolant`"),
    (dict(controller=(0.0, 0.2)), "`controller`"), (dict(controller=(1, 2, 3)), "`controller`"),
    (dict(controller="p"), "`controller`")])
def test_bad_options_are_refused(opt, message):
    with pytest.raises(SolverArgumentError, match=message):
        nf.solve(vdp, VDP0, [0.0, 1.0], **opt)


def test_control_options_are_refused_where_they_would_do_nothing():
    with pytest.raises(SolverArgumentError, match="would do nothing"):
        nf.solve(vdp, VDP0, [0.0, 1.0], method="rk4", safety=0.5)
    with pytest.raises(SolverArgumentError, match="would do nothing"):
        nf.solve(vdp, VDP0, [0.0, 1.0], step_size=0.1, norm="max")
