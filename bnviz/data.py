"""The data sets the visualizer trains on, built from a :class:`~bnviz.config.Config`.

Everything here is local: digits ship inside scikit-learn, the 2-D sets are generated, and
MNIST / Fashion-MNIST are read from files the user put on disk. Nothing is downloaded, ever,
so the app behaves the same offline and a shared link cannot make the server fetch anything.

Shape convention (what the model builder can rely on):

* ``"digits-image"`` is always images, ``(N, 1, 8, 8)``.
* ``"digits"``, ``"mnist"`` and ``"fashion-mnist"`` are flat ``(N, 64)`` / ``(N, 784)`` for the
  MLP and images ``(N, 1, H, W)`` when ``config.arch == "cnn"``: the same pixels, in the form the
  network consumes.
* The synthetic sets (moons, circles, spirals, blobs) are always flat ``(N, 2)``.

``Dataset.image_shape`` is ``(C, H, W)`` exactly when the tensors are in image form.
"""
from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from bnviz.config import DATASETS, SHIFTS, Config

TEST_FRACTION = 0.2
MNIST_KINDS = ("mnist", "fashion-mnist")
MNIST_SIDE = 28
IDX_IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# The real files are ~47 MB uncompressed (images) at most; the cap stops a wrong or hostile
# file (or a gzip / zip bomb) from exhausting the memory of a server shared by students.
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_MNIST_TEST = 10_000
MIN_MNIST_TEST = 1_000
_DISPLAY_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


class DataNotFoundError(FileNotFoundError):
    """The MNIST-style files are not on disk; the message says exactly where to put them."""


class DataFormatError(ValueError):
    """A data file exists but is not what it claims to be; the message names file and defect."""


# eq=False: field-wise equality would compare tensors with ``==`` (an element-wise tensor, not a
# bool), so identity equality and hashing are the only ones that work.
@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split ready for training: float32 features, int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    name: str
    image_shape: tuple[int, int, int] | None = None

    @property
    def n_features(self) -> int:
        """Flat size of one sample: the input width of an MLP."""
        return math.prod(self.x_train.shape[1:])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample as stored (flat for the MLP, (C, H, W) for the CNN)."""
        return tuple(self.x_train.shape[1:])


class MnistArrays(NamedTuple):
    """Raw MNIST-style arrays: uint8 images (N, 28, 28) and int64 labels in 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ----------------------------------------------------------------------------------------------
# Entry point


def load(config: Config) -> Dataset:
    """Build the data set a run trains on, from ``config``'s data fields alone.

    A pure function of (dataset, seed, n_samples, standardize, shift, shift_amount, and arch for
    the flat/image choice): the same config gives identical tensors, so callers may cache it.
    Digits ignore ``n_samples`` (all 1797 images are used); MNIST subsamples to it.
    Raises :class:`DataNotFoundError` / :class:`DataFormatError` for missing or bad MNIST files.
    """
    if config.dataset not in DATASETS:
        raise ValueError(f"unknown data set {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    image_form = config.dataset == "digits-image" or (
        config.arch == "cnn" and config.dataset in ("digits", *MNIST_KINDS))

    if config.dataset in MNIST_KINDS:
        raw = load_mnist(None, config.dataset)
        x_train, y_train, x_test, y_test = _subsample_mnist(raw, config.n_samples, config.seed)
        x_train = x_train.astype(np.float64) / 255.0
        x_test = x_test.astype(np.float64) / 255.0
        side, n_classes = MNIST_SIDE, 10
    elif config.dataset in ("digits", "digits-image"):
        pixels, target = load_digits()
        x = pixels / 16.0  # pixels are counts 0..16; [0, 1] like every other image set
        side, n_classes = 8, 10
        x_train, x_test, y_train, y_test = _split(x, target, config.seed)
    else:
        x, y = _synthetic(config.dataset, config.n_samples, config.seed)
        n_classes = int(y.max()) + 1
        x_train, x_test, y_train, y_test = _split(x, y, config.seed)

    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    if config.standardize:
        x_train, x_test = _standardize(x_train, x_test, per_feature=not image_form)
    image_shape = (1, side, side) if image_form else None
    form = (-1, *image_shape) if image_shape else (-1, x_train.shape[1])
    x_test_t = shift_features(_features(x_test, form), config.shift, config.shift_amount)
    return Dataset(
        x_train=_features(x_train, form), y_train=_labels(y_train),
        x_test=x_test_t, y_test=_labels(y_test),
        n_classes=n_classes, name=config.dataset, image_shape=image_shape,
    )


