"""Datasets: built-ins, every on-disk format (files written here in the real format), the splits
protocol, the pickle guard, missing-data messages, augmentation and batching."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rcnas.data import (
    DATASETS,
    DatasetInfo,
    Split,
    Splits,
    augment,
    dataset_info,
    iterate_batches,
    load_dataset,
)
from rcnas.data import base, catalog, loaders
from rcnas.errors import BadInput

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine-wide $RCNAS_DATA must not change what these tests find."""
    monkeypatch.delenv("RCNAS_DATA", raising=False)


def _class_counts(split: Split, k: int) -> np.ndarray:
    return np.bincount(split.y.numpy(), minlength=k)


def _check_splits(s: Splits, sizes: tuple[int, int, int]) -> None:
    info = s.info
    assert (len(s.train), len(s.val), len(s.test)) == sizes
    for part in (s.train, s.val, s.test):
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert part.x.shape[1:] == (info.channels, info.input_size, info.input_size)
        assert 0.0 <= part.x.min() and part.x.max() <= 1.0
        assert (_class_counts(part, info.num_classes) > 0).all()  # stratified: every class everywhere
    mean = s.train.x.mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(info.mean), mean, atol=1e-3)


# ---------------------------------------------------------------- built-ins

def test_digits_default_dataset() -> None:
    s = load_dataset("digits")
    assert s.info == DatasetInfo("digits", 10, 1, 8, s.info.mean, s.info.std, 0.15, "shift")
    _check_splits(s, (958, 240, 599))     # 1797: test 1/3, val 20% of the rest
    assert s.train.x.max() == 1.0         # 16/16: values were scaled by 1/16, not 1/255
    assert DATASETS.create("digits", seed=0) is s  # the registry entry loads (and hits the cache)
    assert dataset_info("digits") == s.info


def test_mnist5k_label_is_the_last_column() -> None:
    s = load_dataset("mnist5k")
    assert (s.info.num_classes, s.info.channels, s.info.input_size, s.info.default_eps) == (10, 1, 28, 0.3)
    _check_splits(s, (2666, 667, 1667))
    a = np.loadtxt(loaders.mnist5k_path(), delimiter=",", dtype=np.int64)
    counts = sum(_class_counts(p, 10) for p in (s.train, s.val, s.test))
    assert counts.tolist() == np.bincount(a[:, -1]).tolist()
    assert 0.1 < s.info.mean[0] < 0.15    # MNIST's well-known mean, so pixels (not labels) became x


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs the Debian package dataset-fashion-mnist "
                    "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian_package() -> None:
    s = load_dataset("fashion-mnist")
    assert (s.info.num_classes, s.info.default_eps, s.info.augmentation) == (10, 0.1, "shift")
    _check_splits(s, (54000, 6000, 10000))
    assert (_class_counts(s.val, 10) == 600).all() and (_class_counts(s.test, 10) == 1000).all()


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(BadInput, match="cifar10.*digits.*mnist5k.*npz:PATH"):
        load_dataset("imagenet-22k")
    with pytest.raises(BadInput, match="not found"):
        load_dataset("npz:/nonexistent/x.npz")


# ---------------------------------------------------------------- IDX (mnist, fashion-mnist)

