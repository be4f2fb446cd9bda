"""The built-in datasets and `load_dataset`: name (or path) -> fixed, seeded `Splits`.

A name is a registered dataset (`DATASETS.names()`), or user data: a path to an `.npz` file or to a
folder of class sub-folders, optionally prefixed `npz:` / `folder:`. Registered names win over a
path of the same spelling; use the prefix to force a path.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rcnas.data import loaders
from rcnas.data.base import (
    DATASETS,
    DatasetInfo,
    DatasetSpec,
    RawData,
    Split,
    Splits,
    channel_stats,
    locate,
    split_indices,
    to_tensor,
)
from rcnas.errors import BadInput

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
USER_EPS = 8 / 255
_IDX_WORDS = ", ".join(names[0] for names in loaders.IDX_FILES) + " (gzipped or not)"

DATASETS.register("digits", DatasetSpec(
    "digits", 10, 1, 8, 0.15, "shift", read=loaders.read_digits,
    bundled=lambda: Path("sklearn.datasets.load_digits")))
DATASETS.register("mnist5k", DatasetSpec(
    "mnist5k", 10, 1, 28, 0.3, "shift", read=loaders.read_mnist5k, bundled=loaders.mnist5k_path))
DATASETS.register("mnist", DatasetSpec(
    "mnist", 10, 1, 28, 0.3, "shift", read=loaders.read_idx_dataset,
    files=loaders.IDX_FILES, folder="mnist", describe=_IDX_WORDS))
DATASETS.register("fashion-mnist", DatasetSpec(
    "fashion-mnist", 10, 1, 28, 0.1, "shift", read=loaders.read_idx_dataset,
    files=loaders.IDX_FILES, folder="fashion-mnist", describe=_IDX_WORDS,
    system_dirs=lambda: (FASHION_MNIST_SYSTEM_DIR,),  # looked up at call time: tests patch it
    how_to_get="run `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs them in "
               "/usr/share/datasets/fashion-mnist)"))
# 14x14 versions (2x2 average pooling): the tabular benchmark's cheaper task settings
DATASETS.register("mnist5k-14", DatasetSpec(
    "mnist5k-14", 10, 1, 14, 0.3, "shift", read=loaders.halved(loaders.read_mnist5k),
    bundled=loaders.mnist5k_path))
DATASETS.register("fashion-mnist-14", DatasetSpec(
    "fashion-mnist-14", 10, 1, 14, 0.1, "shift", read=loaders.halved(loaders.read_idx_dataset),
    files=loaders.IDX_FILES, folder="fashion-mnist", describe=_IDX_WORDS,
    system_dirs=lambda: (FASHION_MNIST_SYSTEM_DIR,),
    how_to_get="run `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs them in "
               "/usr/share/datasets/fashion-mnist)"))
DATASETS.register("cifar10", DatasetSpec(
    "cifar10", 10, 3, 32, 8 / 255, "crop-flip", read=loaders.read_cifar10,
    files=loaders.CIFAR10_FILES, folder="cifar-10-batches-py",
    how_to_get="unpack cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
               "into the data dir"))
DATASETS.register("cifar100", DatasetSpec(
    "cifar100", 100, 3, 32, 8 / 255, "crop-flip", read=loaders.read_cifar100,
    files=loaders.CIFAR100_FILES, folder="cifar-100-python",
    how_to_get="unpack cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
               "into the data dir"))
DATASETS.register("tinyimagenet", DatasetSpec(
    "tinyimagenet", 200, 3, 64, 8 / 255, "crop-flip", read=loaders.read_tinyimagenet,
    files=loaders.TINYIMAGENET_FILES, folder="tiny-imagenet-200",
    describe="the unzipped tiny-imagenet-200 folder's wnids.txt, train/<wnid>/images/*.JPEG, "
             "val/images/*.JPEG and val/val_annotations.txt",
    how_to_get="unzip tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) "
               "into the data dir"))


@dataclass(frozen=True)
class _Source:
    """Where a dataset's data is: the cache key (so a different data dir is a different dataset)."""

    kind: str          # a registered name, "npz" or "folder"
    path: str
    stamp: tuple[int, int] = (0, 0)   # user data: (mtime_ns, size), so an edited file is re-read


def _user_source(name: str) -> _Source | None:
    kind, _, rest = name.partition(":")
    if kind in ("npz", "folder") and rest:
        path = Path(rest).expanduser()
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            kind = "folder"
        elif path.suffix.lower() == ".npz" or path.is_file():
            kind = "npz"
        else:
            return None
    if kind == "npz" and not path.is_file():
        raise BadInput(f"npz file not found: {path}; check the path")
    if kind == "folder" and not path.is_dir():
        raise BadInput(f"image folder not found: {path}; check the path")
    st = path.stat()
    return _Source(kind, str(path.resolve()), (st.st_mtime_ns, st.st_size))


