"""Train one of Table 1's models on MNIST: ``python -m nodeform train odenet|rknet|resnet|mlp``.

The settings are those of the PyTorch + torchdiffeq anchor (``PERF-NOTES.md``):
SGD with momentum 0.9, lr 0.1 multiplied by 0.1 after epochs 9 and 13, batch 128
(the last, smaller batch of an epoch dropped), 15 epochs, no augmentation; the
embedded 4,000 / 1,000 digit split by default, or full IDX files with ``--data``.

Everything goes through :func:`nodeform.train.fit` (progress bar, JSON-lines log,
checkpoints every epoch and on Ctrl-C, exact resume). A run directory holds::

    checkpoint.npz   the full training state (resume with --resume)
    log.jsonl        one line every 10 steps, and the evaluation after every epoch
    results.json     settings, per-epoch metrics, final test error, parameters,
                     NFE, seconds per epoch, peak memory (rewritten after every epoch)

NFE: the progress bar shows ``nfe_f``, the forward evaluations of the current
batch, and ``nfe_b``, the backward evaluations of the *previous* batch (the
backward pass runs after the loss function has reported). The per-epoch means in
``results.json`` pair each batch's forward and backward counts exactly.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

from nodeform import optim
from nodeform.backend import BACKEND_ENV, BACKENDS, get_backend, host_float, resolve_backend
from nodeform.data import BatchIterator, DataNotFoundError, load_mnist
from nodeform.models.odenet import MODELS, build_model
from nodeform.nn.serialize import CheckpointError, load_arrays
from nodeform.train import classification_loss, evaluate_classifier, fit

#: The anchor's settings (PERF-NOTES.md, "Table 1 models in PyTorch + torchdiffeq").
EPOCHS = 15
BATCH_SIZE = 128
LR = 0.1
MOMENTUM = 0.9
LR_DROP_EPOCHS = (9, 13)
#: Test images per evaluation batch (memory stays small; the result does not depend on it).
EVAL_BATCH = 500
#: Settings that must match when a run is resumed (the others may change, e.g. --epochs).
_FIXED = ("model", "dtype", "seed", "batch_size", "data")
DTYPES = {"float32": np.float32, "float64": np.float64}


class TrainingArgumentError(ValueError):
    """A command-line argument of ``train`` is wrong; the message says which and what to do."""


# ======================================================================== data
def load_data(path, dtype):
    """The embedded split (``path=None``) or the IDX files in directory ``path``, checked for 28x28."""
    if path is None:
        split = load_mnist(source="embedded", dtype=dtype)
    else:
        if not os.path.isdir(path):
            raise TrainingArgumentError(
                f"`--data` {path!r} is not a directory. Give a directory holding the four IDX files "
                "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...), or leave "
                "out `--data` for the embedded 5,000-digit subset.")
        try:
            split = load_mnist(source="idx", root=path, dtype=dtype)
        except DataNotFoundError as exc:
            raise TrainingArgumentError(f"`--data` {path!r}: {exc}") from exc
    for name, x, y in (("train", split.x_train, split.y_train), ("test", split.x_test, split.y_test)):
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise TrainingArgumentError(
                f"`--data` {path!r}: the {name} images have shape {x.shape[1:]} each, but the Table 1 "
                "models take 28x28 grayscale digits, (1, 28, 28). Use MNIST or Fashion-MNIST IDX files.")
        if y.min() < 0 or y.max() > 9:
            raise TrainingArgumentError(f"`--data` {path!r}: {name} labels range over "
                                        f"{y.min()}..{y.max()}; expected the classes 0..9.")
    return split


# ======================================================================== one run
def _peak_rss_mib():
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _peak_rss_mib()


def loss_fn(model, batch, rng):
    """Cross-entropy with accuracy and, for the ODE models, the NFE (see the module docstring)."""
    stats = getattr(model, "stats", None)
    nfe_b = stats.nfe_backward if stats is not None else None
    loss, metrics = classification_loss(model, batch)
    if stats is not None:
        metrics["nfe_f"] = model.stats.nfe_forward
        metrics["nfe_b"] = nfe_b
    return loss, metrics


class _Recorder:
    """Per-batch training metrics, grouped into epochs when the evaluation runs."""

    def __init__(self, model):
        self.model, self.batches, self.t_start, self.eval_seconds = model, [], None, 0.0

    def after_step(self, loss, acc):
        stats = getattr(self.model, "stats", None)
        nfe = (stats.nfe_forward, stats.nfe_backward) if stats is not None else (0, 0)
        self.batches.append((loss, acc) + nfe)

    def close_epoch(self):
        b = np.array(self.batches, dtype=np.float64).reshape(-1, 4)
        seconds = time.perf_counter() - self.t_start if self.t_start is not None else float("nan")
        self.batches = []
        return dict(train_loss=float(b[:, 0].mean()), train_acc=float(b[:, 1].mean()),
                    nfe_forward=float(b[:, 2].mean()), nfe_backward=float(b[:, 3].mean()),
                    seconds=seconds)


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def train_model(name, epochs=EPOCHS, data=None, out=None, resume=False, dtype="float32", seed=0,
                batch_size=BATCH_SIZE, max_steps=None, progress=True, backend=None):
    """Train one Table 1 model and write its run directory; returns the results dict.

    Parameters
    ----------
    name : {"odenet", "rknet", "resnet", "mlp"}
    epochs : int
    data : str, optional
        Directory of IDX files; default the embedded split.
    out : str, optional
        Run directory; default ``runs/table1/<name>``.
    resume : bool
        Continue from ``out/checkpoint.npz`` exactly.
    dtype : {"float32", "float64"}
    seed : int
        Initialization, batch order.
    batch_size : int
    max_steps : int, optional
        Stop after this many optimizer steps in total (for tests and quick looks).
    progress : bool
    backend : {"numpy", "cupy"}, optional
        Where the model and the data live; default ``$NODEFORM_BACKEND``, else NumPy. On
        CuPy the whole split is copied to the GPU once, before the first step, and the
        batches are gathered there.

    Returns
    -------
    dict
        What ``results.json`` holds.
    """
    if name not in MODELS:
        raise TrainingArgumentError(f"unknown model `{name}`; choose one of {', '.join(MODELS)}.")
    if dtype not in DTYPES:
        raise TrainingArgumentError(f"`--dtype` must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    for arg, v in (("--epochs", epochs), ("--batch-size", batch_size)):
        if int(v) < 1:
            raise TrainingArgumentError(f"`{arg}` must be >= 1, got {v}.")
    if max_steps is not None and int(max_steps) < 1:
        raise TrainingArgumentError(f"`--max-steps` must be >= 1, got {max_steps}.")
    try:
        backend = resolve_backend(backend)
    except (ValueError, RuntimeError) as exc:
        raise TrainingArgumentError(str(exc)) from None
    xp = get_backend(backend)
    out = out or os.path.join("runs", "table1", name)
    ckpt, log, res_path = (os.path.join(out, f) for f in ("checkpoint.npz", "log.jsonl", "results.json"))
    if resume and not os.path.exists(ckpt):
        raise TrainingArgumentError(f"`--resume`: no checkpoint at {ckpt}; start without --resume "
                                    "(or point `--out` at the run to continue).")
    split = load_data(data, DTYPES[dtype])
    if batch_size > len(split.x_train):
        raise TrainingArgumentError(f"`--batch-size` {batch_size} exceeds the {len(split.x_train)} "
                                    "training images.")
    os.makedirs(out, exist_ok=True)
    settings = dict(model=name, dtype=dtype, seed=int(seed), batch_size=int(batch_size),
                    data=os.path.abspath(data) if data else "embedded", epochs=int(epochs),
                    max_steps=None if max_steps is None else int(max_steps), lr=LR,
                    momentum=MOMENTUM, lr_drop_epochs=list(LR_DROP_EPOCHS),
                    train_size=len(split.x_train), test_size=len(split.x_test), backend=backend)
    done_epochs = []
    if resume:
        done_epochs = _resume_records(res_path, ckpt, settings)
    elif os.path.exists(ckpt):
        raise TrainingArgumentError(f"`--out` {out!r} already holds a run (checkpoint.npz); continue it "
                                    "with `--resume`, or choose another `--out`.")

    model = build_model(name, rng=int(seed), dtype=DTYPES[dtype])
    x_train, y_train, x_test, y_test = split.x_train, split.y_train, split.x_test, split.y_test
    if xp is not np:               # to the device once; every batch is then gathered there
        model.to(backend=backend)
        x_train, y_train, x_test, y_test = (xp.asarray(a) for a in (x_train, y_train, x_test, y_test))
    batches = BatchIterator(x_train, y_train, batch_size=batch_size, seed=int(seed), drop_last=True)
    per_epoch = len(batches)
    schedule = optim.multistep(LR, [e * per_epoch for e in LR_DROP_EPOCHS])
    opt = optim.SGD(model.parameters(), lr=schedule, momentum=MOMENTUM)
    steps = epochs * per_epoch if max_steps is None else min(int(max_steps), epochs * per_epoch)
    rec = _Recorder(model)
    records = list(done_epochs)
    rss0 = _current_rss_mib()

    pending = []                       # the metrics of the step in flight

    def step_loss(model, batch, rng):
        if rec.t_start is None:
            rec.t_start = time.perf_counter()
        loss, metrics = loss_fn(model, batch, rng)
        pending[:] = [(host_float(loss.data.reshape(())), metrics["acc"])]
        return loss, metrics

    def step_then_record(_step=opt.step):
        """The optimizer step, then the step's metrics (after backward: the NFE are complete)."""
        _step()
        rec.after_step(*pending.pop())

    opt.step = step_then_record

    def eval_fn(model):
        t0 = time.perf_counter()
        ev = evaluate_classifier(model, x_test, y_test, EVAL_BATCH)
        step = opt.step_count
        if not rec.batches:                  # a finished run resumed: nothing new to record
            return ev
        train = rec.close_epoch()
        records.append(dict(epoch=len(records) + 1, step=step, lr=schedule(step - 1),
                            test_loss=ev["loss"], test_acc=ev["accuracy"],
                            test_error=100.0 * (1.0 - ev["accuracy"]), **train))
        _write_json(res_path, _results(settings, model, records, rss0))
        rec.t_start = time.perf_counter()
        rec.eval_seconds += rec.t_start - t0
        return ev

    fit(model, opt, batches, step_loss, steps, eval_fn=eval_fn, eval_every=per_epoch,
        checkpoint_path=ckpt, checkpoint_every=per_epoch, log_path=log, resume=bool(resume),
        rng=np.random.default_rng(int(seed)), progress=progress, desc=name)
    results = _results(settings, model, records, rss0)
    _write_json(res_path, results)
    return results


