"""Saliency maps of a classifier: which pixels its score for a class depends on.

One public function, ``saliency_map(model, images, labels, method=...)``, for four methods:

- ``vanilla``: the gradient of the class logit with respect to the input pixels (Simonyan, Vedaldi
  and Zisserman 2014, "Deep Inside Convolutional Networks"), |d logit_y / d x| reduced over colour
  channels by the maximum, as in that paper;
- ``smoothgrad``: the same |gradient| averaged over ``samples`` copies of the image with Gaussian
  noise of standard deviation ``noise_level`` x (image max - image min) added (Smilkov et al. 2017,
  "SmoothGrad: removing noise by adding noise");
- ``gradcam``: Grad-CAM (Selvaraju et al. 2017): the feature maps A_k of a convolution layer weighted
  by the spatial mean of d logit_y / d A_k, summed over k, rectified and resized to the image;
- ``gradcam++``: Grad-CAM++ (Chattopadhay et al. 2018): per-position weights
  alpha = g^2 / (2 g^2 + g^3 sum(A)) on the rectified gradients g instead of their plain mean.

Each map is min-max normalised per image to [0, 1], the way tf-keras-vis (the field's Keras
library, whose numbers the tests compare against) does it. Gradients come from
``tf.GradientTape`` with the model called as ``model(x, training=False)``: this module, like the
attacks in augment/, runs on the TensorFlow backend.
"""
from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

METHODS = ("vanilla", "smoothgrad", "gradcam", "gradcam++")
_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.SeparableConv2D,
                 keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)
_EPSILON = 1e-7  # keras.config.epsilon(), as tf-keras-vis's normalize uses

