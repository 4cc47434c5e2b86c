"""One small training loop for every chapter, that never loses work.

:func:`fit` runs ``steps`` optimizer steps and does the chores around them:

* a tqdm progress bar showing the loss and whatever metrics the loss function reports;
* a metrics log, one JSON object per line (``{"step": 100, "loss": 0.31, ...}``),
  easy to read back with :func:`read_log`;
* evaluation every ``eval_every`` steps and at the end;
* a checkpoint every ``checkpoint_every`` steps, at the end, and on Ctrl-C. It
  holds everything that decides what happens next: the model's parameters, the
  optimizer's slots and step count, the batch iterator's position, the NumPy
  generator's state and the step. It is written atomically and checksummed
  (:mod:`nodeform.nn.serialize`).

``resume=True`` loads the checkpoint and continues exactly: ``N`` steps in one
run and ``N/2`` + resume + ``N/2`` give the same parameters bit for bit.

Ctrl-C is caught between steps: the first one lets the current step finish,
writes the checkpoint and then raises ``KeyboardInterrupt``; a second one stops
at once.

A loss function has the signature ``loss_fn(model, batch, rng)`` and returns a
scalar Tensor, or ``(loss, metrics)`` with a dict of floats to show and log.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np

from nodeform.autodiff.tensor import Tensor, no_grad
from nodeform.nn.losses import accuracy, cross_entropy
from nodeform.nn.serialize import load_arrays, save_arrays

#: Steps between two lines of the metrics log when ``log_every`` is not given.
DEFAULT_LOG_EVERY = 10


# ======================================================================== checkpoints
def save_checkpoint(path, model, optimizer, step, rng=None, batches=None, extra=None):
    """Write the full training state to ``path`` atomically.

    Arrays are stored under ``model/<name>``, ``optim/<key>`` and ``data/<key>``;
    the step, the generator state and ``extra`` go into the JSON metadata.
    """
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    if batches is not None:
        arrays.update({f"data/{k}": v for k, v in batches.state_dict().items()})
    meta = {"step": int(step), "model": type(model).__name__, "optimizer": type(optimizer).__name__,
            "rng": rng.bit_generator.state if rng is not None else None, "extra": extra or {}}
    save_arrays(path, arrays, meta)


def load_checkpoint(path, model, optimizer, rng=None, batches=None):
    """Restore what :func:`save_checkpoint` wrote, in place; returns the metadata (``meta["step"]``)."""
    arrays, meta = load_arrays(path)
    part = {p: {k[len(p) + 1:]: v for k, v in arrays.items() if k.startswith(p + "/")}
            for p in ("model", "optim", "data")}
    model.load_state_dict(part["model"])
    optimizer.load_state_dict(part["optim"])
    if batches is not None:
        if not part["data"]:
            raise KeyError(f"checkpoint {path!r} has no batch iterator state; it was written without "
                           "`batches`.")
        batches.load_state_dict(part["data"])
    if rng is not None and meta.get("rng") is not None:
        rng.bit_generator.state = meta["rng"]
    return meta


# ======================================================================== metrics log
def read_log(path):
    """The records of a JSON-lines metrics log, as a list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _truncate_log(path, step):
    """Drop log lines written after ``step`` (they belong to a run that is being resumed)."""
    if not os.path.exists(path):
        return
    keep = [r for r in read_log(path) if r.get("step", 0) <= step]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)