def _resolve(name: str, data_dir: str | Path | None) -> _Source:
    if not isinstance(name, str) or not name.strip():
        raise BadInput(f"dataset name must be a non-empty string, got {name!r}; "
                       f"use one of: {', '.join(DATASETS.names())}")
    name = name.strip()
    if name in DATASETS:
        return _Source(name, str(locate(DATASETS.get(name), data_dir)))
    source = _user_source(name)
    if source is None:
        raise BadInput(f"unknown dataset {name!r}; known: {', '.join(DATASETS.names())}, or a path to "
                       f"an .npz file or a folder of class sub-folders (npz:PATH, folder:PATH)")
    return source


@functools.lru_cache(maxsize=2)
def _read(source: _Source) -> RawData:
    """The decoded files (before splitting), shared across seeds."""
    path = Path(source.path)
    if source.kind == "npz":
        return loaders.read_npz(path)
    if source.kind == "folder":
        return loaders.read_image_folder(path)
    return DATASETS.get(source.kind).read(path)


def _check_labels(raw: RawData, num_classes: int, what: str) -> None:
    for y in (raw.y, raw.y_test):
        if y is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise BadInput(f"{what}: labels must be in 0..{num_classes - 1}, found {y.min()}..{y.max()}; "
                           f"use the right files for this dataset")


def _facts(source: _Source, name: str, raw: RawData) -> tuple[int, int, int, float, str]:
    """(num_classes, channels, input_size, eps, augmentation); checked against a built-in's facts."""
    _, c, h, _ = raw.x.shape
    if source.kind in ("npz", "folder"):
        if len(raw.y) == 0:
            raise BadInput(f"{source.path} holds no images; add some")
        k = int(raw.y.max()) + 1
        present = np.unique(raw.y)
        if raw.y.min() < 0 or len(present) != k:
            missing = sorted(set(range(k)) - set(present.tolist()))[:5]
            raise BadInput(f"{source.path}: labels must be 0..K-1 with every class present "
                           f"(min {raw.y.min()}, missing {missing}); renumber them")
        # 3-channel user images are taken as natural images (flip-invariant); 1-channel as digit-like
        return k, c, h, USER_EPS, "crop-flip" if c == 3 else "shift"
    spec = DATASETS.get(source.kind)
    for x in (raw.x, raw.x_test):
        if x is not None and x.shape[1:] != (spec.channels, spec.input_size, spec.input_size):
            raise BadInput(f"{source.path}: {name} images should be {spec.channels}×{spec.input_size}×"
                           f"{spec.input_size}, found {'×'.join(map(str, x.shape[1:]))}; "
                           f"use the right files for this dataset")
    _check_labels(raw, spec.num_classes, f"{source.path} ({name})")
    return spec.num_classes, spec.channels, spec.input_size, spec.default_eps, spec.augmentation


@functools.lru_cache(maxsize=2)
def _load(source: _Source, name: str, seed: int) -> Splits:
    raw = _read(source)
    num_classes, channels, size, eps, aug = _facts(source, name, raw)
    tr, va, te = split_indices(raw, seed, what=f"dataset {name}")
    x_test, y_test = (raw.x_test, raw.y_test) if raw.official_test else (raw.x, raw.y)
    train = Split(to_tensor(raw.x[tr]), _labels(raw.y[tr]))
    val = Split(to_tensor(raw.x[va]), _labels(raw.y[va]))
    test = Split(to_tensor(x_test[te]), _labels(y_test[te]))  # type: ignore[index]
    mean, std = channel_stats(train.x)
    info = DatasetInfo(name, num_classes, channels, size, mean, std, float(eps), aug)
    return Splits(info, train, val, test)


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0) -> Splits:
    """The dataset's fixed train/val/test splits for `seed` (cached: treat tensors as read-only).

    `data_dir` (else `$RCNAS_DATA`) is searched for file-based datasets, directly and in the
    dataset's standard sub-folder.
    """
    return _load(_resolve(name, data_dir), name.strip(), int(seed))


def dataset_shape(name: str, data_dir: str | Path | None = None) -> tuple[int, int, int]:
    """(input size, channels, classes): a built-in dataset's from its fixed facts, without its files
    (so costs can be printed before CIFAR is downloaded); a user's data by reading it."""
    if name.strip() in DATASETS:
        spec = DATASETS.get(name.strip())
        return spec.input_size, spec.channels, spec.num_classes
    info = dataset_info(name, data_dir)
    return info.input_size, info.channels, info.num_classes


def dataset_info(name: str, data_dir: str | Path | None = None, seed: int = 0) -> DatasetInfo:
    """The dataset's facts. mean/std are of the train split, so this loads (once: it is cached)."""
    return load_dataset(name, data_dir, seed).info
