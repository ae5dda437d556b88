"""Tests for bnviz.data, each against an oracle computed here (numpy, sklearn, hand-written files)."""
from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bnviz import data
from bnviz.config import Config

SIDE = 28
N_TRAIN, N_TEST = 60, 30
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------------------------- helpers

def idx_images(images: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray, magic: int = 2049) -> bytes:
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def fake_mnist(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (N_TRAIN, SIDE, SIDE), dtype=np.uint8), rng.integers(0, 10, N_TRAIN),
            rng.integers(0, 256, (N_TEST, SIDE, SIDE), dtype=np.uint8), rng.integers(0, 10, N_TEST))


def write_idx(folder: Path, arrays, gz: bool = False) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_te, y_te = arrays
    blobs = (idx_images(x_tr), idx_labels(y_tr), idx_images(x_te), idx_labels(y_te))
    paths = {}
    for name, blob in zip(IDX_NAMES, blobs):
        path = folder / (name + ".gz" if gz else name)
        path.write_bytes(gzip.compress(blob) if gz else blob)
        paths[name] = path
    return paths


def assert_same_arrays(loaded, expected) -> None:
    for got, want in zip(loaded, expected):
        np.testing.assert_array_equal(got, want)
    assert loaded.x_train.shape == (N_TRAIN, SIDE, SIDE)
    assert loaded.y_train.dtype == np.int64


# ---------------------------------------------------------------------------------- digits

def test_digits_shapes_and_split_sizes():
    flat = data.load(Config(dataset="digits"))
    image = data.load(Config(dataset="digits-image"))
    assert len(flat.x_train) + len(flat.x_test) == 1797
    assert (len(flat.x_train), len(flat.x_test)) == (1437, 360)  # sklearn rounds the test size up
    assert flat.input_shape == (64,) and flat.n_features == 64 and flat.image_shape is None
    assert image.x_train.shape == (1437, 1, 8, 8) and image.image_shape == (1, 8, 8)
    assert image.n_features == 64 and image.input_shape == (1, 8, 8)
    for d in (flat, image):
        assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
        assert d.n_classes == 10 and d.name in ("digits", "digits-image")


def test_cnn_arch_gives_image_form_for_flat_digits():
    d = data.load(Config(dataset="digits", arch="cnn"))
    assert d.x_train.shape[1:] == (1, 8, 8) and d.image_shape == (1, 8, 8)


def test_split_is_stratified():
    d = data.load(Config(dataset="digits"))
    total = Counter(load_digits().target.tolist())
    test = Counter(d.y_test.tolist())
    for label, count in total.items():
        assert abs(test[label] - 0.2 * count) <= 1


def test_digits_loader_returns_what_sklearn_load_digits_returns():
    pixels, target = data.load_digits()
    digits = load_digits()
    np.testing.assert_array_equal(pixels, digits.data)
    np.testing.assert_array_equal(target, digits.target)
    assert pixels.dtype == digits.data.dtype


