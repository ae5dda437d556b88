"""bnviz.experiments.whitening against numpy/scipy: covariances, standardization, PCA/ZCA whitening, eigh gradients."""
import numpy as np
import pytest
import scipy.linalg
import torch

from bnviz.experiments import whitening
from bnviz.data import correlated_gaussian


@pytest.fixture(params=[(0.8, 3.0), (-0.95, 0.2), (0.0, 1.0)])
def points(request):
    rho, scale = request.param
    return correlated_gaussian(2000, rho, (1.0, scale), seed=1)


def test_covariance_and_correlation_are_numpys(points):
    np.testing.assert_allclose(whitening.covariance(points), np.cov(points.T, bias=True), rtol=1e-12)
    np.testing.assert_allclose(whitening.correlation(points), np.corrcoef(points.T), atol=1e-12)


def test_standardization_fixes_scale_but_keeps_the_correlation(points):
    z = whitening.standardize(points)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.var(axis=0), points.var(axis=0) / (points.var(axis=0) + whitening.EPS), rtol=1e-12)
    np.testing.assert_allclose(np.corrcoef(z.T), np.corrcoef(points.T), atol=1e-12)


@pytest.mark.parametrize("method", [whitening.pca_whitening, whitening.zca_whitening])
def test_whitened_covariance_is_the_identity(points, method):
    z = method(points, eps=0.0).apply(points)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(2), atol=1e-9)


def test_zca_is_the_symmetric_inverse_square_root_of_the_covariance(points):
    w = whitening.zca_whitening(points)
    np.testing.assert_allclose(w.matrix, w.matrix.T, atol=1e-12)
    cov = np.cov(points.T, bias=True) + whitening.EPS * np.eye(2)
    np.testing.assert_allclose(w.matrix, np.real(scipy.linalg.inv(scipy.linalg.sqrtm(cov))), rtol=1e-8, atol=1e-10)


def test_pca_rotates_onto_the_principal_axes(points):
    w = whitening.pca_whitening(points, eps=0.0)
    values, vectors = np.linalg.eigh(np.cov(points.T, bias=True))
    # Row k of W is eigenvector k / sqrt(eigenvalue k), up to the eigenvector's sign.
    for k in range(2):
        np.testing.assert_allclose(np.abs(w.matrix[k]), np.abs(vectors[:, k]) / np.sqrt(values[k]), rtol=1e-8)


def test_higher_dimensions():
    rng = np.random.default_rng(3)
    mix = rng.standard_normal((5, 5))
    x = rng.standard_normal((5000, 5)) @ mix.T + rng.standard_normal(5)
    for method in (whitening.pca_whitening, whitening.zca_whitening):
        z = method(x, eps=0.0).apply(x)
        off = np.cov(z.T, bias=True) - np.eye(5)
        assert np.max(np.abs(off)) < 1e-8


def test_singular_covariance_stays_finite():
    x = correlated_gaussian(200, 1.0, (1.0, 2.0), seed=0)  # rank 1
    for method in (whitening.pca_whitening, whitening.zca_whitening):
        assert np.isfinite(method(x).apply(x)).all()


def test_data_with_eigenvalues_has_exactly_those():
    x = whitening.data_with_eigenvalues(64, (1.3, 0.7), seed=2)
    np.testing.assert_allclose(np.linalg.eigvalsh(np.cov(x.T, bias=True)), [0.7, 1.3], rtol=1e-12)


def test_closed_form_2d_zca_gradient_matches_finite_differences():
    x0 = torch.from_numpy(whitening.data_with_eigenvalues(16, (1.0 + 1e-3, 1.0 - 1e-3), seed=4))
    r = torch.from_numpy(np.random.default_rng(5).standard_normal((16, 2)))

    def loss(x):
        return (whitening._zca_closed_form_2d(x, whitening.EPS) * r).sum()
    x = x0.clone().requires_grad_()
    loss(x).backward()
    h = 1e-6
    numeric = torch.zeros_like(x0)
    for i in range(16):
        for j in range(2):
            e = torch.zeros_like(x0)
            e[i, j] = h
            numeric[i, j] = (loss(x0 + e) - loss(x0 - e)) / (2 * h)
    np.testing.assert_allclose(x.grad.numpy(), numeric.numpy(), rtol=1e-5, atol=1e-7)
    # and it is ZCA: the same output as the eigendecomposition route
    np.testing.assert_allclose(whitening._zca_closed_form_2d(x0, whitening.EPS).numpy(),
                               whitening._zca_eigh(x0, whitening.EPS).numpy(), atol=1e-10)


def test_eigh_gradient_degrades_as_the_eigenvalues_meet():
    errors = whitening.eigh_gradient_errors(np.array([1.0, 1e-2, 1e-4, 1e-6]))
    assert errors["float64"][0] < 1e-12            # well-separated: exact to rounding
    assert errors["float32"][0] < 1e-5
    assert errors["float32"][-1] > 100 * errors["float32"][0]   # close eigenvalues: rounding amplified


def test_operation_counts():
    assert whitening.batchnorm_flops(64, 100) == 7 * 64 * 100
    assert whitening.whitening_flops(64, 100) == 4 * 64 * 100**2 + 11 * 100**3
    d = np.array([8, 1024])
    ratio = whitening.whitening_flops(64, d) / whitening.batchnorm_flops(64, d)
    assert ratio[1] > 100 * ratio[0]
