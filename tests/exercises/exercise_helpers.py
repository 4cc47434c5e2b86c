"""Assertions with messages for a student (expected, got, hint)."""
import numpy as np


def close(got, expected, what, hint, rtol=1e-12, atol=1e-14):
    """Assert ``got`` equals ``expected`` to the tolerances, with a message for a student."""
    got_a, exp_a = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
    assert got_a.shape == exp_a.shape, (
        f"{what}: expected shape {exp_a.shape}, got {got_a.shape}. Hint: {hint}")
    if not np.allclose(got_a, exp_a, rtol=rtol, atol=atol):
        worst = np.abs(got_a - exp_a).max()
        raise AssertionError(
            f"{what}: expected {np.array2string(exp_a.ravel()[:6], precision=6)}"
            f"{' ...' if exp_a.size > 6 else ''}, got "
            f"{np.array2string(got_a.ravel()[:6], precision=6)}"
            f"{' ...' if got_a.size > 6 else ''} (max difference {worst:.2e}, "
            f"allowed rtol {rtol:g}). Hint: {hint}")
