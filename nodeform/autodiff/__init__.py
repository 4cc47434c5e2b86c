"""Reverse-mode automatic differentiation over NumPy/CuPy arrays (chapter 1).

``tensor.py`` is the tape and the backward pass, ``primitive.py`` the contract of a
primitive, ``vjps.py`` the derivative table, ``functions.py`` the public functions
and operators, ``api.py`` the functional ``grad``/``vjp``. Taught in
``chapters/ch01_autodiff.py``.
"""
from nodeform.autodiff.tensor import (Tensor, no_grad, enable_grad, is_grad_enabled,  # noqa: F401
                                      gradients)
from nodeform.autodiff.primitive import PRIMITIVES, defprim, Primitive  # noqa: F401
from nodeform.autodiff import functions  # noqa: F401  (installs the Tensor operators)
from nodeform.autodiff.api import grad, value_and_grad, vjp  # noqa: F401
