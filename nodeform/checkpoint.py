"""Training checkpoints: the whole state of a run in one checked file, the last ``keep`` kept, loaded all or nothing.

A checkpoint holds everything that decides what happens next: the model's
parameters and buffers, the optimizer's slots and step count, the batch
iterator's position, the NumPy generator's state and the step. The file format,
the atomic write and the checks on reading are those of :mod:`nodeform.nn.serialize`.

Three promises, each with a test in ``tests/test_train_faults.py``:

* **Only good states are saved.** :func:`save_checkpoint` refuses parameters or
  optimizer slots that hold NaN or infinity (:class:`NonFiniteParameterError`).
* **Loading is all or nothing.** :func:`read_checkpoint` checks the whole file
  against the model, the optimizer, the generator and the batch iterator
  (names, shapes, dtypes, finiteness, the generator's kind) before anything is
  assigned, and :func:`load_checkpoint` restores the previous state if an
  assignment still fails. Every problem is a :class:`CheckpointError`.
* **A damaged newest file is not the end.** With ``keep=k`` the ``k - 1``
  previous versions are kept (``ck.1.npz`` is the newest of them) and
  :func:`load_latest_checkpoint` falls back to the newest one that loads.
"""
from __future__ import annotations

import copy

import numpy as np

from nodeform.backend import get_xp
from nodeform.nn.serialize import CheckpointError, existing_versions, load_arrays, save_arrays
from nodeform.train_errors import NonFiniteParameterError

#: Versions kept by default: the newest and the one before it, so a newest file that was
#: damaged after it was written (bit rot, a disk that lied about fsync) still leaves one to resume from.
DEFAULT_KEEP = 2


