"""The one training model: a ``keras.Model`` whose ``train_step`` is composed of registered parts.

    model = TrainingModel(base, transforms=[AttackMix(...)], loss_terms=[LogitPairing(0.5)],
                          hooks=[GradientMonitor(...)])
    model.compile(...); model.fit(...)

A step: each input transform makes views of the batch from the current weights (each taking the
leading images of what is left of the clean batch); the clean remainder is the "clean" view (and
every clean image the "batch" view, made only when a loss term asks for it); the
views go through the forward pass (one pass for all, or one per route when the base has
route-aware norm layers, so dual BN sees each route's images alone); the classification loss is
the mean over every view that counts in it; each loss term adds its value (logged under its name),
computed from the views it names and nothing else;
the optimizer applies the gradients; each after-update hook runs. With no parts the step is Keras'
own ``Model.train_step``, so plain training costs exactly what ``model.fit`` costs.

``call`` and ``predict`` are ``base``'s (clean route); ``test_step`` is Keras' own, minus the part
metrics (evaluation runs no part). Save ``model.base``: the
wrapper is a training-time object without a config of its own. TensorFlow backend.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from models import routes
from training.parts import Hook, InputTransform, LossTerm, View


class TrainingModel(keras.Model):
    def __init__(self, base: keras.Model, transforms=(), loss_terms=(), hooks=(), **kwargs):
        super().__init__(**kwargs)
        if not isinstance(base, keras.Model):
            raise ValueError(f"`base` must be a keras.Model. Received: base={base!r}")
        self.base = base
        self.transforms, self.loss_terms, self.hooks = list(transforms), list(loss_terms), list(hooks)
        parts = (*self.transforms, *self.loss_terms, *self.hooks)
        for part, base_class in [*((p, InputTransform) for p in self.transforms),
                                 *((p, LossTerm) for p in self.loss_terms), *((p, Hook) for p in self.hooks)]:
            if not isinstance(part, base_class):
                raise ValueError(f"A {base_class.kind} part subclasses training.parts.{base_class.__name__}. "
                                 f"Received: {part!r}")
        names = [part.name for part in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"Each part appears once. Received parts: {names}")
        # Variables the parts own (schedule counters, monitors) are the model's, so BackupAndRestore keeps them.
        self.part_variables = [variable for part in parts for variable in part.variables]
        self.term_trackers = [keras.metrics.Mean(name=term.name) for term in self.loss_terms]
        for term in self.loss_terms:  # a term may resolve its layers from the model (e.g. every block output)
            term.bind(base)
        # Extra values a part logs itself (keras.metrics it updates), e.g. σ per layer.
        self.term_metrics = [metric for part in parts for metric in part.metrics]
        self.step_hooks = [hook for hook in self.hooks if hook.after_update]
        self._routed = routes.has_routes(base)
        feature_layers = sorted({name for term in self.loss_terms for name in term.feature_layers})
        self._feature_layers = feature_layers
        self._forward_model = base if not feature_layers else keras.Model(
            base.inputs, [base.outputs[0], *[base.get_layer(name).output for name in feature_layers]],
            name=f"{base.name}_with_features")
        self._wants_batch = any("batch" in term.views for term in self.loss_terms)
        self.build(base.input_shape)  # base is built; BackupAndRestore needs the wrapper built too

    @property
    def has_parts(self) -> bool:
        return bool(self.transforms or self.loss_terms or self.step_hooks)

    def call(self, inputs, training=False):
        return self.base(inputs, training=training)

    # --------------------------------------------------------------------------------- views
    def make_views(self, x, y) -> list[View]:
        """The transforms' views (with offsets), the clean view of what they left, and, when a loss term asks
        for it, the "batch" view of every clean image (the clean view is then a slice of its forward pass)."""
        step = self.optimizer.iterations
        views, offset = [], 0
        for transform in self.transforms:
            for view in transform.views(self, x[offset:], y[offset:], step):
                view.offset = offset
                views.append(view)
                offset += view.replaces
        views.append(View("clean", x[offset:], y[offset:], route="clean", replaces=0, offset=offset))
        if self._wants_batch:
            views.append(View("batch", x, y, route="clean", replaces=0, in_loss=False, offset=0))
        return views

    def forward(self, views: list[View]) -> dict:
        """{view name: logits, "features": {view name: {layer: output}}}, one pass per route group."""
        by_name = {view.name: view for view in views}
        shared_clean = "batch" in by_name  # the clean images are a slice of the batch: one pass for both
        groups = {}
        for view in views:
            if shared_clean and view.name == "clean":
                continue
            groups.setdefault(view.route if self._routed else "shared", []).append(view)
        outputs, features = {}, {}
        for route, members in groups.items():
            images = tf.concat([view.images for view in members], 0) if len(members) > 1 else members[0].images
            result = self._forward_group("clean" if route == "shared" else route, images, may_be_empty=self._routed)
            sizes = [tf.shape(view.images)[0] for view in members]
            pieces = [tf.split(tensor, sizes, axis=0) if len(members) > 1 else [tensor] for tensor in result]
            for index, view in enumerate(members):
                outputs[view.name] = pieces[0][index]
                features[view.name] = {name: pieces[1 + k][index] for k, name in enumerate(self._feature_layers)}
        if shared_clean:
            start = by_name["clean"].offset
            outputs["clean"] = outputs["batch"][start:]
            features["clean"] = {name: value[start:] for name, value in features["batch"].items()}
        outputs["features"] = features
        return outputs

    def term_inputs(self, term, by_name: dict, outputs: dict) -> tuple[dict, dict]:
        """The views a loss term asked for, and their outputs: nothing else."""
        missing = [name for name in term.views if name not in by_name]
        if missing:
            raise ValueError(f"The loss term {term.name!r} needs the views {missing}; this step makes "
                             f"{sorted(by_name)}")
        views = {name: by_name[name] for name in term.views}
        given = {name: outputs[name] for name in term.views}
        given["features"] = {name: outputs["features"][name] for name in term.views}
        return views, given

    def _forward_group(self, route: str, images, may_be_empty: bool) -> list:
        """[logits, *features] of one route's images; with dual BN a route may get no images (100%
        adversarial leaves no clean ones): then empty outputs, and that route's statistics stay as they are
        (batch norm on an empty batch would write NaN into them)."""
        def run():
            with routes.forward_route(route):
                result = self._forward_model(images, training=True)
            return list(result) if self._feature_layers else [result]

        if not may_be_empty:
            return run()
        empty = [tf.zeros([0, *output.shape[1:]], output.dtype) for output in self._forward_model.outputs]
        return tf.cond(tf.shape(images)[0] > 0, run, lambda: empty)

    # ---------------------------------------------------------------------------- train step
    def train_step(self, data):
        if not self.has_parts:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError("Sample weights are not supported together with training parts.")
        x = tf.cast(x, tf.float32)
        with tf.GradientTape() as tape:
            views = self.make_views(x, y)
            by_name = {view.name: view for view in views}
            outputs = self.forward(views)
            counted = [view for view in views if view.in_loss]
            y_loss = tf.concat([view.labels for view in counted], 0)
            y_pred = tf.concat([outputs[view.name] for view in counted], 0)
            loss = self.compute_loss(x=x, y=y_loss, y_pred=y_pred, training=True)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            for term, tracker in zip(self.loss_terms, self.term_trackers):
                value = tf.cast(term(self, *self.term_inputs(term, by_name, outputs)), tf.float32)
                tracker.update_state(value)
                loss += value / replicas  # per-replica mean -> global-batch mean, as Keras' losses do
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        for hook in self.step_hooks:
            hook(self, gradients, variables)
        for metric in self.metrics:
            if metric.name == "loss":
                # compute_loss divided by the replica count (global-batch mean); the metric wants the mean.
                metric.update_state(loss * replicas, sample_weight=tf.shape(y_loss)[0])
        return self.compute_metrics(x, y_loss, y_pred)

    def test_step(self, data):
        # Evaluation is clean and runs no part: leave out the part metrics (they would log as val_* zeros).
        logs = super().test_step(data)
        part_metrics = {metric.name for metric in (*self.term_trackers, *self.term_metrics)}
        return {name: value for name, value in logs.items() if name not in part_metrics}


def wrap(base: keras.Model, parts: dict | None = None) -> keras.Model:
    """``base`` in a TrainingModel with ``parts`` ({"transform": [...], "loss": [...], "hook": [...]})."""
    parts = parts or {}
    return TrainingModel(base, transforms=parts.get("transform", ()), loss_terms=parts.get("loss", ()),
                         hooks=parts.get("hook", ()))
