"""One family of errors for everything that can go wrong in a solve.

Every error is a :class:`SolverError`. Bad arguments are also ``ValueError``
(so ``except ValueError`` keeps working); failures during the integration carry
where they happened (``t``, ``step``) and the outputs computed so far, so that
``solve(..., throw=False)`` can hand back a partial :class:`~nodeform.ode.Solution`.

The messages follow one pattern: what happened, where, and what to try.
"""
from __future__ import annotations

__all__ = ["SolverError", "SolverArgumentError", "VectorFieldError", "NonFiniteError",
           "StepSizeUnderflowError", "MaxStepsError", "STATUS_SUCCESS"]

#: ``Solution.status`` of a solve that reached the last output time.
STATUS_SUCCESS = 0


class SolverError(Exception):
    """Base class of every nodeform solver error.

    Attributes
    ----------
    status : int
        The negative code a ``Solution`` gets for this failure (0 is success).
    t : float or None
        Time at which the failure happened (``None`` for argument errors).
    step : int or None
        Number of attempted steps when it happened.
    """

    status = -1

    def __init__(self, message, t=None, step=None):
        super().__init__(message)
        self.t = t
        self.step = step
        self.partial = None  # the output states reached before the failure, set by the loops
        self.stats = None    # the counters at the failure, set by the loops


class SolverArgumentError(SolverError, ValueError):
    """An argument breaks a rule (times not monotone, tolerance not positive, ...)."""

    status = -10


class VectorFieldError(SolverArgumentError):
    """``f(t, y)`` returned something of the wrong shape, dtype or type."""

    status = -11


class NonFiniteError(SolverError):
    """The state or the derivative became NaN or infinite."""

    status = -3


class StepSizeUnderflowError(SolverError):
    """The step size shrank below what float64 time can resolve."""

    status = -2


class MaxStepsError(SolverError):
    """``max_steps`` attempted steps were taken before the last output time."""

    status = -1


# ----------------------------------------------------------------------------- status codes
# What the compiled loops return instead of raising (see nodeform.ode._numba_rk).
ST_OK = 0
ST_MAX_STEPS = 1
ST_UNDERFLOW = 2
ST_NONFINITE_START = 3   # f(t0, y0) or y0 is not finite
ST_NONFINITE = 4         # non-finite stages (adaptive: until h underflowed; fixed: at once)
ST_BAD_SHAPE = 5         # f returned the wrong number of entries


# ----------------------------------------------------------------------------- messages
# Shared by the reference loops and the Numba twin (which returns a status code and lets
# Python raise), so both engines fail with the same words.

def max_steps_message(max_steps, t, t_end, h, n_accepted, n_rejected):
    return (f"the solver took `max_steps` = {max_steps} steps and stopped at t = {t:.6g} of "
            f"t_end = {t_end:.6g} (last step size h = {h:.3g}; {n_accepted} accepted, "
            f"{n_rejected} rejected). Try: raise `max_steps`; loosen `rtol`/`atol` if they are "
            "tighter than you need; if h is tiny the dynamics may be stiff here (a fast "
            "transient, a near-singularity) and an explicit method needs many steps.")


def underflow_message(t, step, h, nonfinite_stage=None):
    why = ""
    if nonfinite_stage is not None:
        why = (f" The last rejected tries produced NaN/inf (first in stage {nonfinite_stage}), "
               "so the vector field itself blows up near here.")
    return (f"step size underflow at t = {t:.17g}, step {step}: the step size shrank to "
            f"h = {h:.3g}, too small to advance t in float64.{why} The solution may have a "
            "singularity (finite-time blow-up) at this t, or the dynamics are stiff so that "
            "no explicit step is stable. Try: check `f` near this t; loosen `rtol`/`atol`; "
            "use a stiff (implicit) solver; for a neural vector field, regularize it or lower "
            "the learning rate.")


def nonfinite_message(what, t, step, stage=None):
    where = f" in stage {stage}" if stage is not None else ""
    return (f"non-finite values (NaN or inf) in the {what}{where} at t = {t:.6g}, step {step}. "
            "Try: check `f` for division by zero, log of negatives or overflow; check `y0` and "
            "the parameters for NaN; with a fixed step, a smaller `step_size` (the explicit "
            "method may be unstable at this h).")
