"""Data: seeded, resumable batching; MNIST (embedded 5k subset or IDX files); augmentation.

Nothing here fetches anything from the network.
"""
from nodeform.data.batching import BatchIterator  # noqa: F401
from nodeform.data.augment import random_crop, crop_transform  # noqa: F401
from nodeform.data.mnist import (Split, DataNotFoundError, load_mnist, load_mnist_5k,  # noqa: F401
                                 load_idx_dataset, read_idx, embedded_path)
from nodeform.data.mnist import DataFormatError  # noqa: F401
