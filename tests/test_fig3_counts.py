"""The quantities of the paper's Fig. 3 (chapter 5) on a tiny model are what they claim.

NFE forward is the number of calls of the vector field in the forward solve; NFE
backward of the continuous adjoint is the number of evaluations its backward solve
made, which is also what a plain ``nf.solve`` of the augmented dynamics
``[z, a, a_W]`` (built here by hand with ``nf.vjp``) reports.
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform import nn
from nodeform.models.odenet import ODEBlock


class Counted(nn.Module):
    """f(t, z) = tanh(z W) with a call counter."""

    def __init__(self, W):
        super().__init__()
        self.W = nf.Tensor(W, requires_grad=True)
        self.calls = 0

    def forward(self, t, z):
        self.calls += 1
        return nf.tanh(z @ self.W)


@pytest.mark.parametrize("method", ["dopri5", "adams"])
def test_fig3_nfe_counts_match_calls_and_the_backward_solve(method, rng):
    W = rng.standard_normal((3, 3))
    z0 = rng.standard_normal((4, 3))                      # a batch of 4 states
    c = rng.standard_normal((4, 3))
    tol = 1e-6
    func = Counted(W)
    block = ODEBlock(func, rtol=tol, atol=tol, method=method)
    z1 = block(nf.Tensor(z0))
    n_forward_calls = func.calls                          # parameters are found during the solve
    stats = block.stats
    assert stats.nfe_forward == n_forward_calls > 0
    (z1 * c).sum().backward()
    assert stats.nfe_backward == func.calls - n_forward_calls > 0

    # the same backward solve, written out: s = [z | a | a_W], from t = 1 back to 0
    n, p = z0.size, W.size

    def aug(t, s):
        z, a = s[:n].reshape(4, 3), s[n:2 * n].reshape(4, 3)
        out, vjp_fn = nf.vjp(lambda z, W: nf.tanh(z @ W), z, W)
        g_z, g_W = vjp_fn(a)
        return np.concatenate([out.ravel(), -g_z.ravel(), -g_W.ravel()])

    s1 = np.concatenate([z1.data.ravel(), c.ravel(), np.zeros(p)])
    back = nf.solve(aug, s1, [1.0, 0.0], method=method, rtol=tol, atol=tol)
    assert back.stats["nfev"] == stats.nfe_backward
    # and it lands on the gradient the adjoint gave W
    np.testing.assert_allclose(back.ys[-1][2 * n:].reshape(3, 3), func.W.grad.data, rtol=1e-12,
                               atol=1e-14)
