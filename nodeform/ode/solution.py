"""What a solve returns: the states, the statistics, and how it ended."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Solution"]


@dataclass
class Solution:
    """The result of :func:`nodeform.solve`.

    Attributes
    ----------
    ts : ndarray, shape (n_out,)
        The output times, as given.
    ys : ndarray, shape (n_out, *y0.shape), or list of Tensors
        States at ``ts`` (``ys[0]`` is ``y0``). On a failed solve with ``throw=False``
        the outputs not reached are NaN. A list when ``y0`` was a Tensor.
    stats : dict
        ``nfev`` (evaluations of f, including the first-step probe), ``n_steps``
        (attempted), ``n_accepted``, ``n_rejected``.
    status : int
        0 on success, the negative code of the :class:`SolverError` subclass otherwise.
    message : str
        What happened, in words.
    method : str
    engine : str
        ``"reference"`` or ``"numba"``.
    trace : dict of ndarray or None
        With ``trace=True`` (adaptive methods): per attempted step ``t`` (start),
        ``h`` (signed), ``error_ratio`` and ``accepted`` (bool); ``method="adams"`` adds
        ``order``, the order of each attempted step.
    host_syncs : int
        Device values turned into Python numbers during the solve (the controller's error
        ratio, one per attempted step, and a few at the start): each one is a host sync on
        a GPU. Counted on NumPy too (:func:`nodeform.backend.host_float`); 0 for Numba.
    """

    ts: np.ndarray
    ys: object
    stats: dict
    status: int = 0
    message: str = "The solver reached the last output time."
    method: str = ""
    engine: str = "reference"
    trace: dict | None = field(default=None, repr=False)
    host_syncs: int = field(default=0, repr=False)

    @property
    def success(self):
        """True when the solve reached the last output time."""
        return self.status == 0

    def __repr__(self):
        shape = getattr(self.ys, "shape", None)
        shape = tuple(shape) if shape is not None else f"list of {len(self.ys)}"
        return (f"Solution(method={self.method!r}, engine={self.engine!r}, status={self.status}, "
                f"ys.shape={shape}, stats={self.stats}, message={self.message!r})")