def _write_idx(path: Path, a: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    data = header + a.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _idx_set(directory: Path, gz: bool, n_train: int = 100, n_test: int = 20) -> tuple[np.ndarray, ...]:
    """MNIST-format files whose image i has pixel (0, 0) = i, so splits can be traced back."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n)
        y = np.arange(n) % 10
        suffix = ".gz" if gz else ""
        _write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", x, gz)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", y, gz)
        arrays += [x, y]
    return tuple(arrays)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_gzipped_or_raw(tmp_path: Path, gz: bool) -> None:
    xtr, ytr, xte, yte = _idx_set(tmp_path / "mnist", gz)
    s = load_dataset("mnist", data_dir=tmp_path, seed=3)
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)  # val = 10% of official train
    assert torch.equal(s.test.x, torch.from_numpy(xte[:, None]).float() / 255)  # official test as is
    assert torch.equal(s.test.y, torch.from_numpy(yte.astype(np.int64)))
    ids = [(p.x[:, 0, 0, 0] * 255).round().long() for p in (s.train, s.val)]
    assert sorted(torch.cat(ids).tolist()) == list(range(100))       # train + val = official train
    for p, i in zip((s.train, s.val), ids):
        assert torch.equal(p.y, torch.from_numpy(ytr[i.numpy()].astype(np.int64)))
        assert torch.equal(p.x[:, 0], torch.from_numpy(xtr[i.numpy()]).float() / 255)


def test_idx_found_directly_in_data_dir_and_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _idx_set(tmp_path, gz=True)
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path).test) == 20
    monkeypatch.setenv("RCNAS_DATA", str(tmp_path))
    assert len(load_dataset("mnist").test) == 20


def test_bad_idx_magic_names_the_file(tmp_path: Path) -> None:
    _idx_set(tmp_path / "mnist", gz=False)
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + bad.read_bytes()[4:])  # 3-D magic on a label file
    with pytest.raises(BadInput, match=r"t10k-labels-idx1-ubyte has magic number 0x00000803"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(BadInput, match="magic number"):
        loaders.read_idx(tmp_path / "mnist" / "train-images-idx3-ubyte", ndim=1)


def test_truncated_idx_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x-idx3-ubyte"
    _write_idx(p, np.zeros((3, 28, 28), np.uint8), gz=False)
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(BadInput, match=r"x-idx3-ubyte holds 2363 bytes but its header \(3, 28, 28\) "
                                       r"needs 2368"):
        loaders.read_idx(p, 3)


# ---------------------------------------------------------------- CIFAR pickles

class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 `str` opcodes, like the official batches (cPickle, protocol 2)."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        size = bytes([n]) if n < 256 else struct.pack("<i", n)
        self.write((pickle.SHORT_BINSTRING if n < 256 else pickle.BINSTRING) + size + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes) -> None:
    import io
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(
        {b"batch_label": b"batch", label_key: labels, b"data": data, b"filenames": [b"f.png"] * len(labels)})
    # the official files were written by numpy 1.x, which names numpy.core (not numpy._core)
    path.write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def test_cifar10_batches(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    datas, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        ys = [i % 10 for i in range(20)]
        _write_cifar_batch(d / name, data, ys, b"labels")
        datas.append(data)
        labels.append(ys)
    assert b"numpy.core.multiarray" in (d / "test_batch").read_bytes()
    s = load_dataset("cifar10", data_dir=tmp_path)
    assert (s.info.channels, s.info.input_size, s.info.augmentation) == (3, 32, "crop-flip")
    assert s.info.default_eps == pytest.approx(8 / 255)
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)
    assert torch.equal(s.test.x, torch.from_numpy(datas[5].reshape(-1, 3, 32, 32)).float() / 255)
    assert s.test.y.tolist() == labels[5]
    train_pixels = {bytes(r) for r in np.concatenate(datas[:5])}
    pool = torch.cat([s.train.x, s.val.x])
    got = {bytes((x * 255).round().to(torch.uint8).reshape(-1).numpy()) for x in pool}
    assert got == train_pixels


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (1000, 3072), dtype=np.uint8)
    for name, n in (("train", 1000), ("test", 200)):
        _write_cifar_batch(tmp_path / name, data[:n], [i % 100 for i in range(n)], b"fine_labels")
    s = load_dataset("cifar100", data_dir=tmp_path)   # files directly in the data dir
    assert s.info.num_classes == 100
    assert (len(s.train), len(s.val), len(s.test)) == (900, 100, 200)
    assert (_class_counts(s.val, 100) == 1).all()
    assert s.test.y.tolist() == [i % 100 for i in range(200)]


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_cifar_batches_repacked_by_python3_load_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    """Python 3 writes bytes as `_codecs.encode(str, 'latin1')` at protocols 0-2 and arrays as
    `_frombuffer` at 5; both only rebuild data, so a re-packaged batch loads like the official one."""
    rng = np.random.default_rng(protocol)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    datas = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        datas[name] = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        batch = {b"batch_label": b"batch", b"labels": [i % 10 for i in range(20)], b"data": datas[name],
                 b"filenames": [b"f.png"] * 20}
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    if protocol <= 2:
        assert b"_codecs" in (d / "test_batch").read_bytes()
    s = load_dataset("cifar10", data_dir=tmp_path)
    assert torch.equal(s.test.x, torch.from_numpy(datas["test_batch"].reshape(-1, 3, 32, 32)).float() / 255)
    assert s.test.y.tolist() == [i % 10 for i in range(20)]


def test_a_pickled_codec_call_other_than_latin1_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    # _codecs.encode("x", "zlib") would run a codec: a batch only ever needs latin1
    path.write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01c_codecs\nencode\nq\x02X\x01\x00\x00\x00x"
                     b"X\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(BadInput, match=r"refusing to load .*batch: refused global _codecs.encode with encoding 'zlib'"):
        loaders.read_cifar_batch(path)
    good = tmp_path / "good"
    good.write_bytes(pickle.dumps({"a": b"xy"}, protocol=2))
    assert loaders.read_cifar_batch(good) == {"a": b"xy"}


def test_crafted_pickle_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=4))
    refused = r"refusing to load .*data_batch_1: refused global (posix|nt|os)\.system"
    with pytest.raises(BadInput, match=refused):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------- tiny-imagenet

def test_tinyimagenet_layout(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    colors = {"n02": (200, 30, 30), "n01": (20, 200, 40), "n03": (10, 20, 220)}  # label = sorted position
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(colors) + "\n")
    ann = []
    for w, c in colors.items():
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (64, 64), c).save(root / "train" / w / "images" / f"{w}_{i}.JPEG", "JPEG")
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(2):
            name = f"val_{w}_{i}.JPEG"
            Image.new("RGB", (64, 64), c).save(root / "val" / "images" / name, "JPEG")
            ann.append(f"{name}\t{w}\t0\t0\t63\t63")
    # the real set has some grayscale JPEGs: they must come out as RGB
    Image.new("L", (64, 64), 128).save(root / "train" / "n01" / "images" / "gray.JPEG", "JPEG")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    s = load_dataset("tinyimagenet", data_dir=tmp_path)
    assert (s.info.num_classes, s.info.channels, s.info.input_size) == (200, 3, 64)
    assert (len(s.train) + len(s.val), len(s.test)) == (31, 6)
    for part in (s.train, s.test):
        dominant = part.x.mean(dim=(2, 3)).argmax(dim=1)      # red n02, green n01, blue n03
        colorful = part.x.mean(dim=(2, 3)).std(dim=1) > 0.1    # (the gray image has no dominant channel)
        assert torch.equal(dominant[colorful], torch.tensor([1, 0, 2])[part.y[colorful]])


# ---------------------------------------------------------------- user data: npz and image folders

def _ids_images(n: int, layout: str, c: int = 1, float01: bool = False) -> np.ndarray:
    """Images 6×6 whose pixel (0,0,0) is the image's id; in the given layout."""
    x = np.zeros((n, c, 6, 6), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    x[:, :, 3, 3] = 255
    x = {"NCHW": x, "NHWC": x.transpose(0, 2, 3, 1), "NHW": x[:, 0]}[layout]
    return x.astype(np.float32) / 255 if float01 else x


@pytest.mark.parametrize("layout,c,float01", [
    ("NHW", 1, False), ("NHWC", 3, False), ("NCHW", 3, True), ("NHWC", 1, True), ("NCHW", 1, False)])
def test_npz_layouts(tmp_path: Path, layout: str, c: int, float01: bool) -> None:
    n = 60
    y = np.arange(n) % 3
    p = tmp_path / "mine.npz"
    np.savez(p, x=_ids_images(n, layout, c, float01), y=y)
    for name in (str(p), f"npz:{p}"):
        s = load_dataset(name, seed=1)
        assert s.info == DatasetInfo(name, 3, c, 6, s.info.mean, s.info.std, pytest.approx(8 / 255),
                                     "crop-flip" if c == 3 else "shift")
        _check_splits(s, (32, 8, 20))
        ids = torch.cat([(part.x[:, 0, 0, 0] * 255).round().long() for part in (s.train, s.val, s.test)])
        assert sorted(ids.tolist()) == list(range(n))   # disjoint, and together all the data
        assert torch.equal(s.train.y, torch.from_numpy(y)[(s.train.x[:, 0, 0, 0] * 255).round().long()])
        assert (s.train.x[:, :, 3, 3] == 1.0).all()      # layout understood: the marker pixel in place


@pytest.mark.parametrize("x,y,needle", [
    (np.full((30, 6, 6), 2.0, np.float32), np.arange(30) % 3, r"values in \[2.0, 2.0\]; scale it"),
    (np.zeros((30, 6, 6), np.int64), np.arange(30) % 3, "dtype int64; save uint8"),
    (np.zeros((30, 6, 7), np.uint8), np.arange(30) % 3, "not square"),
    (np.zeros((30, 3, 3, 3), np.uint8), np.arange(30) % 3, "ambiguous"),
    (np.zeros((30, 6, 6, 5), np.uint8), np.arange(30) % 3, r"expected x of shape \(N,H,W\)"),
    (np.zeros((30, 6, 6), np.uint8), np.arange(29) % 3, "needs 30 integer labels"),
    (np.zeros((30, 6, 6), np.uint8), np.arange(30) % 3 * 2, r"every class present .*missing \[1, 3\]"),
])
def test_bad_npz_is_a_clear_error(tmp_path: Path, x: np.ndarray, y: np.ndarray, needle: str) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, x=x, y=y)
    with pytest.raises(BadInput, match=needle):
        load_dataset(str(p))


def test_npz_without_y_or_with_objects(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", images=np.zeros((3, 6, 6), np.uint8))
    with pytest.raises(BadInput, match=r"has arrays \['images'\]; it needs 'x'"):
        load_dataset(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x=np.array([object()] * 3), y=np.zeros(3, int))
    with pytest.raises(BadInput, match="pickled objects"):
        load_dataset(f"npz:{tmp_path / 'b.npz'}")


def _image_folder(root: Path, mode: str, n: int = 10) -> None:
    for k, cls in enumerate(["cat", "ant", "bee"]):   # labels follow the sorted names: ant, bee, cat
        (root / cls).mkdir(parents=True)
        for i in range(n):
            value = 40 + 80 * k
            Image.new(mode, (12, 12), value if mode == "L" else (value, 0, 0)).save(root / cls / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image: ignored")


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3)])
def test_image_folder(tmp_path: Path, mode: str, channels: int) -> None:
    _image_folder(tmp_path / "pets", mode)
    for name in (str(tmp_path / "pets"), f"folder:{tmp_path / 'pets'}"):
        s = load_dataset(name)
        assert (s.info.num_classes, s.info.channels, s.info.input_size) == (3, channels, 12)
        _check_splits(s, (16, 4, 10))
        value = torch.tensor([120, 200, 40])[s.train.y] / 255   # ant, bee, cat were written 2nd, 3rd, 1st
        assert torch.allclose(s.train.x[:, 0, 5, 5], value)


