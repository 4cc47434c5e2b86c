"""Integrators: Butcher tableaus, the reference RK engine, its Numba twin, ``odeint``/``solve``.

Layout (one concept per file):

- ``tableaus.py``: :class:`ButcherTableau` (self-validating) and the methods as data.
- ``order_conditions.py``: Butcher's order conditions up to order 5.
- ``rk.py``: one step and dense output in ``xp`` code (arrays and Tensors).
- ``controller.py``: error norm, Hairer's first step, I / PI controllers.
- ``loops.py``: the reference fixed-grid and adaptive loops (what the adjoint drives).
- ``_numba_rk.py``: the same loops compiled with Numba.
- ``adams.py``: variable-order Adams PECE (``method="adams"``); ``_numba_adams.py`` its twin.
- ``api.py``: ``odeint``, ``solve`` and the one engine dispatch; ``solution.py``, ``errors.py``.

Taught in chapters/ch02_ode_solvers.py.
"""
from nodeform.ode.adams import (ADAMS, MAX_ORDER, integrate_adams,  # noqa: F401
                                 integration_coefficients)
from nodeform.ode.api import DEFAULT_ATOL, DEFAULT_RTOL, odeint, select_engine, solve  # noqa: F401
from nodeform.ode.errors import (MaxStepsError, NonFiniteError, SolverArgumentError,  # noqa: F401
                                 SolverError, StepSizeUnderflowError, VectorFieldError)
from nodeform.ode.loops import (MAX_STEPS, integrate, integrate_adaptive,  # noqa: F401
                                integrate_fixed)
from nodeform.ode.rk import dense_eval, rk_step  # noqa: F401
from nodeform.ode import rk_tape  # noqa: F401,E402  (registers the `rk_combine` primitive)
from nodeform.ode.solution import Solution  # noqa: F401
from nodeform.ode.tableaus import (BOSH3, DOPRI5, EULER, METHODS, MIDPOINT, RK4,  # noqa: F401
                                   TSIT5, ButcherTableau, get_tableau)