def test_loading_digits_does_not_import_sklearn():
    # The start-up path (first chart) must not pay for scikit-learn's import.
    import subprocess
    import sys
    code = ("import sys; from bnviz import data; from bnviz.config import Config; "
            "data.load(Config()); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


LABEL_SETS = {
    "digits": lambda: load_digits().target,
    "balanced 2": lambda: np.repeat([0, 1], 50),
    "unbalanced": lambda: np.array([0] * 37 + [1] * 11 + [2] * 5 + [3] * 2),
    "ties": lambda: np.repeat(np.arange(3), 7),
    "string labels": lambda: np.array(list("abcab" * 9)),
    "odd sizes": lambda: np.random.default_rng(1).integers(0, 4, 203),
}


@pytest.mark.parametrize("labels", sorted(LABEL_SETS))
@pytest.mark.parametrize("seed", [0, 1, 7, 42, 9999])
def test_stratified_split_equals_sklearn_train_test_split(labels, seed):
    from sklearn.model_selection import train_test_split
    y = LABEL_SETS[labels]()
    idx = np.arange(len(y))
    want_train, want_test = train_test_split(idx, test_size=data.TEST_FRACTION, random_state=seed, stratify=y)
    got_train, got_test = data.stratified_split(y, data.TEST_FRACTION, seed)
    np.testing.assert_array_equal(got_train, want_train)
    np.testing.assert_array_equal(got_test, want_test)


def test_stratified_split_refuses_a_class_of_one():
    with pytest.raises(ValueError):
        data.stratified_split(np.array([0, 0, 0, 1, 1, 1, 2]), 0.2, 0)


def test_unstandardized_digits_are_pixels_in_unit_range():
    d = data.load(Config(dataset="digits", standardize=False))
    x = torch.cat([d.x_train, d.x_test]).numpy()
    reference = np.sort(load_digits().data / 16.0, axis=0)
    np.testing.assert_allclose(np.sort(x, axis=0), reference, atol=1e-6)


def test_same_seed_identical_other_seed_different():
    a, b = data.load(Config(seed=3)), data.load(Config(seed=3))
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    c = data.load(Config(seed=4))
    assert not torch.equal(a.y_test, c.y_test)


def test_standardization_uses_train_statistics_and_keeps_constant_features_finite():
    raw = data.load(Config(dataset="digits", standardize=False))
    std = data.load(Config(dataset="digits"))
    x_train, x_test = raw.x_train.numpy().astype(np.float64), raw.x_test.numpy().astype(np.float64)
    mean, sd = x_train.mean(0), x_train.std(0)
    constant = sd == 0
    assert constant.any()  # digits has blank pixels: this test must exercise them
    expected_test = (x_test - mean) / np.where(constant, 1.0, sd)
    np.testing.assert_allclose(std.x_test.numpy(), expected_test, atol=1e-4)

    z = std.x_train.numpy()
    assert np.isfinite(z).all() and np.isfinite(std.x_test.numpy()).all()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0)[~constant], 1.0, atol=1e-4)
    assert (z[:, constant] == 0).all()


def test_image_standardization_is_one_scalar():
    raw = data.load(Config(dataset="digits-image", standardize=False)).x_train.numpy().astype(np.float64)
    z = data.load(Config(dataset="digits-image")).x_train.numpy()
    np.testing.assert_allclose(z, (raw - raw.mean()) / raw.std(), atol=1e-5)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4


# ---------------------------------------------------------------------------------- synthetic

@pytest.mark.parametrize("name, n_classes", [("moons", 2), ("circles", 2), ("spirals", 2), ("blobs", 3)])
def test_synthetic_sets(name, n_classes):
    d = data.load(Config(dataset=name, n_samples=500, seed=1))
    assert d.x_train.shape == (400, 2) and d.x_test.shape == (100, 2)
    assert d.n_classes == n_classes and d.image_shape is None
    counts = Counter(torch.cat([d.y_train, d.y_test]).tolist())
    assert sorted(counts) == list(range(n_classes))
    assert max(counts.values()) - min(counts.values()) <= 1
    assert torch.equal(d.x_train, data.load(Config(dataset=name, n_samples=500, seed=1)).x_train)
    assert not torch.equal(d.x_train, data.load(Config(dataset=name, n_samples=500, seed=2)).x_train)


def assert_covariance(x: np.ndarray, correlation: float, scale: tuple[float, float]) -> None:
    s1, s2 = scale
    want = np.array([[s1**2, correlation * s1 * s2], [correlation * s1 * s2, s2**2]])
    n = len(x)
    # Standard error of a sample covariance entry of Gaussians: sqrt((S_ii S_jj + S_ij^2) / n).
    se = np.sqrt((np.outer(np.diag(want), np.diag(want)) + want**2) / n)
    assert np.all(np.abs(np.cov(x, rowvar=False) - want) < 5 * se + 1e-12)


@pytest.mark.parametrize("correlation, scale", [(0.0, (1.0, 1.0)), (0.8, (2.0, 0.5)), (-0.6, (0.3, 3.0))])
def test_correlated_gaussian_covariance(correlation, scale):
    x = data.correlated_gaussian(20_000, correlation, scale, seed=5)
    assert x.shape == (20_000, 2)
    assert np.all(np.abs(x.mean(0)) < 5 * np.array(scale) / np.sqrt(len(x)))
    assert_covariance(x, correlation, scale)
    np.testing.assert_array_equal(x, data.correlated_gaussian(20_000, correlation, scale, seed=5))