def test_image_folder_odd_size_is_named(tmp_path: Path) -> None:
    _image_folder(tmp_path / "pets", "L")
    Image.new("L", (13, 13)).save(tmp_path / "pets" / "bee" / "odd.png")
    with pytest.raises(BadInput, match=r"bee/odd.png is 13x13 but .* is 12x12"):
        load_dataset(f"folder:{tmp_path / 'pets'}")


# ---------------------------------------------------------------- missing data

def test_missing_cifar_says_which_files_where(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(e.value)
    assert "data_batch_1" in msg and "data_batch_5" in msg and "test_batch" in msg
    assert f"{tmp_path / 'cifar-10-batches-py'}/" in msg and "--data-dir" in msg and "$RCNAS_DATA" in msg
    assert "\n" not in msg


def test_missing_fashion_mnist_mentions_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "not-installed")
    with pytest.raises(BadInput) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert f in msg
    assert "DIR/fashion-mnist/" in msg and "--data-dir DIR" in msg and "$RCNAS_DATA" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and str(tmp_path / "not-installed") in msg


def test_partial_data_names_the_missing_file(tmp_path: Path) -> None:
    _idx_set(tmp_path / "mnist", gz=True)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(BadInput, match=r"mnist lacks t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------- the splits protocol

def test_same_seed_same_splits_other_seed_other_splits() -> None:
    a = load_dataset("digits", seed=5)
    catalog._load.cache_clear()
    catalog._read.cache_clear()
    b = load_dataset("digits", seed=5)
    assert a is not b
    for p, q in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(p.x, q.x) and torch.equal(p.y, q.y)
    c = load_dataset("digits", seed=6)
    assert not torch.equal(a.test.x, c.test.x)


@pytest.mark.parametrize("official", [False, True])
def test_split_indices_disjoint_and_stratified(official: bool) -> None:
    y = np.repeat(np.arange(4), [30, 60, 90, 120])      # unbalanced classes
    raw = base.RawData(np.zeros((len(y), 1, 2, 2), np.uint8), y,
                       *((np.zeros((8, 1, 2, 2), np.uint8), np.arange(8) % 4) if official else (None, None)))
    tr, va, te = base.split_indices(raw, seed=0, what="test")
    if official:
        assert len(va) == 30 and len(te) == 8
        parts = {"train": (tr, 0.9), "val": (va, 0.1)}
        assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(y)))
    else:
        assert (len(tr), len(va), len(te)) == (160, 40, 100)
        parts = {"train": (tr, 160 / 300), "val": (va, 40 / 300), "test": (te, 1 / 3)}
        assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(y)))
    for idx, frac in parts.values():
        counts = np.bincount(y[idx], minlength=4)
        assert np.all(np.abs(counts - frac * np.bincount(y)) <= 1), counts


