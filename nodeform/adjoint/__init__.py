"""Gradients through a solve: the continuous adjoint, backprop through the solver, Numba fields.

Taught in chapters/ch03_adjoint.py.
"""
from nodeform.adjoint.odeint import ADJOINTS, SolveStats, odeint  # noqa: F401
from nodeform.adjoint.numba_field import NumbaField, mlp_field  # noqa: F401
