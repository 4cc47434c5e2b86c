"""Faults in training (issue 8, items 5-10, 13, 14): NaN, kills, signals, full or read-only disks, damaged files.

The kill tests start tests/train_fault_child.py in a subprocess, stop it with
SIGKILL at random moments (mostly inside a checkpoint write: the child saves
after every step), SIGTERM or SIGINT, resume, and check that the parameters and
the log are bit for bit those of a run that was never interrupted.
"""
import errno
import gzip
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import pytest

import nodeform
from nodeform import data, nn, train
from nodeform.checkpoint import load_checkpoint, load_latest_checkpoint, save_checkpoint
from nodeform.metrics_log import LogWarning, restore_log
from nodeform.nn.serialize import META_KEY, older_path
from train_fault_child import run, setup

CHILD = os.path.join(os.path.dirname(__file__), "train_fault_child.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nodeform.__file__)))


class Killed(Exception):
    """Stands for a SIGKILL at a chosen moment (raised from a patched function)."""


def _theta(model):
    return nn.parameters_to_vector(model.parameters())


def _state(model, opt, batches, rng=None):
    """Everything a load may change, as comparable copies."""
    return (_theta(model).tobytes(), json.dumps({k: v.tolist() for k, v in opt.state_dict().items()}),
            json.dumps({k: v.tolist() for k, v in batches.state_dict().items()}),
            json.dumps(rng.bit_generator.state) if rng is not None else None)


def _fit(folder, steps, **kw):
    m, o, b, f = setup()
    kw.setdefault("checkpoint_path", os.path.join(folder, "ck.npz"))
    out = train.fit(m, o, b, f, steps, progress=False, **kw)
    return m, o, b, out


def _records(log):
    """The log without its wall-clock times (which differ between runs)."""
    return [{k: v for k, v in r.items() if k != "time"} for r in train.read_log(log)]


# ------------------------------------------------------------------ item 5: NaN
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    ck = str(tmp_path / "ck.npz")
    m, o, b, f = setup()
    calls = []

    def diverging(model, batch, rng):
        calls.append(1)
        loss = f(model, batch, rng)
        return (loss[0] * np.nan, loss[1]) if len(calls) == 8 else loss

    with pytest.raises(train.NonFiniteLossError, match=r"step 8: the loss is nan.*last good checkpoint, "
                                                       r".*ck\.npz at step 6, is kept") as info:
        train.fit(m, o, b, diverging, 20, checkpoint_path=ck, checkpoint_every=3, progress=False)
    assert info.value.step == 8 and np.isnan(info.value.value)
    assert isinstance(info.value, train.TrainingError)
    arrays, meta = nn.load_arrays(ck)
    assert meta["step"] == 6 and all(np.isfinite(a).all() for a in arrays.values())
    assert nn.load_arrays(older_path(ck, 1))[1]["step"] == 3
    # resuming from it is the same as never having met the NaN
    m1, *_ = _fit(str(tmp_path / "ref"), 10)
    m2, *_ = _fit(str(tmp_path), 10, resume=True)
    np.testing.assert_array_equal(_theta(m2), _theta(m1))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nonfinite_parameters_are_never_checkpointed(tmp_path):
    ck = str(tmp_path / "ck.npz")
    m, o, b, f = setup()
    calls = []

    def poisoning(model, batch, rng):       # the loss is finite, its gradient is not: 0 * sqrt'(0)
        calls.append(1)
        loss, metrics = f(model, batch, rng)
        if len(calls) == 5:
            loss = loss + 0.0 * nodeform.sqrt(nodeform.sum(model[1].weight * 0.0))
        return loss, metrics

    with pytest.raises(train.NonFiniteParameterError, match=r"step 5: NaN or infinity in 1\.weight.*NOT "
                                                            r"checkpointed") as info:
        train.fit(m, o, b, poisoning, 10, checkpoint_path=ck, checkpoint_every=1, progress=False)
    assert info.value.step == 5 and "1.weight" in info.value.names
    assert nn.load_arrays(ck)[1]["step"] == 4
    with pytest.raises(train.NonFiniteParameterError):      # nor by hand
        save_checkpoint(str(tmp_path / "other.npz"), m, o, 5)
    assert not (tmp_path / "other.npz").exists()


# ------------------------------------------------------------------ item 5: keep k, fall back
@pytest.mark.parametrize("keep", [1, 2, 3])
def test_the_last_k_checkpoints_are_kept(tmp_path, keep):
    ck = str(tmp_path / "ck.npz")
    _fit(str(tmp_path), 10, checkpoint_every=2, keep=keep)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["ck.npz"] + [f"ck.{i}.npz" for i in range(1, keep)])
    steps = [nn.load_arrays(p)[1]["step"] for p in [ck] + [older_path(ck, i) for i in range(1, keep)]]
    assert steps == [10, 8, 6][:keep]


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path):
    ck = str(tmp_path / "ck.npz")
    _fit(str(tmp_path), 8, checkpoint_every=4)
    raw = bytearray(open(ck, "rb").read())
    raw[len(raw) // 2] ^= 0x40
    open(ck, "wb").write(bytes(raw))
    with pytest.warns(train.ResumeWarning, match=r"RESUMED from the older .*ck\.1\.npz \(step 4\).*"
                                                 r"moved to .*ck\.npz\.corrupt"):
        m2, o2, b2, out = _fit(str(tmp_path), 12, resume=True)
    m1, o1, b1, _ = _fit(str(tmp_path / "ref"), 12)
    np.testing.assert_array_equal(_theta(m2), _theta(m1))
    assert (tmp_path / "ck.npz.corrupt").exists()
    assert nn.load_arrays(ck)[1]["step"] == 12           # the rotation never keeps the damaged file
    assert nn.load_arrays(older_path(ck, 1))[1]["step"] == 4


def test_when_no_kept_checkpoint_loads_the_error_lists_each(tmp_path):
    ck = str(tmp_path / "ck.npz")
    _fit(str(tmp_path), 4, checkpoint_every=2)
    for p in (ck, older_path(ck, 1)):
        with open(p, "r+b") as fh:
            fh.truncate(100)
    m, o, b, f = setup()
    before = _state(m, o, b)
    with pytest.raises(nn.CheckpointError, match=r"none of the 2 kept checkpoints.*ck\.npz.*ck\.1\.npz"):
        train.fit(m, o, b, f, 6, checkpoint_path=ck, resume=True, progress=False)
    assert _state(m, o, b) == before


# ------------------------------------------------------------------ item 6: the metrics log
def test_read_log_drops_a_crash_cut_last_line_but_not_a_damaged_middle_one(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n{"step": 3, "lo')
    with pytest.warns(LogWarning, match="dropped its last line"):
        assert train.read_log(str(log)) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    log.write_bytes(b'{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n{"step": 3, "loss": 0.1}\n')
    with pytest.raises(ValueError, match=r"log.jsonl, line 2: .* not a JSON object"):
        train.read_log(log)


def test_resume_after_a_crash_cut_log_line_keeps_each_step_once(tmp_path):
    log = str(tmp_path / "log.jsonl")
    _fit(str(tmp_path), 10, checkpoint_every=5, log_path=log, log_every=1)
    with open(log, "a") as fh:        # what a SIGKILL at step 13 of a longer run leaves behind
        fh.write('{"step": 11, "loss": 1.0}\n{"step": 12, "loss": 1.0}\n{"step": 13, "lo')
    _fit(str(tmp_path), 15, log_path=log, log_every=1, resume=True)
    _fit(str(tmp_path / "ref"), 15, log_path=str(tmp_path / "ref.jsonl"), log_every=1)
    assert _records(log) == _records(str(tmp_path / "ref.jsonl"))
    assert [r["step"] for r in train.read_log(log)] == list(range(1, 16))


def test_resume_cuts_a_big_log_back_without_rewriting_it(tmp_path, monkeypatch):
    # the state a long run leaves: a checkpoint at step 100,000, a log that goes on to step 110,000
    ck, log = str(tmp_path / "ck.npz"), str(tmp_path / "log.jsonl")
    _fit(str(tmp_path / "short"), 10)
    arrays, meta = nn.load_arrays(tmp_path / "short" / "ck.npz")
    line = '{"step": %d, "loss": 0.125, "lr": 0.1}\n'
    prefix = "".join(line % s for s in range(1, 100_001)).encode()
    with open(log, "wb") as fh:
        fh.write(prefix + "".join(line % s for s in range(100_001, 110_001)).encode())
    meta = {k: v for k, v in meta.items() if k not in ("format", "sha256", "keys")}
    nn.save_arrays(ck, arrays, dict(meta, step=100_000, extra={"log_bytes": len(prefix)}))
    calls = []
    real_dumps = json.dumps

    def dumps(*a, **k):               # a SIGKILL while the log would be rewritten line by line
        calls.append(1)
        if len(calls) == 1000:
            raise Killed
        return real_dumps(*a, **k)
    monkeypatch.setattr(json, "dumps", dumps)
    t0 = time.perf_counter()
    _fit(str(tmp_path), 100_002, log_path=log, log_every=1, resume=True)
    assert time.perf_counter() - t0 < 5
    monkeypatch.undo()
    after = open(log, "rb").read()
    assert after.startswith(prefix)
    assert [json.loads(x)["step"] for x in after[len(prefix):].splitlines()] == [100_001, 100_002]


def test_the_fallback_log_rewrite_is_atomic(tmp_path, monkeypatch):
    # without the log's size (a checkpoint written without `log_path`) the log is filtered
    # by step into a temporary file; an interruption leaves the log as it was
    log = tmp_path / "log.jsonl"
    body = "".join(f'{{"step": {s}, "loss": 0.5}}\n' for s in range(1, 5001)).encode()
    log.write_bytes(body)
    calls = []
    real_dumps = json.dumps

    def dumps(*a, **k):
        calls.append(1)
        if len(calls) == 1000:
            raise Killed
        return real_dumps(*a, **k)
    monkeypatch.setattr(json, "dumps", dumps)
    with pytest.raises(Killed):
        restore_log(str(log), step=3000)
    monkeypatch.undo()
    assert log.read_bytes() == body
    assert os.listdir(tmp_path) == ["log.jsonl"]
    restore_log(str(log), step=3000)
    assert [r["step"] for r in train.read_log(log)] == list(range(1, 3001))


def test_a_run_that_died_before_its_first_checkpoint_leaves_no_duplicate_steps(tmp_path):
    log = str(tmp_path / "log.jsonl")
    ck = str(tmp_path / "ck.npz")
    m, o, b, f = setup()
    calls = []

    def crashing(model, batch, rng):
        calls.append(1)
        if len(calls) == 15:
            raise MemoryError("the machine ran out of memory")
        return f(model, batch, rng)

    with pytest.raises(MemoryError):
        train.fit(m, o, b, crashing, 20, checkpoint_path=ck, checkpoint_every=100, log_path=log,
                  log_every=1, progress=False)
    assert not os.path.exists(ck) and len(train.read_log(log)) == 14
    with pytest.warns(train.ResumeWarning, match="no checkpoint to resume from.*starting it again"):
        _fit(str(tmp_path), 20, log_path=log, log_every=1, resume="auto")
    assert [r["step"] for r in train.read_log(log)] == list(range(1, 21))


# ------------------------------------------------------------------ item 7: overwrite
def test_resume_false_refuses_to_replace_a_checkpoint_or_a_log(tmp_path):
    ck = str(tmp_path / "ck.npz")
    log = str(tmp_path / "log.jsonl")
    _fit(str(tmp_path), 6, checkpoint_every=2, log_path=log, log_every=1)
    good = open(ck, "rb").read()
    with pytest.raises(FileExistsError, match=r"`checkpoint_path` .*ck\.npz already holds a checkpoint.*"
                                              r"`resume=True`.*`overwrite=True`"):
        _fit(str(tmp_path), 4, log_path=log)
    assert open(ck, "rb").read() == good
    with pytest.raises(FileExistsError, match=r"`log_path` .*log\.jsonl already holds a metrics log"):
        _fit(str(tmp_path), 4, checkpoint_path=None, log_path=log)
    # overwrite=True: a fresh run; the old run's older checkpoints go too, so none can be resumed by mistake
    m, *_ = _fit(str(tmp_path), 3, overwrite=True, log_path=log, log_every=1)
    m_ref, *_ = _fit(str(tmp_path / "ref"), 3)
    np.testing.assert_array_equal(_theta(m), _theta(m_ref))
    assert not os.path.exists(older_path(ck, 1)) and nn.load_arrays(ck)[1]["step"] == 3
    assert [r["step"] for r in train.read_log(log)] == [1, 2, 3]
    with pytest.raises(ValueError, match="`overwrite=True` starts afresh"):
        _fit(str(tmp_path), 3, overwrite=True, resume=True)


# ------------------------------------------------------------------ item 8: SIGTERM in-process
def test_sigterm_checkpoints_like_ctrl_c_and_restores_the_handler(tmp_path, capfd):
    class Terminated(Exception):
        pass

    def outer(signum, frame):          # the handler in place before fit (stands for the default: die)
        raise Terminated
    old = signal.signal(signal.SIGTERM, outer)
    try:
        ck = str(tmp_path / "ck.npz")
        m, o, b, f = setup()
        calls = []

        def terminated(model, batch, rng):
            calls.append(1)
            if len(calls) == 7:
                os.kill(os.getpid(), signal.SIGTERM)       # as if the cluster preempted us in step 7
            return f(model, batch, rng)

        with pytest.raises(SystemExit) as info:
            train.fit(m, o, b, terminated, 16, checkpoint_path=ck, progress=False)
        assert info.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is outer
    finally:
        signal.signal(signal.SIGTERM, old)
    assert "SIGTERM: stopped after step 7; checkpoint written to" in capfd.readouterr().err
    assert nn.load_arrays(ck)[1]["step"] == 7
    m2, *_ = _fit(str(tmp_path), 16, resume=True)
    m1, *_ = _fit(str(tmp_path / "ref"), 16)
    np.testing.assert_array_equal(_theta(m2), _theta(m1))


def test_a_second_ctrl_c_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    ck = str(tmp_path / "ck.npz")
    m, o, b, f = setup()
    calls, saves = [], []

    def first(model, batch, rng):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)         # Ctrl-C during step 5 ...
        return f(model, batch, rng)
    real_savez = np.savez

    def savez(*a, **k):
        saves.append(1)
        if len(saves) == 5:
            os.kill(os.getpid(), signal.SIGINT)         # ... and again while step 5 is being saved
        return real_savez(*a, **k)
    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(KeyboardInterrupt):
        train.fit(m, o, b, first, 16, checkpoint_path=ck, checkpoint_every=1, progress=False)
    monkeypatch.undo()
    assert "interrupted while writing the checkpoint; the last checkpoint (step 4) is intact" in \
        capsys.readouterr().err
    assert nn.load_arrays(ck)[1]["step"] == 4 and sorted(os.listdir(tmp_path)) == ["ck.1.npz", "ck.npz"]
    m2, *_ = _fit(str(tmp_path), 16, resume=True)
    m1, *_ = _fit(str(tmp_path / "ref"), 16)
    np.testing.assert_array_equal(_theta(m2), _theta(m1))


def test_a_crash_between_rotation_and_rename_resumes_from_the_kept_version(tmp_path, monkeypatch):
    ck = str(tmp_path / "ck.npz")
    import nodeform.nn.serialize as serialize
    real_replace, renames = os.replace, []

    def replace(src, dst):              # dies right before the new file takes its place
        renames.append(src)
        if ".tmp-" in os.path.basename(src) and len(renames) > 4:
            raise Killed
        return real_replace(src, dst)
    monkeypatch.setattr(serialize.os, "replace", replace)
    with pytest.raises(Killed):
        _fit(str(tmp_path), 8, checkpoint_every=2)
    monkeypatch.undo()
    assert not os.path.exists(ck) and nn.load_arrays(older_path(ck, 1))[1]["step"] == 4
    m2, *_ = _fit(str(tmp_path), 8, resume=True)
    m1, *_ = _fit(str(tmp_path / "ref"), 8)
    np.testing.assert_array_equal(_theta(m2), _theta(m1))


# ------------------------------------------------------------------ items 5, 6, 8, 9: kills in a subprocess
def _start_child(folder, steps):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, CHILD, folder, str(steps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _signal_child(folder, steps, signum, delay):
    """Start a child, send ``signum`` ``delay`` seconds after its handlers are up; its exit code and stderr."""
    proc = _start_child(folder, steps)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(folder, f"ready-{proc.pid}")):
        if proc.poll() is not None:
            raise AssertionError(f"child died first: {proc.communicate()[1].decode()[-2000:]}")
        assert time.monotonic() < deadline, "the child never started training"
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


def _check_against_uninterrupted(folder, extra_steps=20):
    """Finish the interrupted run here, ``extra_steps`` past its checkpoint; it must equal a run never interrupted.

    The children train "forever" (their step budget is never reached), so the test
    does not depend on how fast this machine's disk is.
    """
    m, o, b, f = setup()
    try:
        start = load_latest_checkpoint(os.path.join(folder, "ck.npz"), m, o)[0]["step"]
    except nn.CheckpointError:         # killed before its first checkpoint
        start = 0
    steps = start + extra_steps
    m, o, b, _ = run(folder, steps, checkpoint_every=0)      # fsync-free: the rest in one go
    ref = os.path.join(folder, "ref")
    os.makedirs(ref)
    m1, o1, b1, _ = run(ref, steps, checkpoint_path=None, checkpoint_every=0, resume=False)
    np.testing.assert_array_equal(_theta(m), _theta(m1))
    assert o.step_count == o1.step_count == steps
    assert b.state_dict()["position"] == b1.state_dict()["position"]
    log, log1 = os.path.join(folder, "log.jsonl"), os.path.join(ref, "log.jsonl")
    assert _records(log) == _records(log1)                # each step once, same losses bit for bit
    leftovers = [n for n in os.listdir(folder) if ".tmp-" in n]
    assert leftovers == [], leftovers                      # temporaries of killed saves were cleaned up


FOREVER = 10 ** 6       # the children's step budget: they are always stopped by a signal


def _kill_and_resume(folder, delays):
    hit_saves = 0
    for delay in delays:
        code, err = _signal_child(folder, FOREVER, signal.SIGKILL, delay)
        assert code == -signal.SIGKILL, err[-2000:]
        hit_saves += any(".ck.npz.tmp-" in n for n in os.listdir(folder))   # killed inside a save
    _check_against_uninterrupted(folder)
    return hit_saves


def test_sigkill_during_saves_then_resume_is_bit_identical(tmp_path):
    rng = np.random.default_rng(8)
    _kill_and_resume(str(tmp_path), rng.uniform(0.0, 0.15, 3))


@pytest.mark.slow
def test_sigkill_at_many_random_moments_then_resume_is_bit_identical(tmp_path):
    rng = np.random.default_rng(88)
    hit = _kill_and_resume(str(tmp_path), rng.uniform(0.0, 0.6, 30))
    assert hit >= 5, f"only {hit} of 30 kills landed inside a checkpoint write"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_in_a_subprocess_saves_exits_and_resumes_bit_identical(tmp_path, signum):
    folder = str(tmp_path)
    code, err = _signal_child(folder, FOREVER, signum, np.random.default_rng(signum).uniform(0.0, 0.1))
    name = signal.Signals(signum).name
    assert code == (128 + signum if signum == signal.SIGTERM else -signal.SIGINT), err[-2000:]
    assert f"{name}: stopped after step " in err and "Continue with `resume=True`." in err, err[-2000:]
    step = int(err.split("stopped after step ")[1].split(";")[0])
    assert step > 0 and nn.load_arrays(os.path.join(folder, "ck.npz"))[1]["step"] == step
    _check_against_uninterrupted(folder)


# ------------------------------------------------------------------ item 9: temporaries
def test_temporaries_are_unpredictable_and_orphans_are_cleaned(tmp_path):
    ck = str(tmp_path / "ck.npz")
    m, o, b, f = setup()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / f".ck.npz.tmp-{os.getpid()}")     # the old, predictable name
    orphan = tmp_path / ".ck.npz.tmp-4194304-abcd1234"              # left by a save that was SIGKILLed
    orphan.write_bytes(b"\0" * 1000)
    held_fd, held = tempfile.mkstemp(prefix=".ck.npz.tmp-1-", dir=tmp_path)   # a live writer's
    import fcntl
    fcntl.flock(held_fd, fcntl.LOCK_EX)
    try:
        save_checkpoint(ck, m, o, 3)
        assert victim.read_text() == "precious"
        assert not orphan.exists()
        assert os.path.exists(held)
    finally:
        os.close(held_fd)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(ck).st_mode & 0o777 == 0o666 & ~umask      # a normal file's mode, not mkstemp's 0600
    assert load_checkpoint(ck, *setup()[:2])["step"] == 3


# ------------------------------------------------------------------ item 10: folders and disks
def test_a_read_only_checkpoint_folder_is_reported_before_the_first_step(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:           # root writes anyway: make the OS answer as it would for a user
        real = tempfile.mkstemp

        def mkstemp(*a, dir=None, **k):
            if dir is not None and os.path.abspath(dir).startswith(str(ro)):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*a, dir=dir, **k)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    m, o, b, f = setup()
    calls = []

    def counting(model, batch, rng):
        calls.append(1)
        return f(model, batch, rng)
    try:
        with pytest.raises(nn.CheckpointError, match=r"checkpoint folder \(`checkpoint_path`\) .*ro is not "
                                                     r"writable.*Nothing was run"):
            train.fit(m, o, b, counting, 5, checkpoint_path=str(ro / "ck.npz"), progress=False)
        with pytest.raises(train.TrainingError, match=r"log folder \(`log_path`\) .*ro is not writable"):
            train.fit(m, o, b, counting, 5, log_path=str(ro / "log.jsonl"), progress=False)
    finally:
        ro.chmod(0o755)
    assert calls == []
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(nn.CheckpointError, match=r"afile/sub does not exist and could not be created"):
        train.fit(m, o, b, counting, 5, checkpoint_path=str(afile / "sub" / "ck.npz"), progress=False)
    with pytest.raises(train.TrainingError, match=r"log folder \(`log_path`\) .*afile is a file, not a folder"):
        train.fit(m, o, b, counting, 5, log_path=str(afile / "log.jsonl"), progress=False)
    assert calls == []


def test_missing_folders_are_created(tmp_path):
    ck, log = tmp_path / "a" / "b" / "ck.npz", tmp_path / "logs" / "run1" / "log.jsonl"
    _fit(str(tmp_path), 4, checkpoint_path=ck, log_path=log, log_every=1)
    assert nn.load_arrays(ck)[1]["step"] == 4 and len(train.read_log(log)) == 4


def test_a_full_disk_is_reported_first_and_mid_run_as_checkpoint_error(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10_000, 9_900, 100))
    ck = str(tmp_path / "ck.npz")
    with pytest.raises(nn.CheckpointError, match=r"has 100 bytes free, but the files to be written there need about"):
        _fit(str(tmp_path), 4, checkpoint_every=2)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(shutil, "disk_usage", real_usage)
    real_savez, saves = np.savez, []

    def savez(*a, **k):                # the disk fills up at the second checkpoint
        saves.append(1)
        if len(saves) == 2:
            a[0].write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(*a, **k)
    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(nn.CheckpointError, match=r"ck\.npz: the disk holding .* is full.*previous file .*"
                                                 r"intact"):
        _fit(str(tmp_path), 6, checkpoint_every=2)
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]
    assert nn.load_arrays(ck)[1]["step"] == 2


