"""The training loop: exact resume, atomic and checked checkpoints, logs, and that a CNN learns MNIST."""
import errno
import json
import os
import signal

import numpy as np
import pytest

import nodeform as nf
from nodeform import data, nn, optim, train
from train_fault_child import setup


# the tiny model every training test uses (shared with the kill tests' child process)
_setup = setup


def _theta(model):
    return nn.parameters_to_vector(model.parameters())


def test_fit_resume_is_bit_exact(tmp_path):
    m1, o1, b1, f1 = _setup()
    train.fit(m1, o1, b1, f1, steps=20, progress=False)

    ck = str(tmp_path / "ck.npz")
    m2, o2, b2, f2 = _setup()
    train.fit(m2, o2, b2, f2, steps=10, checkpoint_path=ck, progress=False)
    m3, o3, b3, f3 = _setup(seed=0)
    theta_fresh = _theta(m3)
    out = train.fit(m3, o3, b3, f3, steps=20, checkpoint_path=ck, resume=True, progress=False)
    assert out["step"] == 20
    assert not np.array_equal(theta_fresh, _theta(m3))
    np.testing.assert_array_equal(_theta(m3), _theta(m1))    # bit for bit
    assert o3.step_count == o1.step_count == 20
    assert b3.state_dict()["position"] == b1.state_dict()["position"]


def test_fit_ctrl_c_checkpoints_then_resumes_exactly(tmp_path):
    m1, o1, b1, f1 = _setup()
    train.fit(m1, o1, b1, f1, steps=16, progress=False)

    ck = str(tmp_path / "ck.npz")
    m2, o2, b2, f2 = _setup()
    calls = []

    def interrupting(model, batch, rng):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)     # as if the user pressed Ctrl-C during step 7
        return f2(model, batch, rng)

    with pytest.raises(KeyboardInterrupt):
        train.fit(m2, o2, b2, interrupting, steps=16, checkpoint_path=ck, progress=False)
    assert nf.nn.load_arrays(ck)[1]["step"] == 7        # step 7 finished, then saved
    m3, o3, b3, f3 = _setup()
    train.fit(m3, o3, b3, f3, steps=16, checkpoint_path=ck, resume=True, progress=False)
    np.testing.assert_array_equal(_theta(m3), _theta(m1))


def test_fit_exception_inside_step_rewinds_data_and_rng(tmp_path):
    m1, o1, b1, f1 = _setup()
    train.fit(m1, o1, b1, f1, steps=12, progress=False)
    ck = str(tmp_path / "ck.npz")
    m2, o2, b2, f2 = _setup()
    calls = []

    def raising(model, batch, rng):
        calls.append(1)
        out = f2(model, batch, rng)
        if len(calls) == 5:
            raise KeyboardInterrupt                  # inside the step, after data and rng were used
        return out

    with pytest.raises(KeyboardInterrupt):
        train.fit(m2, o2, b2, raising, steps=12, checkpoint_path=ck, progress=False)
    m3, o3, b3, f3 = _setup()
    train.fit(m3, o3, b3, f3, steps=12, checkpoint_path=ck, resume=True, progress=False)
    np.testing.assert_array_equal(_theta(m3), _theta(m1))


