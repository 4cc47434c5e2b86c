"""One small training loop for every chapter, that never loses work and never fails silently.

:func:`fit` runs ``steps`` optimizer steps and does the chores around them:

* a tqdm progress bar showing the loss and whatever metrics the loss function reports;
* a metrics log, one JSON object per line (``{"step": 100, "loss": 0.31, ...}``),
  easy to read back with :func:`read_log` (:mod:`nodeform.metrics_log`);
* evaluation every ``eval_every`` steps and at the end;
* a checkpoint every ``checkpoint_every`` steps, at the end, and on Ctrl-C or
  ``SIGTERM``, keeping the last ``keep`` of them (:mod:`nodeform.checkpoint`).
  It holds everything that decides what happens next: the model's parameters,
  the optimizer's slots and step count, the batch iterator's position, the
  NumPy generator's state, the step and the log's length. It is written
  atomically, checksummed and loaded all or nothing.

``resume=True`` loads the newest checkpoint that passes its checks (an older kept
one if the newest is damaged, with a warning) and continues exactly: ``N`` steps
in one run and ``N/2`` + resume + ``N/2`` give the same parameters bit for bit,
and the log is cut back to the checkpoint so no step appears twice.
``resume=False`` refuses to replace an existing checkpoint or log unless
``overwrite=True``.

Nothing is lost silently: a NaN or infinite loss stops training with
:class:`NonFiniteLossError` naming the step (the last good checkpoint stays);
unwritable folders and a too-full disk are reported before the first step.

``SIGINT`` (Ctrl-C) and ``SIGTERM`` (``kill``, container stops, cluster
preemption) are caught between steps: the first one lets the current step
finish, writes the checkpoint and then raises ``KeyboardInterrupt`` (SIGINT) or
``SystemExit(143)`` (SIGTERM, so the process exits with the usual status); a
second one stops at once (the previous checkpoint stays intact). The handlers are
installed only in the main thread and the previous ones are put back before that
last checkpoint is written, so a further signal then acts as it normally would.

A loss function has the signature ``loss_fn(model, batch, rng)`` and returns a
scalar Tensor, or ``(loss, metrics)`` with a dict of floats to show and log.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np

from nodeform.autodiff.tensor import Tensor, no_grad
from nodeform.backend import host_float
from nodeform.checkpoint import (DEFAULT_KEEP, load_checkpoint, load_latest_checkpoint,  # noqa: F401
                                 nonfinite_entries, save_checkpoint)
from nodeform.metrics_log import LogWarning, MetricsLog, read_log, restore_log  # noqa: F401
from nodeform.nn.losses import accuracy, cross_entropy
from nodeform.nn.serialize import CheckpointError, check_folder_writable, existing_versions  # noqa: F401
from nodeform.train_errors import NonFiniteLossError, NonFiniteParameterError, TrainingError  # noqa: F401

#: Steps between two lines of the metrics log when ``log_every`` is not given.
DEFAULT_LOG_EVERY = 10
#: Slack added to the estimated checkpoint size when checking free disk space (zip and JSON overhead).
CHECKPOINT_OVERHEAD_BYTES = 1 << 16


class ResumeWarning(UserWarning):
    """Resuming had to skip or repair something (a damaged checkpoint, a stale log); the message says what."""


# ======================================================================== SIGINT and SIGTERM between steps
class _StopSignals:
    """Turn the first SIGINT or SIGTERM into a request checked between steps; a second one stops at once.

    Only in the main thread (the only one Python delivers signals to). A signal
    that was ignored before (``SIG_IGN``, e.g. SIGINT of a background job) stays
    ignored. The previous handlers are restored on exit.
    """

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
                if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise self.exception(signum)
        self.signum = signum

    def exception(self, signum=None):
        """What the signal turns into: ``KeyboardInterrupt`` for SIGINT, ``SystemExit(128 + signum)`` else."""
        signum = self.signum if signum is None else signum
        return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)

    def name(self, exc):
        if self.signum is not None:
            return signal.Signals(self.signum).name
        return "interrupted" if isinstance(exc, KeyboardInterrupt) else "SystemExit"

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        return False


# ======================================================================== starting a run
def _check_folders(model, optimizer, checkpoint_path, log_path, keep):
    """Fail before the first step if a checkpoint or the log could not be written (folders are created).

    The free space asked for is what the checkpoints will take at their peak: ``keep``
    versions plus the one being written, less the versions already there.
    """
    if checkpoint_path is not None:
        state = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
        size = sum(int(a.nbytes) for a in state) * (1 + len(getattr(optimizer, "SLOTS", ())))
        more = max(1, keep + 1 - len(existing_versions(checkpoint_path)))
        check_folder_writable(os.path.dirname(os.path.abspath(checkpoint_path)),
                              "checkpoint folder (`checkpoint_path`)", CheckpointError,
                              need_bytes=more * (size + CHECKPOINT_OVERHEAD_BYTES))
    if log_path is not None:
        check_folder_writable(os.path.dirname(os.path.abspath(log_path)), "log folder (`log_path`)",
                              TrainingError)


def _start(model, optimizer, rng, batches, checkpoint_path, log_path, resume, overwrite):
    """Load the newest good checkpoint, or make sure starting afresh destroys nothing by accident.

    Returns the step to start from, the checkpoint's ``extra`` metadata (``{}`` when
    starting afresh) and whether a checkpoint was loaded.
    """
    versions = existing_versions(checkpoint_path) if checkpoint_path is not None else []
    auto = resume == "auto"
    if auto:
        resume = bool(versions)
    if resume:
        meta, loaded, skipped = load_latest_checkpoint(checkpoint_path, model, optimizer, rng, batches)
        for bad, exc in skipped:            # set the damaged ones aside so the rotation cannot keep them
            aside = bad + ".corrupt"
            os.replace(bad, aside)
            warnings.warn(f"{exc} -- RESUMED from the older {loaded} (step {meta['step']}) instead; the "
                          f"damaged file was moved to {aside}.", ResumeWarning, stacklevel=3)
        return meta["step"], meta.get("extra") or {}, True
    log_used = log_path is not None and os.path.exists(log_path) and os.path.getsize(log_path) > 0
    if not overwrite:
        if versions:
            raise FileExistsError(f"`checkpoint_path` {checkpoint_path} already holds a checkpoint "
                                  f"({len(versions)} file(s)) and `resume=False` would replace it. Pass "
                                  "`resume=True` to continue that run, `overwrite=True` to start again "
                                  "and replace it, or choose another path.")
        if log_used and not auto:
            raise FileExistsError(f"`log_path` {log_path} already holds a metrics log and `resume=False` "
                                  "would mix a new run into it. Pass `overwrite=True` to start it again, "
                                  "`resume=True` to continue from a checkpoint, or choose another path.")
        if log_used:
            warnings.warn(f"metrics log {log_path} holds records but there is no checkpoint to resume "
                          "from (the run ended before its first one): starting it again.",
                          ResumeWarning, stacklevel=3)
    for v in versions:
        os.remove(v)
    return 0, {}, False


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
        resume=False, rng=None, progress=True, desc="train", keep=DEFAULT_KEEP, overwrite=False):
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
    checkpoint_path : str or PathLike, optional
        Its folder is created if missing; it must be writable with room for a
        checkpoint, which is checked before the first step.
    log_path : str or PathLike, optional
        JSON-lines file (folder created if missing); appended to, and cut back to
        the checkpoint on resume.
    resume : {False, True, "auto"}
        ``True`` loads the newest good checkpoint of ``checkpoint_path`` (one must
        exist); ``"auto"`` does so if one exists and otherwise starts afresh (a log
        left by a run that died before its first checkpoint is started again, with
        a warning). ``False`` starts afresh and refuses to replace an existing
        checkpoint or a non-empty log unless ``overwrite=True``.
    rng : numpy Generator, optional
        Handed to ``loss_fn`` (noise, sampling) and saved in checkpoints; default seed 0.
    progress : bool
        Show the tqdm bar.
    desc : str
        The progress bar's label.
    keep : int
        Checkpoints kept: ``checkpoint_path`` and the ``keep - 1`` before it
        (``ck.1.npz``, ... for ``ck.npz``), so a damaged newest one can be skipped.
    overwrite : bool
        With ``resume=False``: delete the existing checkpoints and empty the log first.

    Returns
    -------
    dict
        ``step`` reached, last training ``metrics`` (with ``loss``), and ``evals``: a list
        of ``{"step": ..., **eval_metrics}`` from this call.

    Raises
    ------
    NonFiniteLossError
        A step's loss was NaN or infinite; that step changed nothing and the last
        checkpoint (from before it) is kept.
    NonFiniteParameterError
        Parameters became NaN or infinite; they were not checkpointed.
    CheckpointError
        No loadable checkpoint to resume from, or the checkpoint folder is not
        writable, or the disk is full.
    FileExistsError
        ``resume=False`` would replace an existing checkpoint or log.
    KeyboardInterrupt, SystemExit
        After SIGINT or SIGTERM, once the checkpoint is written.
    """
    from tqdm.auto import tqdm

    if resume not in (False, True, "auto"):
        raise ValueError(f"`resume` must be False, True or 'auto', got {resume!r}.")
    if (resume or checkpoint_every) and checkpoint_path is None:
        raise ValueError("`resume` and `checkpoint_every` need `checkpoint_path`.")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"`keep` must be a positive int (checkpoints to keep), got {keep!r}.")
    if overwrite and resume:
        raise ValueError(f"`overwrite=True` starts afresh and `resume={resume!r}` continues; pass one of them.")
    checkpoint_path = None if checkpoint_path is None else os.fspath(checkpoint_path)
    log_path = None if log_path is None else os.fspath(log_path)
    rng = np.random.default_rng(0) if rng is None else rng
    _check_folders(model, optimizer, checkpoint_path, log_path, keep)
    step, extra, resumed = _start(model, optimizer, rng, batches, checkpoint_path, log_path, resume, overwrite)
    log = None
    if log_path is not None:
        restore_log(log_path, step, extra.get("log_bytes") if resumed else 0)
        log = MetricsLog(log_path)
    saved_step = step if resumed else None      # the step of the checkpoint on disk
    eval_step = extra.get("eval_step")          # the last step whose evaluation is in the log

    def checkpoint():
        nonlocal saved_step
        if checkpoint_path is None or saved_step == step:
            return
        size = log.sync() if log is not None else None
        save_checkpoint(checkpoint_path, model, optimizer, step, rng, batches, keep=keep,
                        extra={"log_bytes": size, "eval_step": eval_step})
        saved_step = step

    def evaluate():
        nonlocal eval_step
        model.eval()
        with no_grad():
            res = {k: float(v) for k, v in eval_fn(model).items()}
        model.train()
        evals.append(dict(step=step, **res))
        if eval_step != step:           # a resumed finished run does not log its final evaluation twice
            write_log(dict(step=step, **{f"eval_{k}": v for k, v in res.items()}))
        eval_step = step
        return res

    def write_log(record):
        if log is not None:
            log.write(record)

    evals, metrics = [], {}
    bar = tqdm(total=steps, initial=step, desc=desc, disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    model.train()
    phase, before = "between", None
    stop = _StopSignals()
    try:
        with stop:
            while step < steps:
                # What the step is about to consume, so an exception inside it can be undone.
                before = (batches.state_dict() if hasattr(batches, "state_dict") else None,
                          rng.bit_generator.state)
                phase = "compute"
                batch = batches.next()
                loss, metrics = _split(loss_fn(model, batch, rng))
                value = host_float(loss.data.reshape(()))     # the step's one sync outside the solver
                if not math.isfinite(value):
                    raise _nonfinite_loss(step + 1, value, checkpoint_path, saved_step)
                optimizer.zero_grad()
                loss.backward()
                phase = "update"
                optimizer.step()
                step += 1
                phase = "between"
                metrics = dict(loss=value, **metrics)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
                if log_every and step % log_every == 0:
                    write_log(dict(step=step, lr=optimizer.current_lr(),
                                   time=round(time.perf_counter() - t0, 3), **metrics))
                if eval_fn is not None and eval_every and step % eval_every == 0 and step < steps:
                    bar.set_postfix({**{k: f"{v:.4g}" for k, v in metrics.items()},
                                     **{f"eval_{k}": f"{v:.4g}" for k, v in evaluate().items()}})
                if checkpoint_every and step % checkpoint_every == 0:
                    phase = "saving"
                    checkpoint()
                    phase = "between"
                if stop.signum is not None:
                    raise stop.exception()
            bar.close()
            if eval_fn is not None:
                evaluate()
            phase = "saving"
            checkpoint()
            phase = "between"
            bad = nonfinite_entries(model, optimizer) if checkpoint_path is None else []
            if bad:         # (with a checkpoint_path, save_checkpoint has just checked)
                raise NonFiniteParameterError(f"step {step}: NaN or infinity in {', '.join(bad[:5])}; "
                                              "lower the learning rate or check the data.", step, bad)
            if stop.signum is not None:
                raise stop.exception()
    except (KeyboardInterrupt, SystemExit) as exc:
        _on_interrupt(exc, stop.name(exc), phase, before, batches, rng, checkpoint, step,
                      checkpoint_path, saved_step)
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    return {"step": step, "metrics": metrics, "evals": evals}


def _nonfinite_loss(step, value, checkpoint_path, saved_step):
    if checkpoint_path is None:
        kept = "no `checkpoint_path` was given, so nothing is saved"
    elif saved_step is None:
        kept = f"no checkpoint was written yet; {checkpoint_path} was left alone"
    else:
        kept = f"the last good checkpoint, {checkpoint_path} at step {saved_step}, is kept"
    return NonFiniteLossError(f"step {step}: the loss is {value}, not finite; training stopped before "
                              f"this step changed the parameters, and {kept}. Lower the learning rate, "
                              "check the data or the loss for overflow, then resume with `resume=True`.",
                              step, value)


def _on_interrupt(exc, name, phase, before, batches, rng, checkpoint, step, checkpoint_path, saved_step):
    """After SIGINT/SIGTERM (or a KeyboardInterrupt/SystemExit from inside a step): save what is consistent, say so."""
    if phase == "compute":      # the step never reached the parameters: rewind what it consumed
        if before[0] is not None:
            batches.load_state_dict(before[0])
        rng.bit_generator.state = before[1]
    last = f"the last checkpoint (step {saved_step}) is intact" if saved_step is not None else \
        "no checkpoint was written yet"
    if checkpoint_path is None:
        where = "no `checkpoint_path`, nothing saved"
    elif phase == "update":     # parameters half updated: keep the last good checkpoint
        where = f"NOT checkpointed (interrupted inside the optimizer step); {last}"
    elif phase == "saving":     # a second signal cut the checkpoint write: the previous file stands
        where = f"interrupted while writing the checkpoint; {last}"
    else:
        checkpoint()
        where = f"checkpoint written to {checkpoint_path}"
    print(f"\n{name}: stopped after step {step}; {where}. Continue with `resume=True`.", file=sys.stderr)


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
            total_loss += host_float(cross_entropy(logits, yb, reduction="sum").data)
            correct += accuracy(logits, yb) * len(yb)
    return {"loss": total_loss / len(x), "accuracy": correct / len(x)}
