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


def pytest_configure(config):
    """One marker per registered exercise (`pytest -m ex2_3`; chapters/exercises.toml)."""
    from pathlib import Path

    from nodeform.classroom import load_registry
    for ex in load_registry(Path(__file__).resolve().parent.parent).values():
        config.addinivalue_line("markers", f"{ex.id}: {ex.title}")
