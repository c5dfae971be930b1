"""The training core: parts plug into the wrapper without editing it, routes reach norm layers, the
wrapper without parts is plain `model.fit`, and the import graph keeps its layers."""
from __future__ import annotations

import ast
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.routes import RouteRecorder
from training.adversarial import AdversarialConfig, AttackMix
from training.parts import Hook, InputTransform, LossTerm, View, make_part, make_parts, part_names, register_part
from training.wrapper import TrainingModel, wrap
from tests.helpers import SHAPE, compiled, small_model, toy_data

REPO = pathlib.Path(__file__).resolve().parents[1]
# Three parts, each one registered object; none of them needed an edit of the wrapper.
@register_part("loss", "test_constant_half")
class ConstantHalf(LossTerm):
    def __call__(self, model, views, outputs):
        return tf.constant(0.5)


@register_part("transform", "test_zeros_view")
class ZerosView(InputTransform):
    """Adds a view of black images labelled 0 (replacing nothing) and counts the images it saw."""

    def __init__(self):
        self.seen = keras.Variable(0, dtype="int64", trainable=False, name="zeros_seen")
        self.variables = [self.seen]

    def views(self, model, x, y, step):
        self.seen.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return [View("zeros", tf.zeros_like(x), tf.zeros_like(y), route="clean")]


@register_part("hook", "test_clip_kernels")
class ClipKernels(Hook):
    def __init__(self, limit: float):
        self.limit = limit

    def __call__(self, model, gradients, variables):
        for variable in variables:
            if "kernel" in variable.path:
                variable.assign(tf.clip_by_value(variable, -self.limit, self.limit))


def test_parts_are_registered_and_built_from_specs():
    assert "test_constant_half" in part_names("loss") and "attack_mix" in part_names("transform")
    parts = make_parts([{"kind": "loss", "name": "test_constant_half"},
                        {"kind": "hook", "name": "test_clip_kernels", "limit": 0.1}])
    assert [type(part) for part in parts["loss"]] == [ConstantHalf] and parts["hook"][0].limit == 0.1
    for bad in ({"kind": "loss", "name": "nope"}, {"kind": "sideways", "name": "x"}, {"name": "x"},
                {"kind": "hook", "name": "test_clip_kernels", "wrong": 1}):
        with pytest.raises(ValueError):
            make_part(bad)


def test_a_new_loss_term_is_added_and_logged_under_its_name():
    x, y = toy_data()
    plain = compiled(small_model())
    with_term = compiled(wrap(small_model(), make_parts([{"kind": "loss", "name": "test_constant_half"}])))
    with_term.base.set_weights(plain.get_weights())
    history = with_term.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False).history
    reference = plain.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert history["test_constant_half"] == [pytest.approx(0.5)]
    assert history["loss"][0] == pytest.approx(reference + 0.5, rel=1e-4)


def test_a_new_input_transform_adds_its_view_to_the_batch():
    x, y = toy_data(64)
    transform = make_part({"kind": "transform", "name": "test_zeros_view"})
    model = compiled(TrainingModel(small_model(), transforms=[transform]), learning_rate=0.5)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert int(transform.seen.numpy()) == 3 * 64
    predictions = np.argmax(model.predict(np.zeros((4, *SHAPE), "float32"), verbose=0), -1)
    np.testing.assert_array_equal(predictions, 0)  # it learnt the added black images' label


def test_a_new_after_update_hook_runs_after_every_update():
    x, y = toy_data()
    model = compiled(TrainingModel(small_model(), hooks=[ClipKernels(0.01)]), learning_rate=1.0)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    kernels = [variable.numpy() for variable in model.base.trainable_variables if "kernel" in variable.path]
    assert kernels and all(np.abs(kernel).max() <= 0.01 + 1e-7 for kernel in kernels)


def test_views_take_their_route_to_a_route_aware_norm_layer():
    x, y = toy_data(32)
    base = small_model(norm_layer=RouteRecorder)
    attack = AttackMix(config=AdversarialConfig(attacks="fgsm:1", eps=0.05))
    model = compiled(TrainingModel(base, transforms=[attack]))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    routes = set(base.get_layer("norm").routes)
    assert {"clean", "adversarial"} <= routes, routes


def test_without_parts_the_wrapper_trains_exactly_like_plain_fit():
    x, y = toy_data()
    plain, wrapped = compiled(small_model()), compiled(TrainingModel(small_model()))
    wrapped.base.set_weights(plain.get_weights())
    plain.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    wrapped.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    for want, got in zip(plain.get_weights(), wrapped.base.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def _import_graph():
    skip = {"tests", ".venv", "build", "runs", "results", ".git"}
    files = [path for path in REPO.rglob("*.py") if not set(path.relative_to(REPO).parts) & skip]
    modules = {}
    for path in files:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module, *[f"{node.module}.{alias.name}" for alias in node.names]]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph, {path.stem for path in REPO.glob("*.py")}


def test_the_import_graph_has_no_cycle_and_keeps_its_layers():
    graph, scripts = _import_graph()
    top = lambda module: module.split(".")[0]  # noqa: E731
    broken = [(a, b) for a, edges in graph.items() for b in edges
              if (top(a), top(b)) in {("training", "analysis"), ("analysis", "training")}
              or (a in scripts and b in scripts)
              or (top(a) in {"data", "models", "augment", "attacks"} and top(b) in {"training", "analysis", "loading"})
              or (top(a) == "common" and top(b) != "common")]  # the bottom layer imports no other package
    assert not broken, broken
    # A package importing its own __init__ is not a cycle; any other path back to a module is.
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in graph.get(module, ()):
            if target == top(module) and "." in module:
                continue
            if state.get(target) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*path, target])}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_every_model_has_exactly_one_recipe_at_its_builders_input_size():
    import inspect

    import models
    from training.recipes import get_recipe, recipe_names

    assert sorted(recipe_names()) == models.names()  # one recipe per model, none without a model
    for name in models.names():
        default_shape = inspect.signature(models.get_builder(name)).parameters["input_shape"].default
        assert get_recipe(name).image_size == default_shape[0], name
    with pytest.raises(ValueError, match="No recipe"):
        get_recipe("no_such_model")


def test_part_metrics_are_logged_for_training_only():
    x, y = toy_data()
    model = compiled(wrap(small_model(), make_parts([{"kind": "loss", "name": "test_constant_half"}])))
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(x, y)).history
    assert "test_constant_half" in history and "val_test_constant_half" not in history and "val_loss" in history


def test_a_config_json_written_before_the_parts_carried_every_method_still_loads():
    """Runs written when TrainConfig had "adversarial" and "save_bn" fields resume: the keys become part specs."""
    from training.run_setup import TrainConfig, default_config

    payload = default_config("cis680_allconv", dataset="digits").to_dict()
    payload.update(adversarial={"attacks": "fast:1", "eps": 2 / 255, "fraction": 0.5, "logit_pairing": 0.5,
                                "seed": 3}, save_bn="adv", parts=[{"kind": "hook", "name": "gradient_monitor"}])
    config = TrainConfig.from_dict(payload)
    assert [spec["name"] for spec in config.parts] == ["attack_mix", "logit_pairing", "gradient_monitor",
                                                       "auxiliary_bn_model"]
    assert config.parts[0]["attacks"] == {"fast": 1} and config.parts[0]["seed"] == 3
    assert not {"adversarial", "save_bn"} & set(config.to_dict())
    assert TrainConfig.from_dict(config.to_dict()) == config  # today's config.json reads back as written
