"""Shared test problems with exact solutions (plain Python, reference engine)."""
import numpy as np
from scipy.linalg import expm

# y' = M y, M with a decaying rotation: exact solution expm(M t) y0
M = np.array([[-0.1, -1.0], [1.0, -0.1]])
Y0 = np.array([1.0, 0.5])


def linear(t, y):
    return M @ y


def linear_exact(t, y0=Y0, t0=0.0):
    return expm(M * (t - t0)) @ y0


def harmonic(t, y):
    return np.array([y[1], -y[0]])


def kepler(t, y):
    r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
    return np.array([y[2], y[3], -y[0] / r3, -y[1] / r3])


def kepler_y0(e):
    # perihelion start of an orbit with eccentricity e, period 2 pi
    return np.array([1 - e, 0.0, 0.0, np.sqrt((1 + e) / (1 - e))])


def vdp(t, y, mu=1.0):
    return np.array([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])