# Traced functions per model, so a second call on the same model does not retrace.
_TRACED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def saliency_map(model, images, labels, method: str = "vanilla", *, batch_size: int = 64,
                 noise_level: float = 0.2, samples: int = 20, layer: str | None = None,
                 seed: int = 0) -> np.ndarray:
    """Saliency maps of ``model`` for class ``labels`` on ``images``.

    model: a Keras classifier returning logits (B, classes); images: float32 (B, H, W, C) in [0, 1]
    (uint8 is divided by 255); labels: int (B,), the class each map explains (true or predicted).
    Options: ``noise_level`` and ``samples`` for smoothgrad; ``layer`` (a layer name) for the
    Grad-CAMs, by default the last convolution (``last_convolution``). Returns float32 (B, H, W)
    in [0, 1], each map scaled so its minimum is 0 and its maximum 1 (an all-equal map is all 0).
    Deterministic for a fixed ``seed``.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown saliency method {method!r}. Known methods: {', '.join(METHODS)}")
    images = _as_images(images)
    labels = np.asarray(labels).reshape(-1).astype(np.int32)
    if len(labels) != len(images):
        raise ValueError(f"labels must have one entry per image. Received: {len(labels)} labels for "
                         f"{len(images)} images")
    num_classes = int(model.outputs[0].shape[-1])
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be class indices in [0, {num_classes}). Received: labels in "
                         f"[{labels.min()}, {labels.max()}]")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    if method == "smoothgrad":
        if not (np.isfinite(noise_level) and noise_level >= 0):
            raise ValueError(f"noise_level must be a non-negative number. Received: noise_level={noise_level!r}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive integer. Received: samples={samples!r}")
    maps = []
    if method in ("vanilla", "smoothgrad"):
        gradients = _traced(model, "input", None)
        generator = keras.random.SeedGenerator(seed)
        for start in range(0, len(images), batch_size):
            batch = tf.constant(images[start:start + batch_size])
            label = tf.constant(labels[start:start + batch_size])
            if method == "vanilla":
                magnitude = tf.abs(gradients(batch, label))
            else:
                magnitude = _smoothgrad(gradients, batch, label, noise_level, samples, generator)
            maps.append(tf.reduce_max(magnitude, axis=-1).numpy())
    else:
        target = find_layer(model, layer)
        features_and_gradients = _traced(model, "layer", target.name)
        height, width = images.shape[1:3]
        for start in range(0, len(images), batch_size):
            features, gradients = features_and_gradients(tf.constant(images[start:start + batch_size]),
                                                         tf.constant(labels[start:start + batch_size]))
            weights = _gradcam_weights(features, gradients) if method == "gradcam" else \
                _gradcam_plus_plus_weights(features, gradients)
            cam = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
            if cam.shape[1:3] != (height, width):
                cam = tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0]
            maps.append(cam.numpy())
    if not maps:
        return np.zeros((0,) + images.shape[1:3], np.float32)
    return normalize(np.concatenate(maps))


def normalize(maps: np.ndarray) -> np.ndarray:
    """Per-map min-max scaling of float (B, H, W) to [0, 1] (an all-equal map becomes all 0)."""
    maps = np.asarray(maps, np.float32)
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return np.clip((maps - low) / (high - low + _EPSILON), 0.0, 1.0).astype(np.float32)


def find_layer(model, name: str | None = None):
    """The layer Grad-CAM reads: ``name`` if given, else the model's last convolution.

    Only top-level layers are searched; a nested backbone (a transfer model's) counts as one layer
    when its output is a feature map (B, h, w, channels).
    """
    if name is not None:
        try:
            layer = model.get_layer(name)
        except ValueError:
            known = ", ".join(layer.name for layer in model.layers if _is_feature_map(layer))
            raise ValueError(f"model {model.name!r} has no layer {name!r}. Layers with feature maps: {known}") from None
        if not _is_feature_map(layer):
            raise ValueError(f"layer {name!r} of model {model.name!r} does not output a feature map (B, h, w, "
                             f"channels); its output shape is {tuple(layer.output.shape)}")
        return layer
    for layer in reversed(model.layers):
        if isinstance(layer, _CONVOLUTIONS) or (isinstance(layer, keras.Model) and _is_feature_map(layer)):
            return layer
    raise ValueError(f"model {model.name!r} has no convolution layer for Grad-CAM; name one with layer=NAME")


def last_convolution(model) -> str:
    """The name of the layer Grad-CAM uses by default."""
    return find_layer(model).name


def _is_feature_map(layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):
        return False


def _as_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C). Received: shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def _traced(model, kind: str, layer_name: str | None):
    """A cached tf.function: input gradients of the class logit, or (features, their gradients)."""
    cache = _TRACED.setdefault(model, {})
    key = (kind, layer_name)
    if key in cache:
        return cache[key]
    if kind == "input":
        @tf.function(reduce_retracing=True)
        def function(images, labels):
            with tf.GradientTape() as tape:
                tape.watch(images)
                logits = model(images, training=False)
                # Images are independent at inference, so the gradient of the sum is each image's own.
                score = tf.reduce_sum(tf.gather(logits, labels, batch_dims=1))
            return tape.gradient(score, images)
    else:
        layer = model.get_layer(layer_name)
        both = keras.Model(model.inputs, [layer.output, model.outputs[0]], name=f"{model.name}_gradcam")

        @tf.function(reduce_retracing=True)
        def function(images, labels):
            with tf.GradientTape() as tape:
                features, logits = both(images, training=False)
                score = tf.reduce_sum(tf.gather(logits, labels, batch_dims=1))
            return features, tape.gradient(score, features)
    cache[key] = function
    return function


def _smoothgrad(gradients, images, labels, noise_level, samples, generator):
    spread = tf.reduce_max(images, axis=(1, 2, 3), keepdims=True) - tf.reduce_min(images, axis=(1, 2, 3),
                                                                                  keepdims=True)
    total = tf.zeros_like(images)
    for _ in range(samples):
        noise = keras.random.normal(tuple(images.shape), seed=generator) * noise_level * spread
        total += tf.abs(gradients(images + noise, labels))
    return total / samples


def _gradcam_weights(features, gradients):
    return tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)


def _gradcam_plus_plus_weights(features, gradients):
    # The exp(score) factor of the paper's derivation cancels in alpha and scales every weight of an
    # image alike, so the normalised map is the same without it (and cannot overflow).
    squared = gradients ** 2
    cubed = squared * gradients
    feature_sum = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
    denominator = 2.0 * squared + cubed * feature_sum
    denominator += tf.cast(squared == 0.0, denominator.dtype)
    alphas = squared / denominator
    alpha_sum = tf.reduce_sum(alphas, axis=(1, 2), keepdims=True)
    alphas /= alpha_sum + tf.cast(alpha_sum == 0.0, alpha_sum.dtype)
    return tf.reduce_sum(alphas * tf.nn.relu(gradients), axis=(1, 2), keepdims=True)
