"""The Runge–Kutta state combination as one primitive of the tape (backprop through the solver).

Every state an explicit RK step builds is ``y + h sum_j w_j K_j``: the stage inputs
(weights ``a_ij``), the propagated solution of a method without FSAL (``b_j``), and
a dense-output value (``w_j(theta)``). Written with Tensor ``+`` and ``*`` that is
two recorded operations per term, each keeping its partial sum alive on the tape
until ``backward()`` — for dopri5 about 50 full-size arrays per step that no
gradient needs. As one primitive it is one node that keeps nothing but references
to ``y`` and the ``K_j``, which the tape holds anyway.

The combination is linear, so its VJP is read off directly: with output cotangent
``g``,

    d/dy   = g
    d/dK_j = g * (h w_j)

(``h`` and the weights are Python floats: the step sequence is fixed during the
backward pass, see :mod:`nodeform.adjoint.backprop`). Both are written with Tensor
operations, so the VJP can itself be differentiated (``create_graph=True``); the
second derivative of a linear map is zero, which the tape finds on its own.

The forward code is :func:`nodeform.ode.rk.combine_arrays`, the one the array
engine runs, so a solve on Tensors gives the same values to the bit as on arrays.
"""
from __future__ import annotations

from nodeform.autodiff.primitive import defprim
from nodeform.autodiff.tensor import Tensor  # noqa: F401  (rk.combine checks for it)
from nodeform.ode.rk import combine_arrays


def _rk_combine_vjp(i, g, ans, y, *ks, weights, h):
    """Cotangent of argument ``i``: ``g`` for ``y`` (i = 0), ``g * (h w_j)`` for ``K_j``."""
    if i == 0:
        return g
    return g * (h * weights[i - 1])


#: ``rk_combine(y, *ks, weights, h)``: ``y + h sum_j w_j k_j`` on Tensors, one node.
rk_combine = defprim("rk_combine", combine_arrays, vjp_i=_rk_combine_vjp)
