"""A tiny training run for the kill tests of tests/test_train_faults.py, importable and runnable.

``python tests/train_fault_child.py FOLDER STEPS`` trains :func:`setup`'s model with a
checkpoint after every step (so most of its time is spent saving) and
``resume="auto"``, and touches ``FOLDER/ready-<pid>`` once its signal handlers
are in place, so the test knows when a signal will be caught.
"""
import os
import sys

import numpy as np

from nodeform import data, nn, optim, train


def setup(seed=0):
    """Model, optimizer, batches and loss of a tiny MLP on random 2-class data, every source of randomness in play."""
    rng = np.random.default_rng(123)
    x = rng.standard_normal((64, 1, 4, 4))
    y = (x.reshape(64, -1).sum(1) > 0).astype(np.int64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8, rng=seed), nn.Tanh(), nn.Linear(8, 2, rng=seed + 1))
    opt = optim.SGD(model.parameters(), lr=optim.StepLR(0.1, 7, 0.5), momentum=0.9)
    batches = data.BatchIterator(x, y, batch_size=10, seed=seed, transform=data.crop_transform(pad=1))

    def loss_fn(model, batch, rng):
        xb, yb = batch
        noisy = xb + 0.01 * rng.standard_normal(xb.shape)       # the loop's generator is used too
        return train.classification_loss(model, (noisy, yb))
    return model, opt, batches, loss_fn


def run(folder, steps, on_step=None, **kw):
    """``fit`` as the kill tests run it: checkpoint and log line every step, ``resume="auto"`` (``kw`` overrides)."""
    model, opt, batches, loss_fn = setup()

    def loss(model, batch, rng):
        if on_step is not None:
            on_step()
        return loss_fn(model, batch, rng)
    kw = dict(dict(checkpoint_path=os.path.join(folder, "ck.npz"), checkpoint_every=1, resume="auto",
                   log_path=os.path.join(folder, "log.jsonl"), log_every=1, progress=False), **kw)
    out = train.fit(model, opt, batches, loss, steps, **kw)
    return model, opt, batches, out


if __name__ == "__main__":
    import warnings
    warnings.simplefilter("ignore")          # "starting the log again" is expected after an early kill
    folder, steps = sys.argv[1], int(sys.argv[2])
    marker = os.path.join(folder, f"ready-{os.getpid()}")

    def ready():
        if not os.path.exists(marker):
            open(marker, "w").close()
    run(folder, steps, on_step=ready)
