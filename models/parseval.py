"""Parseval networks' pieces: the orthonormality retraction, its deviation measure, convex residual merges.

Cisse et al., "Parseval Networks: Improving Robustness to Adversarial Examples", ICML 2017: keep every
linear and convolutional layer close to a Parseval tight frame (rows of the weight matrix orthonormal,
so the layer is 1-Lipschitz in the l2 norm) by a retraction step after each gradient update,

    W <- (1 + beta) W - beta W W^T W,

which moves every singular value s of W to s + beta s (1 - s^2), towards 1 (``retract`` first scales
down a matrix whose singular values are too large for that to converge); and merge residual branches
with a convex combination (non-negative weights summing to 1) instead of a sum, which keeps the block
1-Lipschitz.
The IMT report trains its "Psv" networks with beta = 0.01, this module's default.

Unfolding. A kernel of shape (k_h, k_w, c_in, c_out) (or (c_in, c_out) for Dense) is unfolded to the
matrix W of shape (c_out, k_h k_w c_in): one row per output channel, retracted as it is, as the authors'
reference code does (and Lassance et al.'s, which the IMT report follows). A convolution applies W to every
k_h x k_w patch and each input pixel lies in up to k_h k_w patches, so such a layer is sqrt(k_h k_w)-
Lipschitz, not 1; retracting sqrt(k_h k_w) W instead would make it 1-Lipschitz, but holds every 3x3 kernel 3
times (a 7x7 stem 7 times) smaller than its He initialisation, where each Adam update moves it by a
correspondingly larger fraction and the BatchNormalization after it cannot keep its moving statistics up:
measured, that variant predicted 18.2 % of val images right in inference mode against 38.6 % with batch
statistics, the unscaled one 31.6 % against 37.0 % (results/imt/notes.md). A batch-normalised network is
not 1-Lipschitz either way. When a layer has more output channels than its rows are long (a 1x1 shortcut
from 64 to 128 channels) the rows cannot be orthonormal; the retraction then drives the singular values to 1
(W^T W = I) and ``parseval_deviation`` stays above 0.

A fresh training run starts from tight frames (``tight_frame``, applied by training.callbacks.ParsevalDeviation
before the first update), so the retraction only has to hold them.
"""
from __future__ import annotations

import math

import keras
import numpy as np

from common.checks import real_in_range

DEFAULT_BETA = 0.01


def _unfold(kernel):
    """The (rows = output channels, columns) matrix of ``kernel``."""
    shape = tuple(kernel.shape)
    if len(shape) < 2:
        raise ValueError(f"A Parseval kernel needs at least 2 dimensions. Received: kernel.shape={shape}")
    return keras.ops.transpose(keras.ops.reshape(kernel, (-1, shape[-1])))


def _fold(matrix, shape):
    return keras.ops.reshape(keras.ops.transpose(matrix), shape)


def retract(matrix, beta=DEFAULT_BETA):
    """One Parseval retraction of a (rows, columns) matrix M: (1 + beta) M - beta M M^T M.

    The update maps a singular value s to s + beta s (1 - s^2), which overshoots and diverges for s
    above sqrt(1 + 2 / beta) (about 14 at beta = 0.01). So a matrix whose largest singular value may exceed sqrt((1 + beta) / (3 beta)) (the
    range where the update is monotone: 5.8 at beta = 0.01) is first scaled down to it, using the bound
    s_max^2 <= max row sum of |M M^T|; a matrix near a Parseval frame (that bound near 1) is untouched.
    """
    gram = keras.ops.matmul(matrix, keras.ops.transpose(matrix))
    limit = max(1.0, (1.0 + beta) / (3.0 * beta))  # squared singular value
    bound = keras.ops.max(keras.ops.sum(keras.ops.abs(gram), axis=1))
    factor = keras.ops.sqrt(keras.ops.minimum(1.0, limit / keras.ops.maximum(bound, 1e-12)))
    matrix, gram = matrix * factor, gram * factor**2
    return (1.0 + beta) * matrix - beta * keras.ops.matmul(gram, matrix)


