"""A seeded batch iterator that can stop and resume anywhere, bit for bit.

Each epoch's order is a permutation drawn from its own generator,
``default_rng([seed, epoch])``, so epoch 7 is the same whether or not epochs 0-6
ran in this process. The iterator's whole state is ``(epoch, position)``; a
training loop saves it in a checkpoint and :meth:`BatchIterator.load_state_dict`
puts the stream back exactly where it was. Random augmentation gets its own
generator per batch, ``default_rng([seed, epoch, batch, 1])``, for the same reason.

The arrays may live on a GPU (CuPy): the order is drawn on the host and copied to
the device once per epoch, and batches are gathered there, so no data crosses the
bus per batch.
"""
from __future__ import annotations

import numpy as np

from nodeform.backend import get_xp, is_device_array, to_numpy


class BatchIterator:
    """Mini-batches of one or more arrays that share their first axis.

    Parameters
    ----------
    *arrays : ndarray, each of shape (N, ...)
    batch_size : int
    shuffle : bool
        Draw a new order every epoch (from ``seed`` and the epoch number).
    seed : int
    drop_last : bool
        Skip the last, smaller batch of an epoch (every batch then has ``batch_size`` rows).
    transform : callable, optional
        ``transform(batch_tuple, rng) -> batch_tuple``, e.g. random crops; ``rng`` is
        seeded from ``(seed, epoch, batch index)``.

    Examples
    --------
    >>> it = BatchIterator(np.arange(10), batch_size=4, seed=0)
    >>> [b[0].tolist() for b in it.epoch()][0]      # one epoch: 3 batches
    [4, 6, 2, 7]
    >>> x, = it.next()                             # or an endless stream across epochs
    """

    def __init__(self, *arrays, batch_size, shuffle=True, seed=0, drop_last=False, transform=None):
        if not arrays:
            raise ValueError("`BatchIterator` needs at least one array.")
        n = len(arrays[0])
        for k, a in enumerate(arrays):
            if len(a) != n:
                raise ValueError(f"array {k} has {len(a)} rows but array 0 has {n}; all arrays "
                                 "must share their first axis.")
        if not 1 <= batch_size <= n:
            raise ValueError(f"`batch_size` must be between 1 and the number of rows ({n}), got "
                             f"{batch_size}.")
        self.arrays, self.n = arrays, n
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.drop_last, self.transform = bool(drop_last), transform
        self.epoch_index, self.position = 0, 0
        self._order_epoch, self._order, self._order_dev = None, None, {}

    def __len__(self):
        """Batches per epoch."""
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self, epoch):
        """The row order of ``epoch`` (a permutation, or ``arange`` without shuffling).

        A NumPy array; when the arrays live on a GPU, :meth:`next` indexes them with a
        device copy of it, made once per epoch (not per batch).
        """
        if self._order_epoch != epoch:
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(self.n)
                           if self.shuffle else np.arange(self.n))
            self._order_epoch = epoch
            self._order_dev = {}
        return self._order

    def _index(self, a, epoch):
        """The order of ``epoch`` in the array module of ``a`` (copied to a device once per epoch)."""
        order = self.order(epoch)
        if not is_device_array(a):
            return order
        xp = get_xp(a)
        key = id(xp)
        if key not in self._order_dev:
            self._order_dev[key] = xp.asarray(order)
        return self._order_dev[key]

    def next(self):
        """The next batch of the endless stream (a tuple, one entry per array); moves on to the next epoch."""
        if self.position >= len(self):
            self.epoch_index, self.position = self.epoch_index + 1, 0
        b = self.position
        lo, hi = b * self.batch_size, (b + 1) * self.batch_size
        batch = tuple(a[self._index(a, self.epoch_index)[lo:hi]] for a in self.arrays)
        if self.transform is not None:
            batch = self.transform(batch, np.random.default_rng([self.seed, self.epoch_index, b, 1]))
        self.position += 1
        return batch

    __next__ = next

    def __iter__(self):
        return self

    def epoch(self):
        """Yield the remaining batches of the current epoch (all of them at its start)."""
        if self.position >= len(self):
            self.epoch_index, self.position = self.epoch_index + 1, 0
        start = self.epoch_index
        while self.epoch_index == start and self.position < len(self):
            yield self.next()

    def state_dict(self):
        """``{"epoch": array, "position": array}``: where the stream stands."""
        return {"epoch": np.asarray(self.epoch_index, np.int64),
                "position": np.asarray(self.position, np.int64)}

    def load_state_dict(self, state):
        """Continue from a saved :meth:`state_dict`."""
        self.epoch_index, self.position = int(to_numpy(state["epoch"])), int(to_numpy(state["position"]))
        return self