# ======================================================================== saving
def nonfinite_entries(model, optimizer=None):
    """Names of the parameters, buffers (and optimizer slots) that hold NaN or infinity."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    bad = [name for name, a in named if not _finite(getattr(a, "data", a))]
    if optimizer is not None:
        for slot, arrs in optimizer.slots.items():
            bad += [f"optimizer slot {slot}.{i}" for i, a in enumerate(arrs) if a is not None and not _finite(a)]
    return bad


def _finite(a):
    xp = get_xp(a)
    return a.dtype.kind not in "fc" or bool(xp.isfinite(a).all())


def save_checkpoint(path, model, optimizer, step, rng=None, batches=None, extra=None, *, keep=None):
    """Write the full training state to ``path`` atomically.

    Arrays are stored under ``model/<name>``, ``optim/<key>`` and ``data/<key>``;
    the step, the generator state and ``extra`` go into the JSON metadata.

    Parameters
    ----------
    path : str or PathLike
    model : Module
    optimizer : Optimizer
    step : int
    rng : numpy Generator, optional
    batches : BatchIterator, optional
    extra : dict, optional
        JSON-able; comes back as ``meta["extra"]``.
    keep : int, optional
        Versions to keep (see :func:`nodeform.nn.save_arrays`); ``None`` replaces ``path`` only.

    Raises
    ------
    NonFiniteParameterError
        A parameter, buffer or optimizer slot holds NaN or infinity; nothing was written.
    CheckpointError
        The folder is not writable or the disk is full; the previous file is intact.
    """
    bad = nonfinite_entries(model, optimizer)
    if bad:
        raise NonFiniteParameterError(
            f"step {step}: NaN or infinity in {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; "
            f"NOT checkpointed, so {path} still holds the last good state. Lower the learning rate or "
            "check the data, then resume with `resume=True`.", step, bad)
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    if batches is not None:
        arrays.update({f"data/{k}": v for k, v in batches.state_dict().items()})
    meta = {"step": int(step), "model": type(model).__name__, "optimizer": type(optimizer).__name__,
            "rng": rng.bit_generator.state if rng is not None else None, "extra": extra or {}}
    save_arrays(path, arrays, meta, keep=keep)


# ======================================================================== reading and checking
def _expected_shapes(model, optimizer):
    named = list(model.named_parameters()) + list(model.named_buffers())
    shapes = {f"model/{k}": tuple(a.shape) for k, a in named}
    for slot in getattr(optimizer, "SLOTS", ()):
        shapes.update({f"optim/{slot}.{i}": tuple(p.shape) for i, p in enumerate(optimizer.params)})
    return shapes


def _check_model(path, state, model):
    named = list(model.named_parameters()) + list(model.named_buffers())
    want = {k: a for k, a in named}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise CheckpointError(f"checkpoint {path!r} does not fit the model {type(model).__name__}: "
                              f"missing {missing}, unexpected {extra}. Build the model it was saved from.")
    for k, a in state.items():
        if a.shape != tuple(want[k].shape) or a.dtype.kind not in "biuf":
            raise CheckpointError(f"checkpoint {path!r}: `{k}` is {a.dtype}{a.shape}, the model has "
                                  f"{want[k].dtype}{tuple(want[k].shape)}.")
        if not _finite(a):
            raise CheckpointError(f"checkpoint {path!r}: `{k}` holds NaN or infinity; a run that had "
                                  "diverged was saved (older nodeform versions did that). Not loaded.")


def _check_optimizer(path, state, optimizer, meta):
    name = meta.get("optimizer")
    if name is not None and name != type(optimizer).__name__:
        raise CheckpointError(f"checkpoint {path!r} holds the state of a {name} optimizer, not of the "
                              f"{type(optimizer).__name__} given; build the same optimizer to resume.")
    count = state.get("step_count")
    if count is None or count.size != 1 or count.dtype.kind not in "iu" or int(count.reshape(())) < 0:
        raise CheckpointError(f"checkpoint {path!r}: the optimizer's `step_count` is missing or not "
                              "a non-negative integer.")
    for k, a in state.items():
        if not _finite(a):
            raise CheckpointError(f"checkpoint {path!r}: optimizer slot `{k}` holds NaN or infinity.")
    probe = copy.copy(optimizer)       # a dry run on a shallow copy: load_state_dict rebinds, never mutates
    try:
        probe.load_state_dict(state)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {path!r}: its optimizer state does not fit "
                              f"{type(optimizer).__name__}: {exc}") from None


def _check_batches(path, state, batches):
    if not state:
        raise CheckpointError(f"checkpoint {path!r} has no batch iterator state; it was written "
                              "without `batches`.")
    now = batches.state_dict()
    if sorted(state) != sorted(now) or any(np.shape(now[k]) != state[k].shape
                                           or state[k].dtype.kind not in "biuf" for k in state):
        raise CheckpointError(f"checkpoint {path!r}: its batch iterator state {sorted(state)} does not "
                              f"fit {type(batches).__name__} (expects {sorted(now)}).")
    if any(state[k].dtype.kind in "iu" and (state[k] < 0).any() for k in state):
        raise CheckpointError(f"checkpoint {path!r}: negative batch iterator position {state}.")


def _check_rng(path, state, rng):
    if state is None:
        raise CheckpointError(f"checkpoint {path!r} has no generator state; it was written without `rng`.")
    probe = type(rng.bit_generator)()
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise CheckpointError(f"checkpoint {path!r}: its generator state does not fit a "
                              f"{type(rng.bit_generator).__name__} ({type(exc).__name__}: {exc}).") from None


def read_checkpoint(path, model, optimizer, rng=None, batches=None):
    """Read ``path`` and check all of it against the objects it will be loaded into; changes nothing.

    Returns
    -------
    parts : dict
        ``{"model": ..., "optim": ..., "data": ...}``, each a dict of arrays.
    meta : dict
        With ``meta["step"]``, ``meta["rng"]`` and ``meta["extra"]``.

    Raises
    ------
    CheckpointError
        Anything wrong with the file or any mismatch with the model, the optimizer,
        the generator or the batch iterator.
    """
    arrays, meta = load_arrays(path, expect=_expected_shapes(model, optimizer))
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint {path!r}: its step {step!r} is not a non-negative integer.")
    if not isinstance(meta.get("extra", {}), dict):
        raise CheckpointError(f"checkpoint {path!r}: its `extra` metadata is not a JSON object.")
    parts = {p: {k[len(p) + 1:]: v for k, v in arrays.items() if k.startswith(p + "/")}
             for p in ("model", "optim", "data")}
    stray = [k for k in arrays if k.split("/", 1)[0] not in parts]
    if stray:
        raise CheckpointError(f"checkpoint {path!r} holds arrays {stray} that no part of training owns.")
    _check_model(path, parts["model"], model)
    _check_optimizer(path, parts["optim"], optimizer, meta)
    if batches is not None:
        _check_batches(path, parts["data"], batches)
    if rng is not None:
        _check_rng(path, meta.get("rng"), rng)
    return parts, meta


def _assign(parts, meta, model, optimizer, rng, batches):
    """Assign checked parts; if anything still fails (or Ctrl-C arrives), put everything back."""
    before = (model.state_dict(), optimizer.state_dict(),
              batches.state_dict() if batches is not None else None,
              rng.bit_generator.state if rng is not None else None)
    try:
        model.load_state_dict(parts["model"])
        optimizer.load_state_dict(parts["optim"])
        if batches is not None:
            batches.load_state_dict(parts["data"])
        if rng is not None:
            rng.bit_generator.state = meta["rng"]
    except BaseException:
        model.load_state_dict(before[0])
        optimizer.load_state_dict(before[1])
        if batches is not None:
            batches.load_state_dict(before[2])
        if rng is not None:
            rng.bit_generator.state = before[3]
        raise


def load_checkpoint(path, model, optimizer, rng=None, batches=None):
    """Restore what :func:`save_checkpoint` wrote, in place, all or nothing; returns the metadata (``meta["step"]``).

    Raises
    ------
    CheckpointError
        See :func:`read_checkpoint`; nothing was changed.
    """
    parts, meta = read_checkpoint(path, model, optimizer, rng, batches)
    _assign(parts, meta, model, optimizer, rng, batches)
    return meta


def load_latest_checkpoint(path, model, optimizer, rng=None, batches=None):
    """Load the newest version of ``path`` that passes every check (see :func:`load_checkpoint`).

    Returns
    -------
    meta : dict
    loaded : str
        The file that was loaded: ``path`` itself, or a kept older version.
    skipped : list of (str, CheckpointError)
        Newer versions that failed, newest first (empty when ``path`` loaded).

    Raises
    ------
    CheckpointError
        No version exists, or none loads (the message gives each one's reason).
    """
    versions = existing_versions(path)
    if not versions:
        raise CheckpointError(f"no checkpoint at {path!r}; check the path, or start without `resume`.")
    skipped = []
    for v in versions:
        try:
            parts, meta = read_checkpoint(v, model, optimizer, rng, batches)
        except CheckpointError as exc:
            skipped.append((v, exc))
            continue
        _assign(parts, meta, model, optimizer, rng, batches)
        return meta, v, skipped
    if len(skipped) == 1:
        raise skipped[0][1]
    raise CheckpointError(f"none of the {len(versions)} kept checkpoints of {path!r} can be loaded; "
                          "nothing was changed. " + " | ".join(str(e) for _, e in skipped))