# ------------------------------------------------------------------ item 13: damaged files
def _members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, raw in members.items():
            z.writestr(name, raw)


def _npy(arr, shape=None):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(arr.dtype),
                                               "fortran_order": False,
                                               "shape": arr.shape if shape is None else shape})
    return buf.getvalue() + arr.tobytes()


def _patch_zip_flags(raw, flag=None, method=None):
    """Set the flag bits or the compression method of every member, in both zip headers."""
    raw = bytearray(raw)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        k = raw.find(sig)
        while k >= 0:
            if flag is not None:
                raw[k + off:k + off + 2] = (int.from_bytes(raw[k + off:k + off + 2], "little") | flag).to_bytes(
                    2, "little")
            if method is not None:
                raw[k + off + 2:k + off + 4] = method.to_bytes(2, "little")
            k = raw.find(sig, k + 4)
    return bytes(raw)


def _craft(kind, good, path):
    """Write to ``path`` a damaged variant of the checkpoint ``good`` (one kind of damage)."""
    members = _members(good)
    meta = json.loads(np.lib.format.read_array(io.BytesIO(members[META_KEY + ".npy"])).tobytes())
    arrays = {k[:-4]: np.lib.format.read_array(io.BytesIO(v)) for k, v in members.items()
              if k != META_KEY + ".npy"}

    def resave(arrays=arrays, **changes):          # a consistent file (checksum fine) with odd contents
        nn.save_arrays(path, arrays, {k: v for k, v in dict(meta, **changes).items()
                                      if k not in ("format", "sha256", "keys")})
    raw = open(good, "rb").read()
    if kind == "encrypted":
        open(path, "wb").write(_patch_zip_flags(raw, flag=0x1))
    elif kind == "compression":
        open(path, "wb").write(_patch_zip_flags(raw, method=99))
    elif kind == "huge_shape":
        w = arrays["model/1.weight"]
        members["model/1.weight.npy"] = _npy(w, shape=(1 << 40,))
        _zip(path, members)
    elif kind == "meta_not_object":
        members[META_KEY + ".npy"] = _npy(np.frombuffer(b"[1, 2, 3]", np.uint8))
        _zip(path, members)
    elif kind == "object_array":
        buf = io.BytesIO()
        np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        members["model/1.bias.npy"] = buf.getvalue()
        _zip(path, members)
    elif kind == "rng_wrong_type":
        resave(rng="not a generator state")
    elif kind == "rng_wrong_kind":
        state = np.random.MT19937(0).state
        state["state"]["key"] = state["state"]["key"].tolist()
        resave(rng=state)
    elif kind == "step_not_int":
        resave(step="7")
    elif kind == "other_architecture":
        resave(arrays=dict(arrays, **{"model/1.weight": np.zeros((4, 16))}))
    elif kind == "nonfinite_weights":
        w = arrays["model/1.weight"].copy()
        w[0, 0] = np.nan
        resave(arrays=dict(arrays, **{"model/1.weight": w}))
    elif kind == "optimizer_misfit":              # model part perfect, optimizer part not: all or nothing
        resave(arrays=dict(arrays, **{"optim/momentum.0": np.zeros((3, 3))}))
    elif kind == "optimizer_other_class":
        resave(optimizer="Adam")
    elif kind == "batches_missing":
        resave(arrays={k: v for k, v in arrays.items() if not k.startswith("data/")})
    elif kind == "gz_instead":
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        raise ValueError(kind)


