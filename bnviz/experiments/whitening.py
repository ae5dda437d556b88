"""Whitening versus per-feature standardization: what BatchNorm could do, and what it does instead.

Ioffe & Szegedy (2015, section 3) start from the observation that networks train faster when
their inputs are *whitened*: linearly transformed to zero mean, unit variance **and no
correlation** between features. Whitening every layer's input in every step would need the
covariance matrix of the d features, its inverse square root (an eigendecomposition, O(d^3)) and
the derivative of that decomposition for backpropagation. Their simplification: normalize each
feature on its own ("standardize"), which costs O(m d) for a batch of m and is trivially
differentiable, and leave the correlations alone. This module computes all three so a page can
show the difference on 2-D data:

* :func:`standardize`: ``(x - mean) / std`` per feature (BN without gamma/beta); the
  correlation matrix is unchanged;
* :func:`pca_whitening`: ``W = Lambda^(-1/2) U^T`` (rotate onto the principal axes, then scale);
* :func:`zca_whitening`: ``W = U Lambda^(-1/2) U^T = Sigma^(-1/2)``, the symmetric whitening
  matrix, the one closest to the identity (the output stays as close as possible to the input).

``Sigma = U Lambda U^T`` is the (biased, 1/n) covariance of the data. All in float64 numpy.

Two more pieces back the "why not whiten" argument with numbers: operation counts per batch
(:func:`batchnorm_flops`, :func:`whitening_flops`), and :func:`eigh_gradient_errors`, which
measures how the gradient autograd computes through ``torch.linalg.eigh`` degrades as two
eigenvalues of the covariance approach each other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Added to the eigenvalues (as BN adds eps to the variance) so a singular covariance (perfectly
# correlated features, correlation = +-1) does not divide by zero.
EPS = 1e-5


def covariance(x: np.ndarray) -> np.ndarray:
    """Biased (divide by n) covariance of the rows of ``x`` (n samples, d features): (d, d)."""
    centred = x - x.mean(axis=0)
    return centred.T @ centred / len(x)


def correlation(x: np.ndarray) -> np.ndarray:
    """Correlation matrix of the features of ``x``; a constant feature gets correlation 0."""
    cov = covariance(x)
    std = np.sqrt(np.diag(cov))
    safe = np.where(std > 0, std, 1.0)
    corr = cov / np.outer(safe, safe)
    np.fill_diagonal(corr, 1.0)
    return corr


def standardize(x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Per-feature ``(x - mean) / sqrt(var + eps)``: what BN computes (x_hat) for one batch."""
    return (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)


@dataclass(frozen=True)
class Whitening:
    """An affine whitening ``z = (x - mean) @ matrix.T`` fitted to one data set."""

    mean: np.ndarray            # (d,)
    matrix: np.ndarray          # (d, d)
    eigenvalues: np.ndarray     # of the covariance, ascending
    eigenvectors: np.ndarray    # columns, matching eigenvalues

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) @ self.matrix.T