def test_correlated_gaussian_rejects_impossible_correlation():
    with pytest.raises(ValueError):
        data.correlated_gaussian(10, 1.5, (1.0, 1.0), 0)


def test_blobs_clusters_have_requested_covariance():
    x, y = data.blobs(9000, correlation=0.7, scale=(1.5, 0.5), n_classes=3, seed=2)
    assert x.shape == (9000, 2) and sorted(set(y.tolist())) == [0, 1, 2]
    centres = [x[y == k].mean(0) for k in range(3)]
    for k in range(3):
        assert_covariance(x[y == k] - centres[k], 0.7, (1.5, 0.5))
    assert min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)) > 3


# ---------------------------------------------------------------------------------- shifts

def test_shift_kinds_against_numpy():
    x = torch.randn(7, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a = 0.7
    xn = x.numpy().astype(np.float64)
    per_sample_mean = xn.reshape(7, -1).mean(1)[:, None, None, None]
    expected = {
        "none": xn,
        "offset": xn + a,
        "scale": xn * (1 + a),
        "contrast": (xn - per_sample_mean) * (1 + a) + per_sample_mean,
    }
    for kind, want in expected.items():
        got = data.shift_features(x, kind, a, 0)
        assert got.shape == x.shape and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5, err_msg=kind)
    with pytest.raises(ValueError):
        data.shift_features(x, "rotate", a, 0)


def test_contrast_keeps_each_sample_mean():
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    got = data.shift_features(x, "contrast", 2.0, 0)
    torch.testing.assert_close(got.mean(1), x.mean(1), atol=1e-5, rtol=0)


def test_load_shifts_only_the_test_split_after_standardization():
    base = data.load(Config(dataset="moons", n_samples=200))
    moved = data.load(Config(dataset="moons", n_samples=200, shift="offset", shift_amount=1.5))
    assert torch.equal(base.x_train, moved.x_train)
    torch.testing.assert_close(moved.x_test, base.x_test + 1.5)
    again = data.shifted(base, "scale", 0.5)
    assert again.x_train is base.x_train and torch.equal(again.y_test, base.y_test)
    torch.testing.assert_close(again.x_test, base.x_test * 1.5)


# ---------------------------------------------------------------------------------- batches

