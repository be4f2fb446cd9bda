"""Dataset records, the fixed train/val/test protocol, the dataset registry and data-dir search.

Protocol (the same for every dataset, so results are comparable across runs):

* Splits are fixed by `seed` and stratified by class (sklearn `train_test_split(stratify=y)`).
* A dataset with an official test split keeps it as `test`; `val` is 10% of the official train.
* A dataset without one (digits, mnist5k, user data): `test` is 1/3 of all data, then `val` is 20%
  of the rest.
* The search (rewards, early stopping, model selection) only ever sees `val`; `test` is touched
  once, for the final evaluation of the chosen architecture. Otherwise the reported robustness would
  be selected on the numbers it reports.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rcnas.errors import BadInput
from rcnas.registry import Registry

TEST_FRACTION_NO_OFFICIAL = 1 / 3   # of all data, when there is no official test split
VAL_FRACTION_NO_OFFICIAL = 0.2      # of what is left after the test split
VAL_FRACTION_OFFICIAL = 0.1         # of the official train split
ENV_DATA_DIR = "RCNAS_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and an attack need to know about a dataset (no data)."""

    name: str
    num_classes: int
    channels: int
    input_size: int                 # square images: H = W = input_size
    mean: tuple[float, ...]         # per channel, of the train split, in [0, 1] units
    std: tuple[float, ...]
    default_eps: float              # L-inf budget in [0, 1] pixel units
    augmentation: str               # "crop-flip", "shift" or "none"

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean/std need {self.channels} values each")


@dataclass(frozen=True, eq=False)
class Split:
    """Images `x` (float32, N×C×H×W in [0, 1]) and labels `y` (int64, N).

    Loaded splits are cached and shared: treat the tensors as read-only.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 4 or self.x.dtype != torch.float32:
            raise ValueError(f"Split.x must be float32 N×C×H×W, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dim() != 1 or self.y.dtype != torch.int64 or len(self.y) != len(self.x):
            raise ValueError(f"Split.y must be int64 of length {len(self.x)}, got {self.y.dtype} "
                             f"{tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int, seed: int) -> Split:
        """`n` examples with the class proportions kept, the same for the same seed.

        Cheap proxies (few-shot fine-tuning, fast robustness estimates) then still see every class.
        """
        if n <= 0:
            raise BadInput(f"subset size must be positive, got {n}; ask for at least one example")
        if n >= len(self):
            return self
        idx = torch.from_numpy(stratified_indices(self.y.cpu().numpy(), n, seed)).to(self.y.device)
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True, eq=False)
class Splits:
    info: DatasetInfo
    train: Split
    val: Split     # the only split the search may look at
    test: Split    # final evaluation only


@dataclass(frozen=True, eq=False)
class RawData:
    """A dataset as read from disk: x is N×C×H×W uint8 (0..255) or float32 (0..1), y int64.

    `x_test`/`y_test` hold the official test split, or are None when the dataset has none.
    """

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def official_test(self) -> bool:
        return self.x_test is not None


def _no_dirs() -> tuple[Path, ...]:
    return ()


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in dataset: its fixed facts, where its files live and how to read them.

    Calling a spec loads it, so `DATASETS.create("digits", seed=1)` returns `Splits`.
    """

    name: str
    num_classes: int
    channels: int
    input_size: int
    default_eps: float
    augmentation: str
    read: Callable[[Path], RawData]       # reads from the located directory (or bundled file)
    files: tuple[tuple[str, ...], ...] = ()   # required files; each entry lists accepted names
    folder: str = ""                      # the standard sub-folder name under a data dir
    bundled: Callable[[], Path] | None = None  # the file shipped inside an installed package
    system_dirs: Callable[[], tuple[Path, ...]] = field(default=_no_dirs)  # searched last
    how_to_get: str = ""                  # appended to the missing-data message
    describe: str = ""                    # the files, in words, when the bare list says too little

    def __call__(self, data_dir: str | Path | None = None, seed: int = 0) -> Splits:
        from rcnas.data.catalog import load_dataset
        return load_dataset(self.name, data_dir=data_dir, seed=seed)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


# ---------------------------------------------------------------- data-dir search

def data_roots(data_dir: str | Path | None) -> list[Path]:
    """The user's data roots, in search order: `data_dir`, then `$RCNAS_DATA`."""
    roots = []
    for d in (data_dir, os.environ.get(ENV_DATA_DIR) or None):
        if d is not None:
            p = Path(d).expanduser()
            if p not in roots:
                roots.append(p)
    return roots


