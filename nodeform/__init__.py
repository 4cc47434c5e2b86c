"""nodeform: the Neural ODE paper (Chen et al., NeurIPS 2018) rebuilt from scratch in NumPy and Numba.

The public API is re-exported here; the modules themselves are the place to read.
"""
__version__ = "0.1.0"

from nodeform import memory as _memory

_memory.apply_default()   # fewer page faults: see nodeform/memory.py

from nodeform.backend import DEFAULT_DTYPE, cupy_available, get_xp, to_numpy  # noqa: F401,E402

# ---- autodiff (chapter 1)
from nodeform.autodiff import (Tensor, no_grad, enable_grad, gradients, grad,  # noqa: F401,E402
                               value_and_grad, vjp, defprim)
from nodeform.autodiff.functions import (  # noqa: F401,E402
    add, sub, mul, div, power, maximum, minimum, where, neg, exp, log, sqrt, sin, cos, tanh,
    sigmoid, relu, softplus, elu, absolute, abs, sum, mean, max, logsumexp, log_softmax, softmax,
    square, reshape, transpose, swapaxes, broadcast_to, getitem, pad, concatenate, stack, matmul,
    einsum, astype)
from nodeform.gradcheck import gradcheck, GradcheckResult  # noqa: F401,E402

# ---- ODE integrators (nodeform/ode, issue 3)
from nodeform.ode import (BOSH3, DOPRI5, EULER, MIDPOINT, RK4, TSIT5,  # noqa: F401,E402
                          ButcherTableau, MaxStepsError, NonFiniteError, Solution,
                          SolverArgumentError, SolverError, StepSizeUnderflowError,
                          VectorFieldError, solve)

# ---- gradients through a solve (nodeform/adjoint): odeint on Tensors and on arrays
# (array solves pass straight through to nodeform.ode.odeint)
from nodeform.adjoint import NumbaField, SolveStats, mlp_field, odeint  # noqa: F401,E402

# ---- networks, optimizers, data
from nodeform import nn, optim, data  # noqa: F401,E402
