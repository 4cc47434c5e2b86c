"""Random-crop augmentation: pad by 4, cut a random 28x28 window (the usual MNIST/CIFAR recipe)."""
from __future__ import annotations

import numpy as np

#: Zero border added before cropping: shifts of up to 4 pixels, as in the ODE-Net paper's code.
CROP_PAD = 4


def random_crop(x, rng, pad=CROP_PAD, size=None):
    """Zero-pad each image by ``pad`` and cut a window of ``size`` at a random offset per image.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    rng : numpy Generator
    pad : int
    size : (int, int), optional
        Output height and width; defaults to (H, W), so the image is shifted.

    Returns
    -------
    ndarray, shape (N, C, size[0], size[1])
    """
    if x.ndim != 4:
        raise ValueError(f"`random_crop`: `x` has shape {x.shape}; expected (N, C, H, W).")
    n, c, h, w = x.shape
    sh, sw = (h, w) if size is None else size
    if sh > h + 2 * pad or sw > w + 2 * pad:
        raise ValueError(f"`random_crop`: a {sh}x{sw} window does not fit a {h}x{w} image padded by {pad}.")
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    di = rng.integers(0, h + 2 * pad - sh + 1, n)
    dj = rng.integers(0, w + 2 * pad - sw + 1, n)
    rows = di[:, None] + np.arange(sh)[None, :]                        # (N, sh)
    cols = dj[:, None] + np.arange(sw)[None, :]                        # (N, sw)
    return xp[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
              rows[:, None, :, None], cols[:, None, None, :]]


def crop_transform(pad=CROP_PAD):
    """A :class:`~nodeform.data.BatchIterator` transform: random-crop the first array of each batch."""
    def transform(batch, rng):
        return (random_crop(batch[0], rng, pad),) + tuple(batch[1:])
    return transform
