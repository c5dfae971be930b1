"""Ensembles of trained runs: the AlphaStack and the averaged ensemble.

AlphaStack (CS182 Tiny ImageNet report): the members are frozen and run in inference mode, their
logits are concatenated, and a small dense head (Dense + ReLU per width, then Dense to logits) learns
to combine them. The averaged ensemble (the Convengers report's multi-model ensemble) outputs the log
of the mean of the members' softmax probabilities, so softmax of its output is that mean; it trains
nothing.

Both are one functional model: ``image`` (the first member's input size) -> per member, a bilinear
``member<i>_resize`` when its input size differs -> ``member<i>`` (``models.transfer.InferenceOnly``
around the member's own functional model) -> the combination. The saved ``model.keras`` holds every
member and loads on its own with ``safe_mode=True``: the AlphaStack's is plain Keras (``models.plain``:
each member nested as itself, frozen; the average is built from Keras' own layers).
Members are scored inside the ensemble graph, on the same data and resizing as the ensemble.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib

import keras

import models  # noqa: F401  (registers the zoo's custom layers for loading)
from data.pipeline import make_dataset
from models.plain import plain_model
from models.transfer import InferenceOnly
from training import trainer
from training.recipes import Recipe
from common.run_folder import atomic_path, write_json
from loading.run_loader import load_run, load_split
from training.fit import Checkpoint, fit_into_run

KINDS = ("alphastack", "average")


@dataclasses.dataclass
class Member:
    run_dir: pathlib.Path
    config: dict
    model: keras.Model

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.input_shape[1:3])


def load_members(run_dirs) -> list[Member]:
    """The trained models of ``run_dirs`` (each a run folder with config.json and model.keras)."""
    if not run_dirs:
        raise ValueError("An ensemble needs at least one member run folder. Received: none")
    resolved = [pathlib.Path(run_dir).resolve() for run_dir in run_dirs]
    repeated = sorted({str(run_dir) for run_dir in run_dirs if resolved.count(pathlib.Path(run_dir).resolve()) > 1})
    if repeated:
        raise ValueError(f"Each member run is listed once. Received more than once: {', '.join(repeated)}")
    members = []
    for run_dir in map(pathlib.Path, run_dirs):
        # Uncompiled: a compiled member would bring its own loss and metrics into the ensemble's.
        loaded = load_run(run_dir)
        members.append(Member(run_dir, loaded.config, loaded.model))
    classes = {str(member.run_dir): (member.config.get("dataset", "tiny-imagenet"), member.config.get("classes"),
                                     member.model.output_shape[-1]) for member in members}
    if len(set(classes.values())) != 1:
        described = "; ".join(f"{run}: {dataset}, classes={count or 'all'} ({outputs} outputs)"
                              for run, (dataset, count, outputs) in classes.items())
        raise ValueError(f"Ensemble members must be trained on the same dataset and classes. Received: {described}")
    return members


def _member_outputs(members: list[Member], input_shape) -> tuple:
    inputs = keras.Input(shape=tuple(input_shape), dtype="float32", name="image")
    outputs = []
    for index, member in enumerate(members, start=1):
        x = inputs
        if member.input_size != tuple(input_shape[:2]):
            x = keras.layers.Resizing(*member.input_size, interpolation="bilinear", name=f"member{index}_resize")(x)
        outputs.append(InferenceOnly(member.model, name=f"member{index}")(x))
    return inputs, outputs


def build_alphastack(members: list[Member], input_shape, head=(512, 256)) -> keras.Model:
    """Frozen members -> concatenated logits -> Dense + ReLU per ``head`` width -> Dense to logits."""
    head = tuple(head)
    if any(isinstance(width, bool) or not isinstance(width, int) or width < 1 for width in head):
        raise ValueError(f"head widths must be positive integers. Received: head={head!r}")
    inputs, outputs = _member_outputs(members, input_shape)
    x = keras.layers.Concatenate(name="stack_concatenate")(outputs) if len(outputs) > 1 else outputs[0]
    for index, width in enumerate(head, start=1):
        x = keras.layers.Dense(width, name=f"stack_dense{index}")(x)
        x = keras.layers.ReLU(name=f"stack_relu{index}")(x)
    logits = keras.layers.Dense(members[0].model.output_shape[-1], name="logits")(x)
    return keras.Model(inputs, logits, name="alphastack")


def build_average(members: list[Member], input_shape) -> keras.Model:
    """log(mean of the members' softmax probabilities): logits whose softmax is the averaged prediction."""
    inputs, outputs = _member_outputs(members, input_shape)
    return keras.Model(inputs, mean_probability_logits(outputs), name="average_ensemble")


def mean_probability_logits(member_logits: list):
    """log(mean_i softmax(logits_i)) as logsumexp_i(log_softmax(logits_i)) − log(n), from Keras' own layers
    only, so that the saved ensemble loads without this project: logsumexp along the member axis is
    x − log_softmax(x) there (equal at every member), and one of those equal entries is kept by averaging."""
    count = len(member_logits)
    classes = member_logits[0].shape[-1]
    log_probabilities = [keras.layers.Activation("log_softmax", dtype="float32", name=f"member{index}_log_softmax")(x)
                         for index, x in enumerate(member_logits, start=1)]
    if count == 1:
        return log_probabilities[0]
    stacked = keras.layers.Concatenate(axis=1, name="members_stack")(
        [keras.layers.Reshape((1, classes), name=f"member{index}_row")(x)
         for index, x in enumerate(log_probabilities, start=1)])                       # (B, members, classes)
    by_class = keras.layers.Permute((2, 1), name="members_last")(stacked)              # (B, classes, members)
    normalised = keras.layers.Activation("log_softmax", name="members_log_softmax")(by_class)
    logsumexp = keras.layers.Subtract(name="members_logsumexp")([by_class, normalised])
    pooled = keras.layers.GlobalAveragePooling1D(data_format="channels_first", name="members_pool")(logsumexp)
    return keras.layers.Rescaling(1.0, offset=-math.log(count), name="mean_probability_logits")(pooled)


def scores(model: keras.Model, val_data) -> dict:
    """val top-1/3/5 and loss of ``model`` (logits out)."""
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=trainer.accuracy_metrics())
    result = model.evaluate(val_data, return_dict=True, verbose=0)
    return {"val_top1": result["accuracy"], "val_top3": result["top3"], "val_top5": result["top5"],
            "val_loss": result["loss"]}