def _resume_records(res_path, ckpt, settings):
    """Per-epoch records of the run being resumed, up to the checkpoint's step; checks the settings."""
    try:
        step = int(load_arrays(ckpt)[1]["step"])
    except CheckpointError as exc:
        raise TrainingArgumentError(f"`--resume`: {exc}") from exc
    if not os.path.exists(res_path):
        return []
    with open(res_path) as f:
        old = json.load(f)
    for k in _FIXED:
        if old["settings"].get(k) != settings[k]:
            raise TrainingArgumentError(
                f"`--resume`: the run in {os.path.dirname(res_path)!r} was made with {k}="
                f"{old['settings'].get(k)!r}, now {settings[k]!r}; resume with the same setting or "
                "start a new run in another `--out`.")
    return [r for r in old["epochs"] if r["step"] <= step]


def _results(settings, model, records, rss0):
    """The results record: settings, per-epoch metrics and the summary numbers."""
    seconds = [r["seconds"] for r in records if np.isfinite(r["seconds"])]
    last = records[-1] if records else {}
    return dict(settings=settings, params=int(model.num_parameters()), epochs=records,
                final_test_error=last.get("test_error"),
                time_per_epoch_s=float(np.median(seconds)) if seconds else None,
                nfe_forward=last.get("nfe_forward"), nfe_backward=last.get("nfe_backward"),
                peak_memory_growth_mib=round(_peak_rss_mib() - rss0, 1),
                peak_rss_mib=round(_peak_rss_mib(), 1))


