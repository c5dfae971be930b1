"""How many principal components Tiny ImageNet's pixels need: over the whole training set and per image.

Whole data set: the exact eigenvalues of the pixel covariance (12,288 x 12,288 for 64x64x3 images),
accumulated chunk by chunk from the uint8 images with a symmetric rank-k update (BLAS ``ssyrk``), so
memory is the covariance plus one chunk whatever the number of images: no float copy of the data set
is ever made. Every colour channel's covariance is a block of the same matrix, so the per-channel
spectra come free. Exact eigenvalues give the whole curve, including the 99% point that a truncated
randomized PCA would have to guess at.

Per image (the seed report's figure 8): one channel of one image as a 64 x 64 matrix whose rows are
samples; the components that keep 95% of that matrix's variance.

"Retained variance" is the share of the eigenvalues (the squared singular values of the centred data)
kept, the usual definition; the seed report summed singular values instead, which needs many more
components for the same share, so both are reported.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.linalg
from scipy.linalg import blas

THRESHOLDS = (0.90, 0.95, 0.99)
CHANNELS = ("red", "green", "blue")


def covariance(images: np.ndarray, chunk: int = 1000, progress=None) -> tuple[np.ndarray, int]:
    """The pixel covariance of uint8 images (N, H, W, C), values scaled to [0, 1].

    Returns (float32 (D, D) Fortran-ordered, D = H*W*C, of which only the upper triangle is filled;
    N). Features are in NHWC order, so channel c is rows and columns c::C. Two passes over the
    images: the mean, then the centred rank-``chunk`` updates, accumulated in place.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C). Received: {images.dtype} {images.shape}")
    count = len(images)
    if count < 2:
        raise ValueError(f"covariance needs at least 2 images. Received: {count}")
    flat = images.reshape(count, -1)
    dimension = flat.shape[1]
    mean = np.zeros(dimension, np.float64)
    for start in range(0, count, chunk):
        mean += flat[start:start + chunk].sum(axis=0, dtype=np.float64)
    mean = (mean / (255.0 * count)).astype(np.float32)
    # float32 and updated in place: memory is one D x D float32 matrix (0.6 GB for 64x64x3) beside the
    # images. Its entries are sums of at most N / chunk chunk sums, so float32 keeps about 6 digits.
    total = np.zeros((dimension, dimension), np.float32, order="F")
    started = time.perf_counter()
    for start in range(0, count, chunk):
        centred = flat[start:start + chunk].astype(np.float32)
        centred *= np.float32(1 / 255)
        centred -= mean
        # centred.T is a Fortran-ordered view, so BLAS reads the chunk without a copy; syrk fills
        # the upper triangle only, half the work of a full product.
        total = blas.ssyrk(1.0, centred.T, beta=1.0, c=total, trans=0, lower=0, overwrite_c=1)
        if progress is not None:
            done = min(start + chunk, count)
            elapsed = time.perf_counter() - started
            progress(f"covariance: {done}/{count} images, {elapsed:.0f} s, about "
                     f"{elapsed / done * (count - done):.0f} s left")
    total /= np.float32(count - 1)
    return total, count


def spectrum(symmetric_upper: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Eigenvalues, largest first and clipped at 0, of a symmetric matrix given by its upper triangle."""
    values = scipy.linalg.eigvalsh(symmetric_upper, lower=False, overwrite_a=overwrite, check_finite=False,
                                   driver="evr")
    return np.clip(values[::-1].astype(np.float64), 0.0, None)


def retained(eigenvalues: np.ndarray, singular_sum: bool = False) -> np.ndarray:
    """Cumulative share of variance kept by the first k components, k = 1..D.

    singular_sum=True uses the seed report's ratio of summed singular values (sqrt of eigenvalues).
    """
    values = np.sqrt(eigenvalues) if singular_sum else np.asarray(eigenvalues, np.float64)
    total = values.sum()
    if total <= 0:
        raise ValueError("the data has no variance: every image is the same")
    return np.cumsum(values) / total


def components_for(curve: np.ndarray, share: float) -> int:
    """The fewest leading components whose cumulative share reaches ``share``."""
    return int(min(np.searchsorted(curve, share - 1e-12) + 1, len(curve)))


def dataset_spectra(images: np.ndarray, chunk: int = 1000, progress=None, threads: int | None = None) -> dict:
    """Eigenvalues across channels ("all") and of each channel's own covariance, plus timings.

    threads: BLAS threads for the covariance (None: OpenBLAS's default). The eigensolver always runs
    on one: on the shared 2-core machine a 2048 x 2048 eigenproblem took 35 s with two threads
    spin-waiting on each other and 6.6 s with one.

    images: uint8 (N, H, W, C). Peak memory: the images plus the float32 covariance (4 D^2 bytes) and one chunk.
    """
    started = time.perf_counter()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        matrix, count = covariance(images, chunk=chunk, progress=progress)
    seconds = {"covariance": time.perf_counter() - started}
    channels = images.shape[-1]
    values = {}
    for channel in range(channels):
        name = CHANNELS[channel] if channels == 3 else f"channel {channel}"
        if progress is not None:
            progress(f"eigenvalues of the {name} channel ({matrix.shape[0] // channels} dimensions)")
        # float32 halves the eigensolver's time against float64; the curves need 6 digits, not 15.
        with threadpool_limits(limits=1, user_api="blas"):
            values[name] = spectrum(np.asfortranarray(matrix[channel::channels, channel::channels], np.float32),
                                    overwrite=True)
    seconds["channels"] = time.perf_counter() - started - seconds["covariance"]
    if progress is not None:
        progress(f"eigenvalues across channels ({matrix.shape[0]} dimensions)")
    with threadpool_limits(limits=1, user_api="blas"):
        values["all"] = spectrum(matrix, overwrite=True)
    del matrix
    seconds["all"] = time.perf_counter() - started - seconds["covariance"] - seconds["channels"]
    return {"eigenvalues": values, "images": count, "seconds": seconds}


def per_image_spectra(images: np.ndarray) -> np.ndarray:
    """Per image and channel, the squared singular values of the row-centred channel matrix.

    images: uint8 (N, H, W, C); each channel is an H x W matrix whose H rows are samples of a
    W-dimensional vector (figure 8 of the seed report). Returns float64 (N, C, min(H, W)), largest first.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C). Received: shape {images.shape}")
    matrices = np.moveaxis(images, -1, 1).astype(np.float64) / 255.0
    matrices -= matrices.mean(axis=2, keepdims=True)
    return np.linalg.svd(matrices, compute_uv=False) ** 2


def per_image_components(squared_singular: np.ndarray, share: float = 0.95, singular_sum: bool = False):
    """int (N, C): components keeping ``share`` of each image channel's variance (constant channels: 0)."""
    values = np.sqrt(squared_singular) if singular_sum else squared_singular
    totals = values.sum(axis=-1, keepdims=True)
    curves = np.cumsum(values, axis=-1) / np.where(totals > 0, totals, 1.0)
    needed = (curves < share - 1e-12).sum(axis=-1) + 1
    return np.where(totals[..., 0] > 0, np.minimum(needed, values.shape[-1]), 0)


def reconstruct_channel(channel: np.ndarray, components: int) -> np.ndarray:
    """An H x W channel (floats) rebuilt from its first ``components`` principal components."""
    mean = channel.mean(axis=0, keepdims=True)
    left, singular, right = np.linalg.svd(channel - mean, full_matrices=False)
    return (left[:, :components] * singular[:components]) @ right[:components] + mean
