"""Checks of chapter 8's code exercise (chapters/ch08_gpu.py).

References: ``np.logaddexp`` on the host and the library's ``nf.softplus``; the fake
device of ``nodeform.testing_device`` refuses NumPy functions on device arrays. Run with
``python -m nodeform classroom check ex8_2``.
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform import backend
from nodeform import testing_device as fd
from exercise_helpers import close

X = np.array([-800.0, -30.0, -1.0, 0.0, 0.5, 2.0, 30.0, 800.0])


@pytest.mark.ex8_2
def test_ex8_2_forward_on_the_fake_device_is_stable(ch08):
    fd.enable()
    y = ch08.softplus_forward(fd.asarray(X))
    assert backend.is_device_array(y), (
        f"softplus_forward of a device array returned a {type(y).__name__}, not a device "
        "array. Hint: xp = backend.get_xp(x), then only xp functions")
    close(backend.to_numpy(y), np.logaddexp(0.0, X), "softplus at -800 ... 800",
          "log(1 + exp(x)) overflows at x = 800: use xp.logaddexp(0, x) or the max trick",
          rtol=1e-14, atol=1e-300)


@pytest.mark.ex8_2
def test_ex8_2_primitive_gradient_equals_the_library(ch08):
    fd.enable()
    x = nf.Tensor(fd.asarray(X), requires_grad=True)
    ch08.SOFTPLUS(x).sum().backward()
    ref = nf.Tensor(X.copy(), requires_grad=True)
    nf.softplus(ref).sum().backward()
    close(backend.to_numpy(x.grad.data), ref.grad.data, "d softplus / dx on the fake device",
          "the forward's value feeds the given VJP g * sigmoid(x): check the forward first")