# ======================================================================== command line
def add_arguments(p):
    """The ``train`` subcommand's arguments."""
    p.add_argument("model", choices=MODELS, help="which row of Table 1")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--data", default=None, help="directory of MNIST/Fashion-MNIST IDX files "
                                                "(default: the embedded 4,000/1,000 split)")
    p.add_argument("--out", default=None, help="run directory (default runs/table1/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help=f"numpy (CPU) or cupy (GPU); default ${BACKEND_ENV}, else numpy")


def main(args):
    """Run ``train`` from parsed arguments; returns the exit status."""
    try:
        res = train_model(args.model, epochs=args.epochs, data=args.data, out=args.out,
                          resume=args.resume, dtype=args.dtype, seed=args.seed,
                          batch_size=args.batch_size, max_steps=args.max_steps,
                          progress=not args.no_progress, backend=args.backend)
    except TrainingArgumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue with the same command and --resume.", file=sys.stderr)
        return 130
    err = res["final_test_error"]
    print(f"{args.model}: test error {err:.2f}% after {len(res['epochs'])} evaluation(s); "
          f"{res['params']:,} parameters; results in {args.out or os.path.join('runs', 'table1', args.model)}"
          if err is not None else f"{args.model}: no evaluation ran")
    return 0


def build_parser():
    """A standalone parser (``python -m nodeform.experiments.table1`` and the tests)."""
    p = argparse.ArgumentParser(prog="python -m nodeform train", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
