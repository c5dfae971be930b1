"""Forward routes: one model call uses the "clean" or the "adversarial" statistics of its norm layers.

Dual batch normalisation keeps two sets of batch-norm statistics and affine parameters, one for clean
images and one for adversarial ones, because the two come from different distributions and mixing them
in one set hurts clean accuracy (Xie & Yuille, "Intriguing Properties of Adversarial Training at Scale",
ICLR 2020; AdvProp's auxiliary BN: Xie et al., "Adversarial Examples Improve Image Recognition", CVPR 2020).

The training step chooses the set per model call:

    with forward_route("adversarial"):
        adversarial_logits = model(adversarial_images, training=True)
    clean_logits = model(images, training=True)      # "clean" is the default route

Route-aware layers read ``current_route()`` in their ``call``. Keras runs ``call`` in Python while it
traces a ``tf.function``, so the route is fixed when the function is traced: a function traced under one
route keeps it (``model.predict`` traced once uses the clean route from then on). To evaluate the
adversarial set, convert the model with ``to_single_bn(model, "auxiliary")``.
The route lives in a ``contextvars.ContextVar``, so replicas traced in their own threads
(tf.distribute) do not see each other's route.
"""
from __future__ import annotations

import contextlib
import contextvars

import keras

from models.layers import BATCH_NORM_MOMENTUM

ROUTES = ("clean", "adversarial")
# Which DualBatchNormalization set each route uses.
ROUTE_SETS = {"clean": "main", "adversarial": "auxiliary"}

_ROUTE = contextvars.ContextVar("forward_route", default="clean")


def _check_route(name) -> str:
    if name not in ROUTES:
        raise ValueError(f"`route` must be one of {ROUTES}. Received: route={name!r}")
    return name


@contextlib.contextmanager
def forward_route(name: str):
    """Within this context, route-aware layers use the statistics of route ``name``."""
    token = _ROUTE.set(_check_route(name))
    try:
        yield name
    finally:
        _ROUTE.reset(token)


def current_route() -> str:
    """The route of the innermost ``forward_route`` context: "clean" (the default) or "adversarial"."""
    return _check_route(_ROUTE.get())


class RouteAware:
    """Marker base: a layer whose ``call`` reads ``current_route()`` (``has_routes`` looks for it)."""


def has_routes(model) -> bool:
    """Whether ``model`` (or any model or layer nested in it) holds a route-aware layer."""
    # Keras' own walk over tracked sublayers reaches layers inside nested models and wrappers alike.
    return any(isinstance(layer, RouteAware) for layer in model._flatten_layers(include_self=True, recursive=True))


@keras.saving.register_keras_serializable(package="zoo")
class RouteRecorder(RouteAware, keras.layers.Layer):
    """An identity "norm layer" that appends the route of every call to ``self.routes`` (a test double).

    Takes the ``norm_layer(name=...)`` signature, holds no weights; ``routes`` is not saved.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.routes = []

    def call(self, inputs):
        self.routes.append(current_route())
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="zoo")
class DualBatchNormalization(RouteAware, keras.layers.Layer):
    """Two BatchNormalization sets: "main" for the clean route, "auxiliary" for the adversarial one.

    Input and output: float tensors of any rank, normalised along ``axis``. Each set has its own gamma,
    beta and moving statistics; a call uses (and in training updates) only the current route's set.
    Momentum defaults to the zoo's 0.9 (see models.layers.BATCH_NORM_MOMENTUM).
    """

    def __init__(self, axis=-1, momentum=BATCH_NORM_MOMENTUM, epsilon=1e-3, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        options = dict(axis=axis, momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                       scale=self.scale, dtype=self.dtype_policy)
        self.main = keras.layers.BatchNormalization(name="main", **options)
        self.auxiliary = keras.layers.BatchNormalization(name="auxiliary", **options)

    def build(self, input_shape):
        # Both sets are built now: a functional model traces only the clean route when it is constructed.
        self.main.build(input_shape)
        self.auxiliary.build(input_shape)

    def call(self, inputs, training=None):
        return getattr(self, ROUTE_SETS[current_route()])(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}


def to_single_bn(model: keras.Model, which: str = "main") -> keras.Model:
    """A copy of ``model`` with every DualBatchNormalization replaced by a plain BatchNormalization.

    ``which`` ("main", the clean set, or "auxiliary", the adversarial set) picks the statistics and affine
    parameters the copy keeps; it predicts like ``model`` on that route, has the same layer names, and
    reloads with ``keras.models.load_model(path, safe_mode=True)`` without DualBatchNormalization.
    """
    if which not in ROUTE_SETS.values():
        raise ValueError(f"`which` must be 'main' or 'auxiliary'. Received: which={which!r}")

    def clone(layer):
        if isinstance(layer, DualBatchNormalization):
            config = getattr(layer, which).get_config()
            return keras.layers.BatchNormalization.from_config({**config, "name": layer.name,
                                                                "trainable": layer.trainable})
        return layer.__class__.from_config(layer.get_config())

    single = keras.models.clone_model(model, clone_function=clone, recursive=True)
    _copy_weights(model, single, which)
    return single


def _copy_weights(source, target, which):
    for layer in source.layers:
        copy = target.get_layer(layer.name)
        if isinstance(layer, DualBatchNormalization):
            copy.set_weights(getattr(layer, which).get_weights())
        elif isinstance(layer, keras.Model) and has_routes(layer):
            _copy_weights(layer, copy, which)
        else:
            copy.set_weights(layer.get_weights())