def candidate_dirs(spec: DatasetSpec, data_dir: str | Path | None) -> list[Path]:
    """Each root's standard sub-folder first (more specific), then the root itself, then system dirs."""
    dirs: list[Path] = []
    for root in data_roots(data_dir):
        dirs += [root / spec.folder, root] if spec.folder else [root]
    dirs += list(spec.system_dirs())
    return dirs


def find_file(directory: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` that is a file in `directory` (e.g. the gzipped or the raw IDX file)."""
    for n in names:
        if (directory / n).is_file():
            return directory / n
    return None


def locate(spec: DatasetSpec, data_dir: str | Path | None) -> Path:
    """The directory (or bundled file) holding `spec`'s data; a `BadInput` saying what to put where."""
    if spec.bundled is not None:
        return spec.bundled()
    dirs = candidate_dirs(spec, data_dir)
    for d in dirs:
        if all(find_file(d, names) is not None for names in spec.files):
            return d
    raise BadInput(missing_data_message(spec, data_dir, dirs))


def missing_data_message(spec: DatasetSpec, data_dir: str | Path | None, searched: list[Path]) -> str:
    files = spec.describe or ", ".join(" or ".join(names) for names in spec.files)
    roots = data_roots(data_dir)
    if roots:
        where = f"{roots[0] / spec.folder}/ (or directly in {roots[0]}/)" if spec.folder else f"{roots[0]}/"
        how = f"; --data-dir / ${ENV_DATA_DIR} name the parent directory"
    else:
        where = f"DIR/{spec.folder}/" if spec.folder else "DIR/"
        how = f" and pass --data-dir DIR or set ${ENV_DATA_DIR}=DIR"
    partial = ""
    for d in searched:
        found = [names for names in spec.files if find_file(d, names) is not None]
        if found:
            missing = [names[0] for names in spec.files if find_file(d, names) is None]
            partial = f"; {d} lacks {', '.join(missing)}"
            break
    looked = ", ".join(str(d) for d in searched) if searched else "nowhere (no --data-dir or $RCNAS_DATA)"
    extra = f"; or {spec.how_to_get}" if spec.how_to_get else ""
    return (f"{spec.name} data not found: put {files} in {where}{how}{extra}{partial} "
            f"(searched {looked})")


# ---------------------------------------------------------------- splits

def stratified_split(idx: np.ndarray, y: np.ndarray, test_size: float, seed: int,
                     what: str) -> tuple[np.ndarray, np.ndarray]:
    """Split the positions `idx` (labels `y[idx]`) into sorted (kept, held-out) index arrays."""
    from sklearn.model_selection import train_test_split  # heavy import (scipy): only when splitting

    try:
        kept, held = train_test_split(idx, test_size=test_size, stratify=y[idx],
                                      random_state=seed % 2**32)
    except ValueError as e:
        raise BadInput(f"cannot split {what} into stratified train/val/test parts ({e}); "
                       f"give every class more examples (at least 10 each)") from None
    return np.sort(kept), np.sort(held)


def split_indices(raw: RawData, seed: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: into `raw.x`, except test into `raw.x_test` when official."""
    every = np.arange(len(raw.y))
    if raw.official_test:
        train, val = stratified_split(every, raw.y, VAL_FRACTION_OFFICIAL, seed, what)
        return train, val, np.arange(len(raw.y_test))  # type: ignore[arg-type]
    rest, test = stratified_split(every, raw.y, TEST_FRACTION_NO_OFFICIAL, seed, what)
    train, val = stratified_split(rest, raw.y, VAL_FRACTION_NO_OFFICIAL, seed, what)
    return train, val, test


def stratified_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of `n` examples, each class getting its share (largest remainder rounding)."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    share = counts * (n / len(y))
    quota = np.floor(share).astype(np.int64)
    left = n - int(quota.sum())
    if left:
        order = np.lexsort((np.arange(len(classes)), -(share - quota)))  # biggest remainder first
        quota[order[:left]] += 1
    rng = np.random.default_rng(seed % 2**32)
    picked = [rng.permutation(np.flatnonzero(inverse == c))[:q] for c, q in enumerate(quota)]
    return np.sort(np.concatenate(picked))


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 0..255 or float 0..1 (numpy) -> float32 in [0, 1] (torch)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (rounded to 4 digits so configs and reports stay readable)."""
    std, mean = torch.std_mean(x, dim=(0, 2, 3), correction=0)
    std = std.clamp_min(1e-3)  # a constant channel must not divide by zero inside the model
    return (tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))
