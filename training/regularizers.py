"""Loss terms that regularise intermediate representations (TensorFlow backend).

`LaplacianSmoothness` (loss term "laplacian_smoothness"): Lassance, Gripon and Ortega 2018, "Laplacian
networks: bounding indicator function smoothness for adversarial robustness" (arXiv:1805.10133), as the
IMT report trains it. For each chosen layer, within the batch:

    F = the layer's outputs, flattened and L2-normalised per image          (B, d)
    W = F Fᵀ with a zero diagonal (cosine similarities; optionally only the k largest per row,
        symmetrised by keeping an edge either end chose)                    (B, B)
    L = D − W, D = diag(row sums of W)
    σ_l = trace(Yᵀ Lᵐ Y), Y the one-hot labels                               (B, C)

σ_l measures how much the class indicator varies over the similarity graph of layer l (for m = 1 it
is the sum of W_ij over ordered pairs with different labels). The term is γᵐ · mean over consecutive
layers of |σ_{l+1} − σ_l|, so the representation separates the classes gradually, not in one jump.

Scale. The authors' reference code (github.com/cadurosar/laplacian_networks) adds the raw mean step
divided by (1/γ)ᵐ, i.e. weighted γᵐ, always on batches of 100. σ_l grows as B^(m+1) with the batch
size B (a row of Lᵐ Y sums m products of B-term sums), so here σ_l is rescaled by (100 / B)^(m+1):
at B = 100 the term equals the reference's, and the same γ means the same strength at any batch size
(and with any share of the batch replaced by an attack). The logged ``sigma_<layer>`` are rescaled too.
Only the clean view enters the term: the images an attack or noise replaced are left out (the IMT
report's fix for adversarial data augmentation).

Default layers: every layer named ``*_out`` (each zoo builder names its block outputs so); a model with
a single one (the transfer models' ``backbone_out``) adds its output layer, so the term always has a step.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from common import checks
from training.parts import LossTerm, register_part

BLOCK_OUTPUT_SUFFIX = "_out"
# Lassance et al.'s reference code trains on batches of 100; σ is rescaled to that batch (module docstring).
REFERENCE_BATCH = 100


def similarity_graph(features, k: int | None = None):
    """Cosine-similarity adjacency of a batch: float32 (B, B), zero diagonal.

    features: (B, ...) any float dtype; each image's outputs are flattened and L2-normalised.
    k: keep only each row's k largest similarities (then symmetrise); None keeps all.
    """
    batch = tf.shape(features)[0]
    flat = tf.reshape(tf.cast(features, tf.float32), [batch, -1])
    flat = tf.math.l2_normalize(flat, axis=1)
    similarity = tf.matmul(flat, flat, transpose_b=True)
    similarity = tf.linalg.set_diag(similarity, tf.zeros([batch], tf.float32))
    if k is None:
        return similarity
    # The k-th largest off-diagonal similarity per row; the zeroed diagonal can only rank last among
    # non-negative ReLU features, and k is capped at B - 1 so it never decides the threshold.
    neighbours = tf.minimum(k, batch - 1)
    top = tf.math.top_k(similarity, k=tf.maximum(neighbours, 1)).values
    threshold = top[:, -1:]
    keep = tf.logical_and(similarity >= threshold, neighbours > 0)
    keep = tf.logical_or(keep, tf.transpose(keep))
    return tf.where(keep, similarity, tf.zeros_like(similarity))


def graph_smoothness(adjacency, labels, num_classes, power: int = 1):
    """σ = trace(Yᵀ Lᵐ Y): float32 scalar. adjacency: (B, B) symmetric; labels: int (B,); L = D − W."""
    adjacency = tf.cast(adjacency, tf.float32)
    laplacian = tf.linalg.diag(tf.reduce_sum(adjacency, axis=1)) - adjacency
    one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes, dtype=tf.float32)
    # Lᵐ Y by m products with the (B, C) matrix: O(m B² C), never forming Lᵐ.
    product = one_hot
    for _ in range(power):
        product = tf.matmul(laplacian, product)
    return tf.reduce_sum(one_hot * product)


def block_outputs(model: keras.Model) -> list[str]:
    """The smoothness term's default layers, in model order: the block outputs (layers named ``*_out``: the
    activation or pool ending each block in the zoo's builders), plus the output layer when there is just
    one block output (the transfer models: backbone features, then logits)."""
    names = [layer.name for layer in model.layers if layer.name.endswith(BLOCK_OUTPUT_SUFFIX)]
    if len(names) == 1:
        names.append(model.layers[-1].name)
    return names


def batch_rescaled(sigma, batch, power: int):
    """σ of a batch of ``batch`` images on the scale of a batch of REFERENCE_BATCH: σ · (100 / B)^(m+1)."""
    return sigma * (REFERENCE_BATCH / tf.cast(batch, tf.float32)) ** (power + 1)


@register_part("loss", "laplacian_smoothness")
class LaplacianSmoothness(LossTerm):
    """γᵐ · mean_l |σ_{l+1} − σ_l| over the chosen layers on the clean view, σ on the scale of a batch of
    100 (see the module docstring).

    gamma: γ > 0, as the reference code and the IMT report use it (0.01 with m = 2, or 0.001 with m = 1).
    power: m, the Laplacian's power (a positive integer).
    k: keep the k most similar neighbours per image; None keeps the full graph.
    layers: layer names; empty means every block output (``*_out``), resolved by ``bind(model)``.
    It asks for the "clean" view only: the clean images no transform replaced.
    """

    views = ("clean",)

    def __init__(self, gamma: float, power: int = 2, k: int | None = None, layers=()):
        self.gamma = checks.positive_real("gamma", gamma)
        self.power = checks.positive_int("power", power)
        self.k = None if k is None else checks.positive_int("k", k)
        if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
            raise ValueError(f"`layers` must be a list of layer names. Received: layers={layers!r}")
        self.layers = tuple(layers)
        self.feature_layers = self.layers  # the wrapper builds its feature model from these
        self.metrics = [keras.metrics.Mean(name=f"sigma_{name}") for name in self.layers]

    def bind(self, model: keras.Model) -> None:
        """Resolve the default layers from ``model`` (the training wrapper calls this before reading
        ``feature_layers``); named layers are checked against it."""
        names = {layer.name for layer in model.layers}
        layers = self.layers or tuple(block_outputs(model))
        if len(layers) < 2:
            raise ValueError(f"The smoothness term needs at least two layers; model {model.name!r} has "
                             f"{len(layers)} block outputs (*{BLOCK_OUTPUT_SUFFIX}). Name them with "
                             f"--smoothness-layers. Received: layers={list(self.layers)}")
        missing = [name for name in layers if name not in names]
        if missing:
            raise ValueError(f"Unknown layers for the smoothness term in model {model.name!r}: {missing}")
        if layers != self.layers or not self.metrics:
            self.layers = self.feature_layers = layers
            self.metrics = [keras.metrics.Mean(name=f"sigma_{name}") for name in layers]

    def sigmas(self, features: dict, labels, num_classes: int) -> list:
        """σ_l per chosen layer, rescaled to a batch of 100: float32 scalars. features: {layer: (B, ...)};
        labels: int (B,)."""
        batch = tf.size(labels)
        return [batch_rescaled(graph_smoothness(similarity_graph(features[name], self.k), labels, num_classes,
                                                self.power), batch, self.power)
                for name in self.layers]

    def __call__(self, model, views, outputs):
        clean = views["clean"]
        num_classes = outputs["clean"].shape[-1]
        sigmas = self.sigmas(outputs["features"]["clean"], clean.labels, num_classes)
        for metric, sigma in zip(self.metrics, sigmas):
            metric.update_state(tf.stop_gradient(sigma))
        steps = [tf.abs(after - before) for before, after in zip(sigmas[:-1], sigmas[1:])]
        return self.gamma ** self.power * tf.add_n(steps) / len(steps)