def test_truncated_checkpoint_is_detected_not_loaded(tmp_path):
    ck = str(tmp_path / "ck.npz")
    m, o, b, f = _setup()
    train.fit(m, o, b, f, steps=3, checkpoint_path=ck, progress=False)
    size = os.path.getsize(ck)
    with open(ck, "r+b") as fh:
        fh.truncate(size // 2)
    m2, o2, b2, f2 = _setup()
    before = _theta(m2)
    with pytest.raises(nn.CheckpointError, match=r"is damaged, probably truncated.*NOT loaded"):
        train.fit(m2, o2, b2, f2, steps=6, checkpoint_path=ck, resume=True, progress=False)
    np.testing.assert_array_equal(_theta(m2), before)


def test_corrupted_checkpoint_fails_checksum(tmp_path):
    ck = str(tmp_path / "m.npz")
    m, *_ = _setup()
    nn.save_module(ck, m)
    raw = bytearray(open(ck, "rb").read())
    # flip one byte inside the stored weights (np.savez does not compress, so the bytes are there)
    w = m[1].weight.data.tobytes()
    k = bytes(raw).find(w[:16])
    assert k > 0
    raw[k + 3] ^= 0xFF
    open(ck, "wb").write(bytes(raw))
    with pytest.raises(nn.CheckpointError, match="damaged|SHA-256"):
        nn.load_module(ck, m)


def test_missing_checkpoint_and_bad_resume_arguments(tmp_path):
    m, o, b, f = _setup()
    with pytest.raises(nn.CheckpointError, match="no checkpoint at"):
        train.fit(m, o, b, f, steps=2, checkpoint_path=str(tmp_path / "none.npz"), resume=True,
                  progress=False)
    with pytest.raises(ValueError, match="need `checkpoint_path`"):
        train.fit(m, o, b, f, steps=2, resume=True, progress=False)
    out = train.fit(m, o, b, f, steps=2, checkpoint_path=str(tmp_path / "a.npz"), resume="auto",
                    progress=False)
    assert out["step"] == 2


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    ck = str(tmp_path / "ck.npz")
    m, o, b, f = _setup()
    train.fit(m, o, b, f, steps=2, checkpoint_path=ck, progress=False)
    good = open(ck, "rb").read()

    def crash(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(nn.CheckpointError, match=r"ck\.npz: the disk holding .* is full.*previous file"):
        train.save_checkpoint(ck, m, o, 5)
    assert open(ck, "rb").read() == good                  # the old file is untouched
    assert os.listdir(tmp_path) == ["ck.npz"]             # and no temporary file is left


def test_fit_logs_and_evaluates(tmp_path):
    log = str(tmp_path / "log.jsonl")
    ck = str(tmp_path / "ck.npz")
    m, o, b, f = _setup()
    evals = lambda model: {"w": float(np.abs(_theta(model)).sum())}  # noqa: E731
    out = train.fit(m, o, b, f, steps=12, eval_fn=evals, eval_every=5, log_path=log, log_every=2,
                    checkpoint_path=ck, checkpoint_every=4, progress=False)
    recs = train.read_log(log)
    assert [r["step"] for r in recs if "loss" in r] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in recs if "eval_w" in r] == [5, 10, 12]
    assert all(np.isfinite(r["loss"]) and "acc" in r and "lr" in r for r in recs if "loss" in r)
    assert [e["step"] for e in out["evals"]] == [5, 10, 12]
    # resuming from step 12 of a longer run cuts the log back to the checkpoint, then appends
    with open(log, "a") as fh:
        fh.write(json.dumps({"step": 99, "loss": 0.0}) + "\n")
    train.fit(m, o, b, f, steps=14, log_path=log, log_every=2, checkpoint_path=ck, resume=True,
              progress=False)
    assert [r["step"] for r in train.read_log(log) if "loss" in r] == [2, 4, 6, 8, 10, 12, 14]


def _mnist_run(model, steps, lr, batch_size=64, dtype=np.float32):
    s = data.load_mnist_5k(dtype=dtype)
    model.to(dtype)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    batches = data.BatchIterator(s.x_train, s.y_train, batch_size=batch_size, seed=0)
    train.fit(model, opt, batches, train.classification_loss, steps=steps, progress=False)
    return train.evaluate_classifier(model, s.x_test, s.y_test)["accuracy"]


def test_mlp_learns_mnist_subset_fast():
    # 300 steps of batch 64 (~5 epochs of the 4,000 training digits): measured 0.90 test accuracy.
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    acc = _mnist_run(model, steps=300, lr=0.05)
    assert acc > 0.85, acc          # chance is 0.10


def _small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),     # 14x14
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(8, 32), nn.ReLU(),    # 7x7
        nn.Flatten(), nn.Linear(32 * 49, 10))


def test_small_cnn_learns_mnist_subset_fast():
    # 2 epochs (126 steps of batch 64) in float32, a few seconds: measured 0.919 test accuracy.
    nn.init.manual_seed(0)
    acc = _mnist_run(_small_cnn(), steps=126, lr=0.05)
    assert acc > 0.85, acc          # chance is 0.10


@pytest.mark.slow
def test_small_cnn_learns_mnist_subset():
    # 10 epochs (630 steps) with lr 0.05 then 0.005 for the last 2 epochs: measured 0.956 test accuracy.
    nn.init.manual_seed(0)
    acc = _mnist_run(_small_cnn(), steps=630, lr=optim.PiecewiseConstant([504], [0.05, 0.005]))
    assert acc > 0.95, acc