@keras.saving.register_keras_serializable(package="zoo")
class ParsevalConstraint(keras.constraints.Constraint):
    """Kernel constraint doing one Parseval retraction (see the module docstring) per optimizer update.

    ``beta``: retraction step, in (0, 0.5]. ``rows``: fraction of the output channels retracted per
    call, in (0, 1]; below 1 a fresh random subset (``ceil(rows * c_out)`` rows, drawn with keras.random from
    ``seed``) is retracted among itself and the other rows are left alone (the paper's cheaper sampled
    variant: the retraction's cost falls with the square of ``rows``).
    Works on float kernels of rank >= 2; returns a tensor of the kernel's shape and dtype.
    """

    def __init__(self, beta=DEFAULT_BETA, rows=1.0, seed=0):
        # Above 0.5 the update overshoots even next to a Parseval frame (s -> s + beta s (1 - s^2)).
        self.beta = real_in_range("beta", beta, 0.0, 0.5, low_open=True)
        self.rows = real_in_range("rows", rows, 0.0, 1.0, low_open=True)
        self.seed = seed
        # Only the sampled variant draws random numbers. Its generator (a variable) is made here, eagerly:
        # the optimizer calls the constraint inside its traced train step. Public: a run's backup keeps its state.
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rows < 1.0 else None

    def _sampled_rows(self, count):
        """Indices of ``ceil(rows * count)`` distinct output channels, a fresh draw per call."""
        noise = keras.random.uniform((count,), seed=self.seed_generator)
        return keras.ops.top_k(noise, max(1, math.ceil(self.rows * count)))[1]

    def __call__(self, kernel):
        shape, dtype = tuple(kernel.shape), kernel.dtype
        matrix = _unfold(keras.ops.cast(kernel, "float32"))
        if self.rows < 1.0:
            # Only the sampled rows are gathered, retracted among themselves and scattered back: the two
            # matrix products shrink by rows^2, which is what makes the sampled variant cheap.
            indices = self._sampled_rows(shape[-1])
            retracted = retract(keras.ops.take(matrix, indices, axis=0), self.beta)
            matrix = keras.ops.scatter_update(matrix, indices[:, None], retracted)
        else:
            matrix = retract(matrix, self.beta)
        return keras.ops.cast(_fold(matrix, shape), dtype)

    def get_config(self):
        return {"beta": self.beta, "rows": self.rows, "seed": self.seed}


def tight_frame(kernel):
    """The Parseval tight frame nearest to ``kernel``: every singular value of its unfolded matrix W set to 1
    (W = U S Vᵀ becomes U Vᵀ, its polar factor), in the kernel's shape and dtype.

    Training starts here. The retraction only moves a singular value by β s (1 − s²) per update, so a kernel
    initialised away from a frame changes scale over hundreds of updates, and the BatchNormalization after it
    keeps moving statistics of a scale that no longer exists: the old table's stalled Parseval seed trained
    on batch statistics yet predicted 10.8 % of val images right at inference (33.6 % with batch statistics).
    """
    matrix = _unfold(keras.ops.cast(keras.ops.convert_to_tensor(kernel), "float32"))
    u, _, v = np.linalg.svd(keras.ops.convert_to_numpy(matrix), full_matrices=False)
    return keras.ops.cast(_fold(keras.ops.convert_to_tensor(u @ v), tuple(kernel.shape)), kernel.dtype)


def parseval_deviation(kernel) -> float:
    """||W W^T - I||_F / ||I||_F for the unfolded kernel W (0 for a Parseval tight frame)."""
    matrix = _unfold(keras.ops.cast(keras.ops.convert_to_tensor(kernel), "float32"))
    rows = matrix.shape[0]
    gram = keras.ops.matmul(matrix, keras.ops.transpose(matrix))
    return float(keras.ops.sqrt(keras.ops.sum(keras.ops.square(gram - keras.ops.eye(rows)))) / math.sqrt(rows))


@keras.saving.register_keras_serializable(package="zoo")
class SimplexProjection(keras.constraints.Constraint):
    """Euclidean projection of a weight vector onto the probability simplex (w >= 0, sum w = 1).

    The sort-based algorithm of Duchi et al., "Efficient Projections onto the l1-Ball for Learning in
    High Dimensions", ICML 2008. Input: a float vector of shape (n,); output: same shape and dtype.
    """

    def __call__(self, weights):
        dtype = weights.dtype
        values = keras.ops.cast(weights, "float32")
        descending = keras.ops.flip(keras.ops.sort(values))
        cumulative = keras.ops.cumsum(descending) - 1.0
        positions = keras.ops.arange(1, values.shape[0] + 1, dtype="float32")
        # The support is the prefix of the sorted values that stays positive after the shift.
        support = keras.ops.sum(keras.ops.cast(descending - cumulative / positions > 0, "int32"))
        threshold = keras.ops.take(cumulative, support - 1) / keras.ops.cast(support, "float32")
        return keras.ops.cast(keras.ops.maximum(values - threshold, 0.0), dtype)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="zoo")
class ConvexCombination(keras.layers.Layer):
    """sum_i w_i x_i over N same-shaped inputs, w learnable on the simplex (Parseval's residual merge).

    Input: a list of N >= 2 float tensors of one shape; output: that shape. The weights start at 1/N and
    are projected back onto the simplex (SimplexProjection) after every optimizer update.
    """

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2 or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError(f"ConvexCombination needs a list of at least 2 inputs. Received: {input_shape!r}")
        count = len(input_shape)
        self.combination = self.add_weight(shape=(count,), name="combination",
                                           initializer=keras.initializers.Constant(1.0 / count),
                                           constraint=SimplexProjection())

    def call(self, inputs):
        weights = keras.ops.cast(self.combination, inputs[0].dtype)
        return sum(weights[index] * tensor for index, tensor in enumerate(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape[0]
