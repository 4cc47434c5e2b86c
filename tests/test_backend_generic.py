"""The backend switch and backend-generic models, tested on the CPU (issue 16).

No GPU here: the models of chapters 4-7 run on :mod:`nodeform.testing_device`, a
fake device whose arrays refuse host arrays and NumPy functions the way CuPy
does (or more strictly) and count every implicit host sync. A model that passes
here has no host code on its hot path, and every host sync it makes goes through
the counted places (``nodeform.backend.host_float``/``host_bool``).

Numba signatures compiled here: none (the fake device refuses the Numba engines).
"""
import sys
import types

import numpy as np
import pytest

import nodeform as nf
from nodeform import backend
from nodeform import testing_device as fd
from nodeform.experiments import table1
from nodeform.models.cnf import PlanarCNF

from model_workloads import WORKLOADS, assert_close

fd.enable()


# ======================================================================== the switch and its errors
@pytest.fixture
def no_cupy_cache(monkeypatch):
    """Forget the cached CuPy check; the test decides what ``import cupy`` finds."""
    monkeypatch.setattr(backend, "_CUPY_CHECKED", None)
    yield
    backend._CUPY_CHECKED = None


def _one_sentence(msg):
    return msg.endswith(".") and ". " not in msg and "\n" not in msg


def _fake_cupy(exc):
    mod = types.ModuleType("cupy")
    mod.float64 = np.float64

    def arange(*a, **k):
        raise exc
    mod.arange = arange
    return mod


def test_cupy_not_installed_says_so_in_one_sentence(no_cupy_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy -> ImportError
    with pytest.raises(RuntimeError) as info:
        backend.get_backend("cupy")
    msg = str(info.value)
    assert "not installed" in msg and "pip install nodeform[gpu]" in msg and _one_sentence(msg), msg


@pytest.mark.parametrize("error, words", [
    ("cudaErrorNoDevice: no CUDA-capable device is detected", "no GPU device is visible"),
    ("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version",
     "driver is missing or too old"),
    ("cudaErrorMemoryAllocation: out of memory", "first allocation on the GPU failed")])
def test_cupy_without_a_usable_gpu_says_why(no_cupy_cache, monkeypatch, error, words):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(RuntimeError(error)))
    cp, reason = backend.cupy_status()
    assert cp is None and words in reason and error.split(":")[0] in reason
    with pytest.raises(RuntimeError) as info:
        backend.resolve_backend("cupy")
    assert words in str(info.value) and _one_sentence(str(info.value)), str(info.value)


def test_backend_from_the_environment(monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "numpy")
    assert backend.resolve_backend() == "numpy"
    monkeypatch.setenv(backend.BACKEND_ENV, "gpu0")
    with pytest.raises(ValueError, match="NODEFORM_BACKEND='gpu0' is not a backend"):
        backend.resolve_backend()
    monkeypatch.delenv(backend.BACKEND_ENV)
    assert backend.resolve_backend() == "numpy"
    assert backend.default_dtype(np) == np.float64 and backend.default_dtype(fd.xp) == np.float32


def test_train_backend_cupy_without_gpu_exits_2_with_the_reason(tmp_path, capsys):
    if backend.cupy_available():
        pytest.skip("a GPU is usable here: the refusal cannot be shown")
    args = table1.build_parser().parse_args(["mlp", "--backend", "cupy", "--out", str(tmp_path / "r"),
                                             "--max-steps", "1", "--no-progress"])
    assert table1.main(args) == 2
    err = capsys.readouterr().err
    assert "backend `cupy` cannot run here" in err and err.count("\n") == 1, err


# ======================================================================== Numba stays on the CPU
def test_numba_engine_refuses_device_arrays():
    numba = pytest.importorskip("numba")

    @numba.njit
    def f(t, y):
        return -y

    with pytest.raises(TypeError, match="runs on the CPU only"):
        nf.solve(f, fd.asarray(np.ones(3)), [0.0, 1.0])
    with pytest.raises(TypeError, match="runs on the CPU only"):
        nf.solve(lambda t, y: -y, fd.asarray(np.ones(3)), [0.0, 1.0], engine="numba")


def test_numba_models_refuse_device_arrays():
    m = PlanarCNF(dim=2, width=4, hidden=4, engine="numba", rng=0)
    m.to(backend="fakedevice")
    with pytest.raises(ValueError, match="CPU only"):
        m.log_prob(fd.asarray(np.zeros((3, 2))))
    field = nf.mlp_field(2, (4,), "tanh")
    theta = nf.Tensor(field.init_theta(np.random.default_rng(0)), requires_grad=True)
    with pytest.raises(Exception, match="CPU only"):
        nf.odeint(field, nf.Tensor(fd.asarray(np.ones(2))), [0.0, 1.0], params=[theta])


