"""nodeform: the Neural ODE paper (Chen et al., NeurIPS 2018) rebuilt from scratch in NumPy and Numba.

The public API is re-exported here; the modules themselves are the place to read.
"""
__version__ = "0.1.0"

from nodeform.backend import DEFAULT_DTYPE, cupy_available, get_xp, to_numpy  # noqa: F401
