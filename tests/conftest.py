import numpy as np
import pytest

from nodeform.backend import cupy_status


@pytest.fixture
def rng():
    """A seeded generator: every test is reproducible."""
    return np.random.default_rng(20181128)


def _backends():
    cp, reason = cupy_status()
    return [pytest.param("numpy", id="numpy"),
            pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
                cp is None, reason=reason)])]


BACKENDS = _backends()
