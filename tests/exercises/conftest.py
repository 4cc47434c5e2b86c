"""Fixtures of the exercise tests: each chapter's definitions, loaded without its experiments.

Every test here carries the marker of one exercise (``pytest -m ex2_3``); the tests
check behaviour, never source text, and say what was expected, what came back, and
what to look at (``python -m nodeform classroom check ex2_3`` runs one exercise).
"""
from pathlib import Path

import pytest

from nodeform.classroom import load_definitions

CHAPTERS = Path(__file__).resolve().parent.parent.parent / "chapters"


def _chapter(stem):
    return load_definitions(CHAPTERS / f"{stem}.py")


@pytest.fixture(scope="session")
def ch01():
    """chapters/ch01_autodiff.py: Tiny, its primitives, toposort, gradients, Scalar."""
    return _chapter("ch01_autodiff")


@pytest.fixture(scope="session")
def ch02():
    """chapters/ch02_ode_solvers.py: euler, rk_step, error_norm, ..., adaptive_solve."""
    return _chapter("ch02_ode_solvers")


@pytest.fixture(scope="session")
def ch03():
    """chapters/ch03_adjoint.py: start_values, ..., backward_sweep, rk_step_tensor."""
    return _chapter("ch03_adjoint")


@pytest.fixture(scope="session")
def ch04():
    """chapters/ch04_odenet_mnist.py: resnet_shared, resnet_midpoint, the ODE block."""
    return _chapter("ch04_odenet_mnist")


@pytest.fixture(scope="session")
def ch06():
    """chapters/ch06_cnf.py: the planar CNF written out, invert_planar_newton."""
    return _chapter("ch06_cnf")


@pytest.fixture(scope="session")
def ch08():
    """chapters/ch08_gpu.py: softplus_forward and its primitive SOFTPLUS."""
    return _chapter("ch08_gpu")
