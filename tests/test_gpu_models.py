"""Parity suite of chapters 4-7 on CuPy: the models on a GPU give NumPy's losses and gradients.

Every test is marked ``gpu`` and skipped, with the reason, where CuPy cannot
allocate on a GPU. Run them with ``python -m pytest -m gpu tests/test_gpu_models.py``.

Tolerances (stated once, here):

* float64 on the GPU against float64 NumPy: ``rtol = 1e-7``. The arithmetic is the
  same but cuBLAS sums in another order, and the adaptive solver turns ulp-level
  differences into slightly different steps only if a ratio sits at 1.0 (it does
  not in these workloads: the step statistics are asserted equal).
* float32 on the GPU (the default there) against the float64 NumPy reference:
  loss within ``rtol = 1e-3``, gradients within ``2e-2`` of the largest entry. The
  solver tolerances are 1e-3 (ODE-Net) and 1e-5 (CNF, latent ODE); float32 has
  6e-8 resolution, and the adjoint's backward solve adds its own error of the
  order of the tolerance.
"""
import numpy as np
import pytest

from nodeform.backend import cupy_status
from nodeform.experiments import table1

from model_workloads import WORKLOADS, assert_close

cp, _reason = cupy_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason=_reason)]

#: float64 on the GPU against float64 NumPy (see the module docstring).
RTOL_F64 = 1e-7
#: float32 on the GPU against float64 NumPy: loss, and gradients relative to their largest entry.
RTOL_F32_LOSS = 1e-3
ATOL_F32_GRAD = 2e-2


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_model_float64_on_gpu_matches_numpy(name):
    ref = WORKLOADS[name]("numpy")
    got = WORKLOADS[name]("cupy")
    assert got.kind == "ndarray" and got.loss == got.loss        # cupy.ndarray; not NaN
    assert_close(got, ref, rtol=RTOL_F64, atol=RTOL_F64)
    nfe = {k: v for k, v in got.stats.items() if not k.startswith("syncs")}
    assert nfe == {k: v for k, v in ref.stats.items() if not k.startswith("syncs")}
    assert got.syncs == ref.syncs          # the counted syncs are the same places on both


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_model_float32_on_gpu_near_float64_reference(name):
    ref = WORKLOADS[name]("numpy")
    got = WORKLOADS[name]("cupy", np.float32)
    np.testing.assert_allclose(got.loss, ref.loss, rtol=RTOL_F32_LOSS)
    for k, (g, r) in enumerate(zip(got.grads, ref.grads)):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=0, atol=ATOL_F32_GRAD * float(np.abs(r).max()) + 1e-6,
                                   err_msg=f"{name} gradient {k}")


def test_train_odenet_on_gpu_matches_numpy(tmp_path):
    """`python -m nodeform train odenet --backend cupy` for 3 steps: NumPy's losses (float64)."""
    runs = {}
    for b in ("numpy", "cupy"):
        res = table1.train_model("odenet", epochs=1, out=str(tmp_path / b), max_steps=3, dtype="float64",
                                 progress=False, backend=b, batch_size=16)
        assert res["settings"]["backend"] == b and len(res["epochs"]) == 1
        runs[b] = res["epochs"][-1]
    for key in ("train_loss", "test_loss", "nfe_forward", "nfe_backward"):
        np.testing.assert_allclose(runs["cupy"][key], runs["numpy"][key], rtol=RTOL_F64, err_msg=key)


def test_numba_engine_refuses_cupy_arrays():
    import nodeform as nf
    numba = pytest.importorskip("numba")

    @numba.njit
    def f(t, y):
        return -y
    with pytest.raises(TypeError, match="CPU only"):
        nf.solve(f, cp.ones(3), [0.0, 1.0])