def member_scores(ensemble: keras.Model, members: list[Member], val_data) -> dict:
    """Each member's scores through the ensemble's own input (and resizing), keyed by its run folder."""
    result = {}
    for index, member in enumerate(members, start=1):
        single = keras.Model(ensemble.input, ensemble.get_layer(f"member{index}").output, name=f"member{index}")
        result[str(member.run_dir)] = {**scores(single, val_data), "model": member.config.get("model")}
    return result


def data_config(members: list[Member], *, kind: str, dataset=None, data=None, classes=None, per_class=None,
                batch_size=64, epochs=1, learning_rate=1e-3, seed=0, verbose="auto", command=""):
    """A TrainConfig reading the first member's data (its dataset, root, classes, size) unless overridden."""
    first = trainer.TrainConfig.from_dict(members[0].config)
    recipe = Recipe(kind, augment="none", image_size=members[0].input_size[0], learning_rate=learning_rate,
                    batch_size=batch_size, epochs=epochs, early_stopping_patience=0, reduce_lr_factor=1.0,
                    source="CS182 report (AlphaStack)" if kind == "alphastack" else "Convengers report (averaging)")
    return trainer.TrainConfig(
        model=kind, recipe=recipe, dataset=dataset or ("tiny-imagenet" if data else first.dataset),
        data=data or first.data, classes=classes or first.classes, per_class=per_class or first.per_class,
        image_size=first.resolved_image_size, seed=seed, verbose=verbose, command=command)