def _features(x: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(shape))


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: pixels (1797, 64) as float64 counts 0..16 and int labels,
    the arrays ``sklearn.datasets.load_digits()`` returns as ``data`` and ``target``.

    Read from the CSV file scikit-learn ships, without importing scikit-learn: that import
    (scipy included) costs ~2 s, which every new server paid before its first chart.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    folders = spec.submodule_search_locations if spec is not None else None
    path = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if path is None or not path.is_file():  # another layout: let scikit-learn find its file
        from sklearn.datasets import load_digits as sklearn_load_digits

        digits = sklearn_load_digits()
        return digits.data, digits.target
    data = np.loadtxt(path, delimiter=",")  # what sklearn.datasets.load_digits reads, the same way
    return data[:, :-1], data[:, -1].astype(int)


def _split(x: np.ndarray, y: np.ndarray, seed: int) -> list[np.ndarray]:
    # Stratified so that the test accuracy of a small set is not skewed by a class the split
    # happened to starve.
    train, test = stratified_split(y, TEST_FRACTION, seed)
    return [x[train], x[test], y[train], y[test]]


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of ``sklearn.model_selection.train_test_split(..., test_size=
    test_fraction, random_state=seed, stratify=y)``, the same indices in the same order.

    Written out (from scikit-learn's StratifiedShuffleSplit and _approximate_mode, BSD-3) so that
    the default data needs no scikit-learn import at start-up; ``tests/test_data.py`` checks it
    against scikit-learn itself for many seeds and label sets.
    """
    y = np.asarray(y)
    n = len(y)
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"cannot stratify {n} samples of {len(classes)} classes into {n_train} + {n_test}")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)  # scikit-learn's check_random_state(int): the legacy generator
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        members = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(members[: n_i[i]])
        test.extend(members[n_i[i]: n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``n_draws`` to take from each class: proportional, floored, the remainder
    given to the largest fractional parts (ties broken by ``rng``), as scikit-learn does."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def _standardize(x_train: np.ndarray, x_test: np.ndarray, *, per_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    # Statistics come from the train split only: using test statistics would leak the test
    # distribution into training (and would silently undo a covariate shift).
    if per_feature:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        # Constant features (digits' always-blank corner pixels) have std 0; dividing by 1
        # leaves them at exactly 0 instead of producing 0/0 = NaN that would poison training.
        std = np.where(std > 0, std, 1.0)
    else:
        # Images: one scalar keeps the relative brightness of pixels, which a CNN relies on.
        mean, std = x_train.mean(), x_train.std()
        std = std if std > 0 else 1.0
    return (x_train - mean) / std, (x_test - mean) / std


# ----------------------------------------------------------------------------------------------
# Synthetic 2-D sets


def _synthetic(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if name == "moons":
        from sklearn.datasets import make_moons

        return make_moons(n, noise=0.15, random_state=seed)
    if name == "circles":
        from sklearn.datasets import make_circles

        return make_circles(n, noise=0.08, factor=0.5, random_state=seed)
    if name == "spirals":
        return spirals(n, seed=seed)
    return blobs(n, seed=seed)


def spirals(n: int, *, noise: float = 0.03, turns: float = 1.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals, (x (n, 2), y (n,)): a 2-D set no linear model can separate.

    Exists because it needs depth (unlike moons) and shows how BN changes what a deep MLP learns.
    Coordinates lie roughly in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    # sqrt spreads points evenly along the arm instead of crowding the centre; the 0.1 offset
    # keeps the two arms from meeting at the origin, where the classes would be inseparable.
    t = 0.1 + 0.9 * np.sqrt(rng.uniform(size=n))
    angle = 2 * np.pi * turns * t + np.pi * y
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    return x + noise * rng.standard_normal((n, 2)), y.astype(np.int64)


def correlated_gaussian(n: int, correlation: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
                        seed: int = 0) -> np.ndarray:
    """``n`` zero-mean 2-D points with covariance [[s1², ρ s1 s2], [ρ s1 s2, s2²]].

    Exists so pages can show what standardization fixes (different scales) and what it does
    not (correlation, which only whitening removes).
    """
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [-1, 1], got {correlation}")
    s1, s2 = scale
    if s1 < 0 or s2 < 0:
        raise ValueError(f"scales must be non-negative, got {scale}")
    # Cholesky factor of the covariance, written out so that |ρ| = 1 (singular) still works.
    chol = np.array([[s1, 0.0], [correlation * s2, s2 * math.sqrt(1.0 - correlation**2)]])
    return np.random.default_rng(seed).standard_normal((n, 2)) @ chol.T


def blobs(n: int, *, correlation: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
          n_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters, (x (n, 2), y (n,)), each with the covariance of :func:`correlated_gaussian`.

    The knobs make anisotropic / correlated clusters, the case where per-feature scaling is not
    enough. Centres sit evenly on a circle of radius 3, classes are as equal in size as n allows.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    y = np.arange(n) % n_classes
    angles = 2 * np.pi * np.arange(n_classes) / n_classes + np.pi / 2
    centres = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres[y] + correlated_gaussian(n, correlation, scale, seed), y.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Covariate shift


def shift_features(x: torch.Tensor, kind: str, amount: float, seed: int = 0) -> torch.Tensor:
    """Return ``x`` under a covariate shift, to show how BN's running statistics go stale.

    ``"offset"`` adds ``amount``, ``"scale"`` multiplies by ``1 + amount``, ``"contrast"`` scales
    each sample around its own mean by ``1 + amount``, ``"none"`` returns ``x`` unchanged.
    Every kind is deterministic; ``seed`` is part of the signature so a random kind (noise) can be
    added without changing callers.
    """
    if kind not in SHIFTS:
        raise ValueError(f"unknown shift {kind!r}; choose one of {', '.join(SHIFTS)}")
    if kind == "offset":
        return x + amount
    if kind == "scale":
        return x * (1.0 + amount)
    if kind == "contrast":
        mean = x.reshape(len(x), -1).mean(dim=1).reshape(-1, *([1] * (x.dim() - 1)))
        return (x - mean) * (1.0 + amount) + mean
    return x


def shifted(dataset: Dataset, kind: str, amount: float) -> Dataset:
    """The same data with the test split shifted, so a page can compare source and target.

    Train data is untouched: the network (and BN's running statistics) saw the source domain.
    Shifts compose, so pass an unshifted data set to get exactly ``kind`` / ``amount``.
    """
    return dataclasses.replace(dataset, x_test=shift_features(dataset.x_test, kind, amount))


# ----------------------------------------------------------------------------------------------
# Mini-batches


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
            generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled mini-batches, reproducible through ``generator``.

    The last partial batch is dropped: a remainder of one sample would crash BatchNorm in
    training mode (one value has no variance), and a tiny remainder would give a noisy step with
    badly estimated batch statistics. Every batch therefore has the same size, except that a
    ``batch_size`` larger than the data set yields one batch of the whole set.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n = len(x)
    if n == 0:
        return
    size = min(batch_size, n)
    order = torch.randperm(n, generator=generator)
    for start in range(0, n - size + 1, size):
        index = order[start:start + size]
        yield x[index], y[index]


# ----------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST from local files


def data_dir(kind: str) -> Path:
    """Where the files of ``kind`` are looked for: ``$BNVIZ_DATA_DIR/<kind>/`` or ``~/.bnviz/data/<kind>/``.

    ``BNVIZ_DATA_DIR`` names the parent folder, with one subfolder per kind, because MNIST and
    Fashion-MNIST use the same IDX file names and could not share one folder.
    """
    root = os.environ.get("BNVIZ_DATA_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".bnviz" / "data"
    return base / kind


def load_mnist(directory: str | os.PathLike[str] | None, kind: str) -> MnistArrays:
    """Read MNIST or Fashion-MNIST from ``directory`` (``None``: :func:`data_dir`), never downloading.

    Accepts the four standard IDX files (each optionally ``.gz``) or one ``<kind>.npz`` with
    arrays ``x_train, y_train, x_test, y_test``. Every size and value is checked before use, so
    a bad file gives a :class:`DataFormatError` naming it instead of a crash deep in training.
    """
    if kind not in MNIST_KINDS:
        raise ValueError(f"unknown MNIST kind {kind!r}; choose one of {', '.join(MNIST_KINDS)}")
    folder = Path(directory) if directory is not None else data_dir(kind)
    found = {key: _find_idx(folder, name) for key, name in IDX_FILES.items()}
    if all(found.values()):
        x_train, y_train = _read_idx_pair(found["train_images"], found["train_labels"])
        x_test, y_test = _read_idx_pair(found["test_images"], found["test_labels"])
        return MnistArrays(x_train, y_train, x_test, y_test)
    npz = folder / f"{kind}.npz"
    if npz.is_file():
        return _read_npz(npz)
    missing = [IDX_FILES[key] for key, path in found.items() if path is None]
    raise DataNotFoundError(_not_found_message(folder, kind, missing))


def _not_found_message(folder: Path, kind: str, missing: list[str]) -> str:
    name = _DISPLAY_NAMES[kind]
    partial = ""
    if len(missing) < len(IDX_FILES):
        partial = f" Some IDX files are there, but these are missing: {', '.join(missing)}."
    return (
        f"{name} data not found in {folder}.{partial} This app never downloads anything: put "
        f"either the four IDX files {', '.join(IDX_FILES.values())} (each may be gzipped, with "
        f"a .gz suffix) or a single {kind}.npz holding arrays {', '.join(NPZ_KEYS)} in "
        f"{folder}. Set BNVIZ_DATA_DIR to use another parent folder (the files then go in its "
        f"'{kind}' subfolder)."
    )


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataFormatError(f"{path}: file is larger than the {MAX_FILE_BYTES} byte limit")
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            # Read one byte past the cap so that an oversized (or bomb) archive is detected
            # without ever holding more than the cap in memory.
            data = f.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: not a valid gzip file ({exc})") from exc
    if len(data) > MAX_FILE_BYTES:
        raise DataFormatError(f"{path}: decompressed size exceeds the {MAX_FILE_BYTES} byte limit")
    return data


def _idx_header(path: Path, data: bytes, magic: int, n_dims: int) -> tuple[int, ...]:
    header_bytes = 4 * (1 + n_dims)
    if len(data) < header_bytes:
        raise DataFormatError(f"{path}: {len(data)} bytes is too short for an IDX header")
    header = np.frombuffer(data, dtype=">u4", count=1 + n_dims)
    if int(header[0]) != magic:
        raise DataFormatError(
            f"{path}: magic number {int(header[0])} (0x{int(header[0]):08x}) is not the expected "
            f"{magic} (0x{magic:08x}); is this the right file, and decompressed?")
    dims = tuple(int(d) for d in header[1:])
    expected = header_bytes + math.prod(dims)
    if len(data) != expected:
        raise DataFormatError(
            f"{path}: header says dimensions {dims}, which needs {expected} bytes, but the file "
            f"has {len(data)} (truncated or corrupt)")
    return dims


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _read_bytes(images_path)
    n, rows, cols = _idx_header(images_path, data, IDX_IMAGE_MAGIC, 3)
    if (rows, cols) != (MNIST_SIDE, MNIST_SIDE):
        raise DataFormatError(f"{images_path}: images are {rows}x{cols}, expected {MNIST_SIDE}x{MNIST_SIDE}")
    images = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    data = _read_bytes(labels_path)
    (n_labels,) = _idx_header(labels_path, data, IDX_LABEL_MAGIC, 1)
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    _check_pair(images_path, labels_path, images, labels)
    return images, labels.astype(np.int64)


def _check_pair(images_where: object, labels_where: object, images: np.ndarray, labels: np.ndarray) -> None:
    if len(labels) != len(images):
        raise DataFormatError(
            f"{labels_where}: {len(labels)} labels for {len(images)} images in {images_where}")
    if len(images) == 0:
        raise DataFormatError(f"{images_where}: contains no images")
    if labels.min() < 0 or labels.max() > 9:
        raise DataFormatError(
            f"{labels_where}: labels must be 0..9, found values from {labels.min()} to {labels.max()}")


def _read_npz(path: Path) -> MnistArrays:
    arrays = _npz_arrays(path)
    x_train, x_test = (_npz_images(path, key, arrays[key]) for key in ("x_train", "x_test"))
    y_train, y_test = (_npz_labels(path, key, arrays[key]) for key in ("y_train", "y_test"))
    _check_pair(f"{path} [x_train]", f"{path} [y_train]", x_train, y_train)
    _check_pair(f"{path} [x_test]", f"{path} [y_test]", x_test, y_test)
    return MnistArrays(x_train, y_train, x_test, y_test)


# MemoryError: a tiny file can declare an impossible array shape in its header.
_NPZ_ERRORS = (OSError, ValueError, EOFError, MemoryError, zlib.error, zipfile.BadZipFile)


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataFormatError(f"{path}: file is larger than the {MAX_FILE_BYTES} byte limit")
    try:
        npz = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:
        raise DataFormatError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataFormatError(f"{path}: a single .npy array, expected an .npz archive of {', '.join(NPZ_KEYS)}")
    with npz:
        # np.load is lazy for .npz; checking the declared sizes first keeps a zip bomb from
        # being decompressed at all.
        if sum(info.file_size for info in npz.zip.infolist()) > MAX_FILE_BYTES:
            raise DataFormatError(f"{path}: decompressed size exceeds the {MAX_FILE_BYTES} byte limit")
        missing = [key for key in NPZ_KEYS if key not in npz.files]
        if missing:
            raise DataFormatError(f"{path}: missing arrays {', '.join(missing)} (needs {', '.join(NPZ_KEYS)})")
        try:
            return {key: npz[key] for key in NPZ_KEYS}
        except _NPZ_ERRORS as exc:
            # allow_pickle=False turns an object (pickled) array into a ValueError: a data file
            # must never be able to run code.
            raise DataFormatError(f"{path}: cannot read its arrays as plain numbers ({exc})") from exc


def _npz_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    pixels = MNIST_SIDE * MNIST_SIDE
    if x.ndim == 2 and x.shape[1] == pixels:
        x = x.reshape(len(x), MNIST_SIDE, MNIST_SIDE)
    if x.ndim != 3 or x.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise DataFormatError(f"{path} [{key}]: shape {x.shape}, expected (N, 28, 28) or (N, 784)")
    if not np.issubdtype(x.dtype, np.integer):
        raise DataFormatError(f"{path} [{key}]: dtype {x.dtype}, expected integer pixels 0..255")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise DataFormatError(f"{path} [{key}]: pixel values outside 0..255")
    return x.astype(np.uint8)


def _npz_labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"{path} [{key}]: expected a 1-D integer array, got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _subsample_mnist(raw: MnistArrays, n_samples: int, seed: int) -> tuple[np.ndarray, ...]:
    # Full MNIST (60k) makes a step-by-step visualizer slow; n_samples keeps a run interactive.
    rng = np.random.default_rng(seed)
    n_test = min(MAX_MNIST_TEST, max(MIN_MNIST_TEST, n_samples // 4))
    train = rng.permutation(len(raw.x_train))[:n_samples]
    test = rng.permutation(len(raw.x_test))[:n_test]
    return raw.x_train[train], raw.y_train[train], raw.x_test[test], raw.y_test[test]