KINDS = ["encrypted", "compression", "huge_shape", "meta_not_object", "object_array", "rng_wrong_type",
         "rng_wrong_kind", "step_not_int", "other_architecture", "nonfinite_weights", "optimizer_misfit",
         "optimizer_other_class", "batches_missing", "gz_instead"]


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    _fit(str(folder), 6, checkpoint_every=3)
    return str(folder / "ck.npz")


@pytest.mark.parametrize("kind", KINDS)
def test_every_damaged_checkpoint_is_a_checkpoint_error_and_changes_nothing(tmp_path, good_checkpoint, kind):
    bad = str(tmp_path / "ck.npz")
    _craft(kind, good_checkpoint, bad)
    m, o, b, f = setup()
    rng = np.random.default_rng(5)
    before = _state(m, o, b, rng)
    with pytest.raises(nn.CheckpointError, match=r"ck\.npz"):
        load_checkpoint(bad, m, o, rng, b)
    assert _state(m, o, b, rng) == before
    with pytest.raises(nn.CheckpointError):
        train.fit(m, o, b, f, 9, checkpoint_path=bad, resume=True, rng=rng, progress=False)
    assert _state(m, o, b, rng) == before


def test_truncations_and_bit_flips_are_checkpoint_errors_and_change_nothing(tmp_path, good_checkpoint):
    raw = open(good_checkpoint, "rb").read()
    bad = str(tmp_path / "ck.npz")
    fresh = _state(*setup()[:3])
    m, o, b, f = setup()
    load_checkpoint(good_checkpoint, m, o, None, b)
    good = _state(m, o, b)
    rng = np.random.default_rng(13)
    cuts = [bytes(raw[:int(c)]) for c in np.linspace(0, len(raw) - 1, 25)]
    flips = []
    for k, bit in zip(rng.integers(0, len(raw), 150), rng.integers(0, 8, 150)):
        flipped = bytearray(raw)
        flipped[k] ^= 1 << int(bit)
        flips.append(bytes(flipped))
    errors = 0
    for variant in cuts + flips:
        open(bad, "wb").write(variant)
        m, o, b, f = setup()
        try:
            load_checkpoint(bad, m, o, None, b)
        except nn.CheckpointError:
            errors += 1
            assert _state(m, o, b) == fresh
        else:                       # a flip in bytes that carry no data (a timestamp, padding)
            assert _state(m, o, b) == good
    assert errors >= len(cuts) + 100, errors


