"""Plain Keras copies of trained models: what a run saves as model.keras.

A model trains with pieces only training needs: weight constraints (Parseval's retraction, the
simplex projection of a convex residual merge), dual batch norm's second set of statistics, the
wrapper that keeps an ensemble's members in inference mode. ``plain_model(model)`` returns a copy
that predicts what ``model`` predicts at inference, built from Keras' own layers only, so
``keras.models.load_model(path, safe_mode=True)`` loads it in a Python that never imported this
project. The resume state (BackupAndRestore) keeps the training model; only the written model is plain.

- DualBatchNormalization -> BatchNormalization with the main (clean) statistics (``to_single_bn``);
- every ``*_constraint`` of every layer -> None (a constraint only acts in ``optimizer.apply``);
- ConvexCombination (sum_i w_i x_i) -> one Rescaling(w_i) per input and an Add, under the same name;
- InferenceOnly(member) -> the member model itself (inference already runs with ``training=False``).
Other custom layers are kept as they are (the model then still needs ``import models`` to load).
"""
from __future__ import annotations

import copy

import keras

from models.routes import has_routes, to_single_bn

CONVEX = "ConvexCombination"
INFERENCE_ONLY = "InferenceOnly"


def plain_model(model: keras.Model) -> keras.Model:
    """A copy of functional ``model`` without training-only pieces (see the module docstring), same weights."""
    if has_routes(model):
        model = to_single_bn(model, "main")
    serialized = keras.saving.serialize_keras_object(model)
    plain = keras.saving.deserialize_keras_object(_plain_config(serialized, model))
    _copy_weights(model, plain)
    return plain


def _tensor_reference(name: str, shape) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": "float32", "keras_history": [name, 0, 0]}}


def _strip_constraints(config: dict) -> dict:
    return {key: (None if key.endswith("_constraint") else value) for key, value in config.items()}


def _plain_config(serialized: dict, model) -> dict:
    """The serialized functional ``model`` with its layers made plain (recursively for nested models)."""
    serialized = copy.deepcopy(serialized)
    layers = []
    for entry in serialized["config"]["layers"]:
        name = entry["config"].get("name", entry.get("name"))
        if entry["class_name"] == CONVEX:
            layers += _convex_as_rescaling_and_add(entry, model.get_layer(name))
            continue
        if entry["class_name"] == INFERENCE_ONLY:
            member = model.get_layer(name).layer
            nested = _plain_config(keras.saving.serialize_keras_object(member), member)
            nested["config"]["name"] = name
            nested.update(name=name, inbound_nodes=entry["inbound_nodes"])
            nested["config"]["trainable"] = False
            layers.append(nested)
            continue
        if entry["class_name"] in ("Functional", "Sequential") and isinstance(model.get_layer(name), keras.Model):
            nested = _plain_config(entry, model.get_layer(name))
            layers.append(nested)
            continue
        entry["config"] = _strip_constraints(entry["config"])
        layers.append(entry)
    serialized["config"]["layers"] = layers
    return serialized


def _convex_as_rescaling_and_add(entry: dict, layer) -> list[dict]:
    """sum_i w_i x_i as Rescaling(w_i) per input, then Add named like the merge (so its users find it)."""
    name = entry["config"]["name"]
    weights = [float(value) for value in keras.ops.convert_to_numpy(layer.combination)]
    (node,) = entry["inbound_nodes"]  # the zoo calls each merge once
    inputs = node["args"][0]
    scaled = []
    for index, (tensor, weight) in enumerate(zip(inputs, weights)):
        scale_name = f"{name}_weight{index}"
        scaled.append({"module": "keras.layers", "class_name": "Rescaling", "registered_name": None,
                       "name": scale_name, "build_config": {"input_shape": tensor["config"]["shape"]},
                       "config": {"name": scale_name, "trainable": False, "dtype": entry["config"].get("dtype"),
                                  "scale": weight, "offset": 0.0},
                       "inbound_nodes": [{"args": [tensor], "kwargs": {}}]})
    add = {"module": "keras.layers", "class_name": "Add", "registered_name": None, "name": name,
           "build_config": entry.get("build_config"),
           "config": {"name": name, "trainable": False, "dtype": entry["config"].get("dtype")},
           "inbound_nodes": [{"args": [[_tensor_reference(item["name"], tensor["config"]["shape"])
                                        for item, tensor in zip(scaled, inputs)]], "kwargs": {}}]}
    return [*scaled, add]


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    for layer in source.layers:
        if type(layer).__name__ == CONVEX or not layer.weights:
            continue  # a merge's weights live in its Rescaling scales
        copy_ = target.get_layer(layer.name)
        if type(layer).__name__ == INFERENCE_ONLY:
            _copy_weights(layer.layer, copy_)
        elif isinstance(layer, keras.Model):
            _copy_weights(layer, copy_)
        else:
            copy_.set_weights(layer.get_weights())