def _load_data(config, members, *, train: bool = True):
    """(train split or None, val split) of ``config``; the averaged ensemble trains nothing, so it skips
    the train split."""
    keras.utils.set_random_seed(config.seed)
    if train:
        train_split, val_split = trainer.load_splits(config)
    else:
        size = config.resolved_image_size
        train_split, val_split = None, load_split({"dataset": config.dataset, "data": config.data}, "val",
                                                  classes=config.classes, image_size=(size, size) if size else None)
    if val_split.num_classes != members[0].model.output_shape[-1]:
        raise ValueError(f"The members predict {members[0].model.output_shape[-1]} classes but the data has "
                         f"{val_split.num_classes} (dataset={config.dataset!r}, classes={config.classes!r})")
    return train_split, val_split


def _write_config(run_dir: pathlib.Path, config, members, val_split, **extra) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {**config.to_dict(), "members": [str(m.run_dir) for m in members],
                                         "input_shape": val_split.image_shape, "num_classes": val_split.num_classes,
                                         **extra})


def train_alphastack(members: list[Member], run_dir, *, head=(512, 256), **data_options) -> pathlib.Path:
    """Train an AlphaStack on ``members`` into ``run_dir`` (train.py's layout); metrics.json has "members"."""
    run_dir = pathlib.Path(run_dir)
    config = data_config(members, kind="alphastack", **data_options)
    train_split, val_split = _load_data(config, members)
    stack = build_alphastack(members, val_split.image_shape, head)
    trainer.compile_for_training(stack, config.recipe)
    _write_config(run_dir, config, members, val_split, head=list(head))
    train_stream, val_data, steps = trainer.make_datasets(config.recipe, train_split, val_split, config.seed)

    def finish(rows):
        metrics = trainer.final_metrics(run_dir, val_data, stack.count_params())
        metrics["trainable_parameters"] = sum(int(keras.ops.size(variable)) for variable in stack.trainable_variables)
        metrics["members"] = member_scores(stack, members, val_data)
        return metrics

    fit_into_run(stack, run_dir, train_stream, epochs=config.recipe.epochs, steps_per_epoch=steps,
                 validation_data=val_data, checkpoints=[Checkpoint(stack, "model.keras", export=plain_model)], verbose=config.verbose,
                 finish=finish, plot_title=f"AlphaStack of {len(members)} on {config.dataset}")
    return run_dir


def save_average(members: list[Member], run_dir, **data_options) -> pathlib.Path:
    """Build, score and save the averaged ensemble of ``members`` into ``run_dir`` (no training, no history)."""
    run_dir = pathlib.Path(run_dir)
    data_options.pop("epochs", None)
    config = data_config(members, kind="average", **data_options)
    _, val_split = _load_data(config, members, train=False)
    ensemble = build_average(members, val_split.image_shape)
    _write_config(run_dir, config, members, val_split)
    val_data = make_dataset(val_split, config.recipe.batch_size, training=False)
    with atomic_path(run_dir / "model.keras") as temporary:
        plain_model(ensemble).save(temporary)
    metrics = {**scores(ensemble, val_data), "parameters": int(ensemble.count_params()),
               "members": member_scores(ensemble, members, val_data)}
    write_json(run_dir / "metrics.json", metrics)
    return run_dir


def markdown_table(metrics: dict, name: str) -> str:
    """Members and the ensemble, val top-1/3/5, as a Markdown table."""
    lines = ["| model | run | val top-1 | val top-3 | val top-5 |", "| --- | --- | --- | --- | --- |"]
    rows = [(values.get("model") or "?", run, values) for run, values in metrics["members"].items()]
    for model, run, values in [*rows, (name, "ensemble", metrics)]:
        lines.append(f"| {model} | {run} | {values['val_top1']:.4f} | {values['val_top3']:.4f} | "
                     f"{values['val_top5']:.4f} |")
    return "\n".join(lines)


def markdown_report(metrics: dict, name: str, members: list[Member], command: str) -> str:
    """The table, then the commands that trained each member and made the ensemble."""
    commands = [member.config["command"] for member in members if member.config.get("command")] + [command]
    return "\n".join([markdown_table(metrics, name), "", "Members are scored through the ensemble's input. Commands:",
                      "", *[f"- `{line}`" for line in commands]]) + "\n"