def test_batches_drop_remainder_and_cover_the_rest_once():
    x = torch.arange(103, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(103)
    out = list(data.batches(x, y, 10, torch.Generator().manual_seed(0)))
    assert len(out) == 10 and all(len(xb) == 10 == len(yb) for xb, yb in out)
    seen = torch.cat([yb for _, yb in out])
    assert len(set(seen.tolist())) == 100
    assert all(torch.equal(xb.squeeze(1).long(), yb) for xb, yb in out)  # pairs stay aligned
    again = list(data.batches(x, y, 10, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(out, again))


def test_batch_larger_than_data_is_one_batch_of_everything():
    x, y = torch.randn(12, 3), torch.arange(12)
    out = list(data.batches(x, y, 64, torch.Generator().manual_seed(0)))
    assert len(out) == 1 and sorted(out[0][1].tolist()) == list(range(12))


# ---------------------------------------------------------------------------------- MNIST files

@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx(tmp_path, gz):
    arrays = fake_mnist()
    write_idx(tmp_path, arrays, gz=gz)
    assert_same_arrays(data.load_mnist(tmp_path, "mnist"), arrays)


@pytest.mark.parametrize("kind, flat", [("mnist", False), ("fashion-mnist", True)])
def test_load_mnist_npz(tmp_path, kind, flat):
    x_tr, y_tr, x_te, y_te = arrays = fake_mnist(1)
    if flat:
        x_tr, x_te = x_tr.reshape(N_TRAIN, -1), x_te.reshape(N_TEST, -1)
    np.savez_compressed(tmp_path / f"{kind}.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    assert_same_arrays(data.load_mnist(tmp_path, kind), arrays)


def test_missing_files_name_directory_and_files(tmp_path):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_mnist(tmp_path, "fashion-mnist")
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for part in (str(tmp_path), *IDX_NAMES, "fashion-mnist.npz", "download"):
        assert part in message


def test_load_reads_env_dir_subsamples_and_picks_form(tmp_path, monkeypatch):
    monkeypatch.setenv("BNVIZ_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match=str(tmp_path / "mnist")):
        data.load(Config(dataset="mnist"))
    write_idx(tmp_path / "mnist", fake_mnist())
    flat = data.load(Config(dataset="mnist", n_samples=50, seed=1))
    assert flat.x_train.shape == (50, 784) and flat.x_test.shape == (N_TEST, 784)
    assert flat.image_shape is None and flat.n_classes == 10 and flat.name == "mnist"
    image = data.load(Config(dataset="mnist", n_samples=50, seed=1, arch="cnn"))
    assert image.x_train.shape == (50, 1, SIDE, SIDE) and image.image_shape == (1, SIDE, SIDE)
    assert torch.equal(flat.y_train, data.load(Config(dataset="mnist", n_samples=50, seed=1)).y_train)
    assert not torch.equal(flat.y_train, data.load(Config(dataset="mnist", n_samples=50, seed=2)).y_train)
    raw = data.load(Config(dataset="mnist", n_samples=50, standardize=False, arch="cnn"))
    assert 0 <= raw.x_train.min() and raw.x_train.max() <= 1


def corrupt_then_load(folder: Path, name: str, blob: bytes) -> str:
    (folder / name).write_bytes(blob)
    with pytest.raises(data.DataFormatError) as info:
        data.load_mnist(folder, "mnist")
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_wrong_magic(tmp_path):
    x_tr = fake_mnist()[0]
    write_idx(tmp_path, fake_mnist())
    message = corrupt_then_load(tmp_path, IDX_NAMES[0], idx_images(x_tr, magic=2049))
    assert IDX_NAMES[0] in message and "magic" in message


def test_truncated_file(tmp_path):
    x_tr = fake_mnist()[0]
    write_idx(tmp_path, fake_mnist())
    message = corrupt_then_load(tmp_path, IDX_NAMES[0], idx_images(x_tr)[:-100])
    assert IDX_NAMES[0] in message and "truncated" in message


def test_label_count_mismatch(tmp_path):
    y_tr = fake_mnist()[1]
    write_idx(tmp_path, fake_mnist())
    message = corrupt_then_load(tmp_path, IDX_NAMES[1], idx_labels(y_tr[:-1]))
    assert IDX_NAMES[1] in message and f"{N_TRAIN - 1} labels for {N_TRAIN} images" in message


def test_labels_out_of_range(tmp_path):
    y_tr = fake_mnist()[1].copy()
    y_tr[3] = 12
    write_idx(tmp_path, fake_mnist())
    assert "0..9" in corrupt_then_load(tmp_path, IDX_NAMES[1], idx_labels(y_tr))


def test_file_over_size_cap(tmp_path, monkeypatch):
    write_idx(tmp_path, fake_mnist(), gz=True)
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 1000)
    with pytest.raises(data.DataFormatError, match="limit"):
        data.load_mnist(tmp_path, "mnist")


def test_bad_gzip_and_bad_npz(tmp_path):
    write_idx(tmp_path, fake_mnist(), gz=True)
    assert IDX_NAMES[2] in corrupt_then_load(tmp_path, IDX_NAMES[2] + ".gz", b"not gzip at all")

    other = tmp_path / "npz"
    other.mkdir()
    x_tr, y_tr, x_te, _ = fake_mnist()
    np.savez(other / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te)
    with pytest.raises(data.DataFormatError, match="y_test"):
        data.load_mnist(other, "mnist")
    np.savez(other / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te,
             y_test=np.array([None] * N_TEST, dtype=object))
    with pytest.raises(data.DataFormatError, match="mnist.npz"):
        data.load_mnist(other, "mnist")


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError):
        data.load(Config(dataset="cifar"))