# ======================================================================== host syncs in the solver loop
@pytest.mark.parametrize("device", [False, True], ids=["numpy", "fakedevice"])
def test_controller_scalar_is_the_only_sync_per_step(device):
    """Adaptive solve: one sync per attempted step, plus 4 before the loop (1 with first_step)."""
    A = np.array([[-0.5, 2.0], [-2.0, -0.5]])
    y0 = np.random.default_rng(0).standard_normal((5, 2))
    conv = fd.asarray if device else np.asarray
    Ad = conv(A)
    fd.reset_counters()
    sol = nf.solve(lambda t, y: y @ Ad.T, conv(y0), [0.0, 2.0, 4.0], rtol=1e-6, atol=1e-8)
    assert sol.stats["n_rejected"] >= 0 and sol.stats["n_steps"] > 10
    assert sol.host_syncs == sol.stats["n_steps"] + 4     # finite f(t0, y0), 3 norms of the first step
    sol1 = nf.solve(lambda t, y: y @ Ad.T, conv(y0), [0.0, 4.0], first_step=0.1)
    assert sol1.host_syncs == sol1.stats["n_steps"] + 1
    if device:            # every implicit conversion went through the counted places
        assert fd.IMPLICIT_SYNCS[0] == sol.host_syncs + sol1.host_syncs


# ======================================================================== the models on the fake device
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_model_step_on_fake_device_equals_numpy(name):
    """Same loss and gradients (float64, bit-level: the same NumPy arithmetic), same counts."""
    ref = WORKLOADS[name]("numpy")
    fd.reset_counters()
    got = WORKLOADS[name]("fakedevice")
    assert got.kind == "DeviceArray" and ref.kind == "ndarray"
    assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert got.stats == ref.stats and got.syncs == ref.syncs
    assert fd.IMPLICIT_SYNCS[0] == got.syncs, "a host sync bypassed nodeform.backend.host_float/host_bool"
    assert fd.TRANSFERS["d2h"] == 1 + len(got.grads)       # only the test reading the results back


def test_odenet_syncs_are_about_one_per_solver_step():
    r = WORKLOADS["odenet"]("fakedevice")
    s = r.stats
    # forward: one per attempted step + 4 before the loop; backward: the same + 1 (finite dL/dy)
    assert s["syncs_forward"] >= s["steps_forward"] and s["syncs_forward"] <= s["steps_forward"] + 4 + 3
    assert s["syncs_backward"] >= s["steps_backward"] and s["syncs_backward"] <= s["steps_backward"] + 5 + 3
    assert r.syncs == s["syncs_forward"] + s["syncs_backward"] + 1      # + the label check


def test_training_moves_data_to_the_device_once(tmp_path):
    """`train_model` on the fake device: host-to-device copies do not grow with the steps."""
    copies = {}
    for steps in (2, 5):
        fd.reset_counters()
        res = table1.train_model("mlp", epochs=1, out=str(tmp_path / f"r{steps}"), max_steps=steps,
                                 progress=False, backend="fakedevice")
        assert res["settings"]["backend"] == "fakedevice"
        copies[steps] = fd.TRANSFERS["h2d"]
    assert copies[2] == copies[5], copies
    assert copies[5] <= 4 + 2 * 4 + 2, copies     # 4 data arrays, the parameters, the epoch's order


@pytest.mark.parametrize("direction", ["sample", "density"])
def test_planar_nf_baseline_on_fake_device_equals_numpy(direction):
    """Chapter 6's planar NF, both ways (the numerical inverse included): same values, no sync."""
    from nodeform.models.cnf import PlanarNF
    x = np.random.default_rng(0).standard_normal((5, 2))
    m = PlanarNF(dim=2, n_layers=4, direction=direction, rng=0)
    ref_lp, (ref_s, ref_l) = m.log_prob(x).data, m.sample(5, rng=1)
    m.to(backend="fakedevice")
    fd.reset_counters()
    s0 = backend.sync_count()
    lp, (s, lq) = m.log_prob(fd.asarray(x)), m.sample(5, rng=1)
    assert type(lp.data).__name__ == "DeviceArray" and type(s.data).__name__ == "DeviceArray"
    for got, want in ((lp.data, ref_lp), (s.data, ref_s.data), (lq.data, ref_l.data)):
        np.testing.assert_array_equal(fd._host(got), want)
    assert backend.sync_count() == s0 and fd.IMPLICIT_SYNCS[0] == 0


def test_adams_on_fake_device_counts_every_sync():
    """Chapter 5's Adams PECE on device arrays: NumPy's result; order selection reads up to 4 norms a step."""
    A = np.array([[-0.5, 2.0], [-2.0, -0.5]])
    y0 = np.random.default_rng(0).standard_normal((5, 2))
    ref = nf.solve(lambda t, y: y @ A.T, y0, [0.0, 4.0], method="adams", rtol=1e-6, atol=1e-8)
    Ad = fd.asarray(A)
    fd.reset_counters()
    sol = nf.solve(lambda t, y: y @ Ad.T, fd.asarray(y0), [0.0, 4.0], method="adams", rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(fd._host(sol.ys), ref.ys)
    assert sol.stats == ref.stats and sol.host_syncs == ref.host_syncs == fd.IMPLICIT_SYNCS[0]
    assert sol.stats["n_steps"] <= sol.host_syncs <= 4 * sol.stats["n_steps"] + 6