# ------------------------------------------------------------------ item 14: read_idx
def _idx(arr):
    return bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes() + arr.astype(np.uint8).tobytes()


def test_read_idx_takes_a_path_object(tmp_path, rng):
    arr = rng.integers(0, 256, (3, 28, 28))
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(_idx(arr))
    np.testing.assert_array_equal(data.read_idx(p), arr)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(_idx(arr)))
    np.testing.assert_array_equal(data.read_idx(pathlib.Path(gz)), arr)
    with pytest.raises(TypeError, match=r"`path` must be a str or os.PathLike.*got int"):
        data.read_idx(3)


@pytest.mark.parametrize("cut", [0, 2, 5, 11])
def test_read_idx_on_a_file_cut_inside_its_header(tmp_path, rng, cut):
    p = tmp_path / "t10k-labels-idx1-ubyte"
    p.write_bytes(_idx(rng.integers(0, 256, (3, 28, 28)))[:cut])     # the header is 16 bytes
    with pytest.raises(data.DataFormatError, match=rf"t10k-labels-idx1-ubyte is cut inside its header: "
                                                   rf"{cut} bytes") as info:
        data.read_idx(str(p))
    assert isinstance(info.value, ValueError) and isinstance(info.value, data.DataNotFoundError)
    p.write_bytes(_idx(rng.integers(0, 256, (3, 4))) + b"\0")
    with pytest.raises(data.DataFormatError, match=r"truncated or padded: 25 bytes, but its header \(3, 4\) "
                                                   r"needs 24"):
        data.read_idx(str(p))