def test_too_few_examples_per_class_is_a_clear_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "tiny.npz", x=np.zeros((5, 4, 4), np.uint8), y=np.array([0, 0, 0, 0, 1]))
    with pytest.raises(BadInput, match="give every class more examples"):
        load_dataset(str(tmp_path / "tiny.npz"))


def test_subset_is_stratified_and_deterministic() -> None:
    y = torch.from_numpy(np.repeat(np.arange(3), [100, 50, 10]))
    split = Split(torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1), y)
    a, b = split.subset(32, seed=1), split.subset(32, seed=1)
    assert len(a) == 32 and torch.equal(a.x, b.x)
    assert np.bincount(a.y.numpy()).tolist() == [20, 10, 2]
    assert len(set(a.x.flatten().tolist())) == 32                       # no duplicates
    assert torch.equal(y[a.x.flatten().long()], a.y)                     # x and y stay paired
    assert not torch.equal(a.x, split.subset(32, seed=2).x)
    assert split.subset(1000, seed=0) is split
    with pytest.raises(BadInput):
        split.subset(0, seed=0)


# ---------------------------------------------------------------- augmentation and batches

@pytest.mark.parametrize("kind", ["crop-flip", "shift"])
def test_augment_keeps_shape_range_and_mass(kind: str) -> None:
    x = torch.zeros(64, 3, 32, 32)
    x[:, :, 8:24, 8:24] = torch.rand(64, 3, 16, 16)    # content away from the border: moved, never cut
    out = augment(x, kind, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    assert (out != x).any(dim=(1, 2, 3)).float().mean() > 0.5
    again = augment(x, kind, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, augment(x, kind, torch.Generator().manual_seed(1)))


def test_shift_never_flips_and_moves_at_most_h_over_8() -> None:
    x = torch.zeros(200, 1, 16, 16)
    x[:, 0, 7, 5] = 1.0                                  # one lit pixel
    out = augment(x, "shift", torch.Generator().manual_seed(0))
    pos = out[:, 0].flatten(1).argmax(dim=1)
    dy, dx = pos // 16 - 7, pos % 16 - 5
    assert dy.abs().max() == 2 and dx.abs().max() == 2   # max(1, 16 // 8) = 2, and it is reached
    digits = torch.zeros(50, 1, 8, 8)
    digits[:, 0, 3, 3] = 1.0
    pos = augment(digits, "shift", torch.Generator().manual_seed(0))[:, 0].flatten(1).argmax(dim=1)
    assert (pos // 8 - 3).abs().max() == 1 and (pos % 8 - 3).abs().max() == 1


def test_augment_none_is_identity_and_unknown_kind_fails() -> None:
    x = torch.rand(4, 1, 8, 8)
    assert augment(x, "none", torch.Generator()) is x
    with pytest.raises(BadInput, match="crop-flip, shift, none"):
        augment(x, "mixup", torch.Generator())


@pytest.mark.parametrize("drop_last", [False, True])
def test_iterate_batches_covers_each_sample_once(drop_last: bool) -> None:
    split = Split(torch.arange(103, dtype=torch.float32).view(-1, 1, 1, 1), torch.arange(103))
    g = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(2):
        batches = list(iterate_batches(split, 10, shuffle=True, generator=g, drop_last=drop_last))
        assert [len(b[1]) for b in batches] == [10] * 10 + ([] if drop_last else [3])
        ys = torch.cat([b[1] for b in batches])
        assert all(torch.equal(b[0].flatten().long(), b[1]) for b in batches)   # pairs kept
        assert len(set(ys.tolist())) == len(ys) == (100 if drop_last else 103)
        epochs.append(ys)
    assert not torch.equal(epochs[0], epochs[1])                              # reshuffled per epoch
    plain = torch.cat([b[1] for b in iterate_batches(split, 32, shuffle=False)])
    assert torch.equal(plain, torch.arange(103))
    with pytest.raises(ValueError, match="Generator"):
        next(iterate_batches(split, 10, shuffle=True))


def test_teacher_list_of_a_built_in_dataset_needs_none_of_its_files(tmp_path: Path, capsys, monkeypatch) -> None:
    """Costs depend only on the input shape, which a built-in dataset fixes: no CIFAR files needed."""
    import json

    from rcnas.cli import main
    from rcnas.cost import arch_cost
    from rcnas.models import teacher_arch
    monkeypatch.setenv("RCNAS_DATA", str(tmp_path))  # an empty data dir: cifar10 is not there
    with pytest.raises(BadInput):
        load_dataset("cifar10")
    assert main(["teacher", "list", "--dataset", "cifar10", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["teachers"]}
    assert rows["wrn-28-2"]["macs"] == arch_cost(teacher_arch("wrn-28-2"), 32, 3, 10).macs