# ======================================================================== Ctrl-C between steps
class _InterruptGuard:
    """Turn the first SIGINT into a flag checked between steps; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# ======================================================================== the loop
def _split(out):
    if isinstance(out, tuple):
        loss, metrics = out
    else:
        loss, metrics = out, {}
    if not isinstance(loss, Tensor) or loss.data.size != 1:
        raise TypeError("`loss_fn` must return a scalar Tensor, or (loss, metrics dict); got "
                        f"{type(loss).__name__} of shape {getattr(loss, 'shape', None)}.")
    return loss, {k: float(v) for k, v in metrics.items()}


def fit(model, optimizer, batches, loss_fn, steps, *, eval_fn=None, eval_every=0,
        checkpoint_path=None, checkpoint_every=0, log_path=None, log_every=DEFAULT_LOG_EVERY,
        resume=False, rng=None, progress=True, desc="train"):
    """Train ``model`` for ``steps`` optimizer steps in total (counting steps done before a resume).

    Parameters
    ----------
    model : Module
    optimizer : Optimizer
        Built on ``model.parameters()``.
    batches : BatchIterator
        Or anything with ``next()`` (and ``state_dict``/``load_state_dict`` for checkpoints).
    loss_fn : callable
        ``loss_fn(model, batch, rng) -> loss`` or ``(loss, metrics)``.
    steps : int
        The step to stop at.
    eval_fn : callable, optional
        ``eval_fn(model) -> dict`` of floats; called in eval mode under ``no_grad``.
    eval_every, checkpoint_every, log_every : int
        Period in steps; 0 means only at the end (evaluation, checkpoint) or never (log).
    checkpoint_path : str, optional
    log_path : str, optional
        JSON-lines file; appended to, and cut back to the checkpoint's step on resume.
    resume : {False, True, "auto"}
        ``True`` loads ``checkpoint_path`` (it must exist); ``"auto"`` loads it if it exists.
    rng : numpy Generator, optional
        Handed to ``loss_fn`` (noise, sampling) and saved in checkpoints; default seed 0.
    progress : bool
        Show the tqdm bar.

    Returns
    -------
    dict
        ``step`` reached, last training ``metrics`` (with ``loss``), and ``evals``: a list
        of ``{"step": ..., **eval_metrics}`` from this call.
    """
    from tqdm.auto import tqdm

    if resume not in (False, True, "auto"):
        raise ValueError(f"`resume` must be False, True or 'auto', got {resume!r}.")
    if (resume or checkpoint_every) and checkpoint_path is None:
        raise ValueError("`resume` and `checkpoint_every` need `checkpoint_path`.")
    rng = np.random.default_rng(0) if rng is None else rng
    step = 0
    if resume == "auto" and not os.path.exists(checkpoint_path):
        resume = False
    if resume:
        step = load_checkpoint(checkpoint_path, model, optimizer, rng, batches)["step"]
        if log_path is not None:
            _truncate_log(log_path, step)

    def checkpoint():
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, step, rng, batches)

    def evaluate():
        model.eval()
        with no_grad():
            res = {k: float(v) for k, v in eval_fn(model).items()}
        model.train()
        evals.append(dict(step=step, **res))
        write_log(dict(step=step, **{f"eval_{k}": v for k, v in res.items()}))
        return res

    def write_log(record):
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    evals, metrics = [], {}
    bar = tqdm(total=steps, initial=step, desc=desc, disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    model.train()
    phase, before = "between", None
    try:
        with _InterruptGuard() as guard:
            while step < steps:
                # What the step is about to consume, so an exception inside it can be undone.
                before = (batches.state_dict() if hasattr(batches, "state_dict") else None,
                          rng.bit_generator.state)
                phase = "compute"
                batch = batches.next()
                loss, metrics = _split(loss_fn(model, batch, rng))
                optimizer.zero_grad()
                loss.backward()
                phase = "update"
                optimizer.step()
                step += 1
                phase = "between"
                metrics = dict(loss=float(loss.item()), **metrics)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
                if log_every and step % log_every == 0:
                    write_log(dict(step=step, lr=optimizer.current_lr(),
                                   time=round(time.perf_counter() - t0, 3), **metrics))
                if eval_fn is not None and eval_every and step % eval_every == 0 and step < steps:
                    bar.set_postfix({**{k: f"{v:.4g}" for k, v in metrics.items()},
                                     **{f"eval_{k}": f"{v:.4g}" for k, v in evaluate().items()}})
                if checkpoint_every and step % checkpoint_every == 0:
                    checkpoint()
                if guard.requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        bar.close()
        where = f"; checkpoint written to {checkpoint_path}" if checkpoint_path else ""
        if phase == "compute":      # the step never reached the parameters: rewind what it consumed
            if before[0] is not None:
                batches.load_state_dict(before[0])
            rng.bit_generator.state = before[1]
        if phase == "update":       # parameters half updated: keep the last good checkpoint
            where = "; NOT checkpointed (interrupted inside the optimizer step), the last periodic " \
                    "checkpoint is intact"
        else:
            checkpoint()
        print(f"\ninterrupted after step {step}{where}. Continue with `resume=True`.")
        raise
    bar.close()
    if eval_fn is not None:
        evaluate()
    checkpoint()
    return {"step": step, "metrics": metrics, "evals": evals}


# ======================================================================== classification helpers
def classification_loss(model, batch, rng=None):
    """``loss_fn`` for ``(images, labels)`` batches: cross-entropy, reporting accuracy too."""
    x, y = batch
    logits = model(x)
    return cross_entropy(logits, y), {"acc": accuracy(logits, y)}


def evaluate_classifier(model, x, y, batch_size=500):
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in batches, without a graph."""
    total_loss, correct = 0.0, 0.0
    with no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])
            yb = y[i:i + batch_size]
            total_loss += float(cross_entropy(logits, yb, reduction="sum").item())
            correct += accuracy(logits, yb) * len(yb)
    return {"loss": total_loss / len(x), "accuracy": correct / len(x)}