def _eigen(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(covariance(x))
    return mean, np.clip(values, 0.0, None), vectors


def pca_whitening(x: np.ndarray, eps: float = EPS) -> Whitening:
    """PCA whitening: ``W = diag(1 / sqrt(lambda + eps)) U^T``; output axes are the principal axes."""
    mean, values, vectors = _eigen(x)
    matrix = (vectors / np.sqrt(values + eps)).T
    return Whitening(mean, matrix, values, vectors)


def zca_whitening(x: np.ndarray, eps: float = EPS) -> Whitening:
    """ZCA (Mahalanobis) whitening: ``W = U diag(1 / sqrt(lambda + eps)) U^T``, symmetric."""
    mean, values, vectors = _eigen(x)
    matrix = (vectors / np.sqrt(values + eps)) @ vectors.T
    return Whitening(mean, matrix, values, vectors)


# ----- cost ------------------------------------------------------------------------------------------
# Floating-point operations per mini-batch of m samples and d features (forward pass). Leading
# terms only; the symmetric eigendecomposition with eigenvectors is about 9 d^3 flops (Golub &
# Van Loan, Matrix Computations, 4th ed., section 8.3: tridiagonalization plus implicit QR).
EIGH_FLOPS_PER_D3 = 9


def batchnorm_flops(m: int | np.ndarray, d: int | np.ndarray) -> np.ndarray:
    """Per feature: mean (m), variance (2m), normalize (2m), scale and shift (2m): about 7 m d."""
    return 7 * np.asarray(m, dtype=np.float64) * np.asarray(d, dtype=np.float64)


def whitening_flops(m: int | np.ndarray, d: int | np.ndarray) -> np.ndarray:
    """Covariance (2 m d^2), eigendecomposition (~9 d^3), W = U L^-1/2 U^T (2 d^3), apply (2 m d^2)."""
    m = np.asarray(m, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    return 4 * m * d**2 + (EIGH_FLOPS_PER_D3 + 2) * d**3


# ----- backpropagation through the eigendecomposition -----------------------------------------------
def _zca_eigh(x: torch.Tensor, eps: float) -> torch.Tensor:
    centred = x - x.mean(0)
    cov = centred.T @ centred / len(x) + eps * torch.eye(x.shape[1], dtype=x.dtype)
    values, vectors = torch.linalg.eigh(cov)
    return centred @ (vectors @ torch.diag(values.rsqrt()) @ vectors.T)


def _zca_closed_form_2d(x: torch.Tensor, eps: float) -> torch.Tensor:
    # For a 2x2 SPD matrix C: sqrt(C) = (C + s I) / t with s = sqrt(det C), t = sqrt(tr C + 2 s);
    # no eigenvectors, so its autograd derivative is exact whatever the eigenvalue gap.
    centred = x - x.mean(0)
    eye = torch.eye(2, dtype=x.dtype)
    cov = centred.T @ centred / len(x) + eps * eye
    s = torch.sqrt(torch.linalg.det(cov))
    sqrt_cov = (cov + s * eye) / torch.sqrt(cov.trace() + 2 * s)
    return centred @ torch.linalg.inv(sqrt_cov)


def data_with_eigenvalues(n: int, values: tuple[float, float], angle: float = 0.3, seed: int = 0) -> np.ndarray:
    """``n`` 2-D points whose biased sample covariance has exactly ``values`` as eigenvalues, with
    principal axes rotated by ``angle`` radians (so the gap between eigenvalues is set exactly)."""
    z = np.random.default_rng(seed).standard_normal((n, 2))
    z = z - z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(covariance(z))).T   # sample covariance exactly I
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return z @ np.diag(np.sqrt(values)) @ rotation.T


def eigh_gradient_errors(gaps: np.ndarray, n: int = 64, eps: float = EPS, seed: int = 0) -> dict[str, np.ndarray]:
    """Relative error of the ZCA gradient that autograd computes through ``torch.linalg.eigh``.

    For data whose covariance has eigenvalues ``1 +- gap/2``, the loss ``sum(ZCA(x) * r)`` (fixed
    random ``r``) is differentiated w.r.t. ``x`` through ``eigh`` in float32 and float64, and
    compared with the derivative of the closed-form 2x2 inverse square root in float64 (no
    eigenvectors involved). ZCA itself is smooth in the data, but the derivative of the
    eigenvectors has terms ``1 / (lambda_i - lambda_j)``: as the gap closes, rounding errors are
    amplified and at a zero gap the result is meaningless. Returns {"float32": errors,
    "float64": errors}, one per gap.
    """
    r = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((n, 2)))
    out: dict[str, list[float]] = {"float32": [], "float64": []}
    for gap in gaps:
        data = torch.from_numpy(data_with_eigenvalues(n, (1 + gap / 2, 1 - gap / 2), seed=seed))
        x = data.clone().requires_grad_()
        (_zca_closed_form_2d(x, eps) * r).sum().backward()
        exact = x.grad
        for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
            x = data.to(dtype).requires_grad_()
            (_zca_eigh(x, eps) * r.to(dtype)).sum().backward()
            out[name].append(float(torch.linalg.vector_norm(x.grad.double() - exact) / torch.linalg.vector_norm(exact)))
    return {name: np.asarray(v) for name, v in out.items()}
