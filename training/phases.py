"""Multi-phase training: one model, several fits in a row, each training its own set of layers.

A `Phase` names the top-level layers it trains (names or name prefixes, "*" for all), its learning
rate, epochs, step decay and adversarial mix. Every other layer is frozen; a frozen nested backbone's
BatchNorm runs in inference mode (Keras 3), which is what fine-tuning a pretrained backbone wants.
Each phase starts from the best weights (by val accuracy) of the phase before it.

Convengers' "Marvel Phase 5" schedule (``marvel5``, the recipe of ``convengers``):

    1 head          the dense head only                       1e-3, 5 epochs, clean
    2 resnet101     head + ResNet-101                         1e-4, 5 epochs, FGSM:PGD 10:1
    3 inception_v3  head + Inception v3                       1e-4, 5 epochs, FGSM:PGD 10:1
    4 vgg19         head + VGG19 (convolutions and fc1)       1e-5, 5 epochs, FGSM:PGD 10:1
    5 all           everything                                1e-5, /10 every 7 epochs, 15 epochs, FGSM:PGD 10:1

The report gives phase 5's schedule, the 10:1 FGSM:PGD mix at eps 2/255 and batch 64; the
learning rates and epochs of phases 1-4 are this project's choice.

Run folder of a phased run: the usual config.json, model.keras (the best weights of the last phase run),
history.csv (all phases; "phase" is the phase's number and "phase_epoch" the epoch within it),
metrics.json (the last phase's scores plus "phases": {name: scores}) and curves.png, and
phases/<name>.csv, phases/progress.json (the finished phases) and phases/best.keras (the training model,
constraints and both BN sets kept, that the next phase starts from). An interrupted run resumes at the
first unfinished phase, from that phase's BackupAndRestore folder (backup/<name>).
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

import keras

from common import checks
from common.plots import plot_history
from common.run_folder import read_history, read_json, remove_leftovers, write_history, write_json
from training import run_setup
from training.fit import Checkpoint, fit_into_run
from training.parts import RunContext

BEST_TRAINING_MODEL = "phases/best.keras"


@dataclasses.dataclass(frozen=True)
class Phase:
    """One fit: which top-level layers train, at what learning rate, for how long, against what adversary.

    trainable: top-level layer names or name prefixes ("head_" matches "head_dense1"); "*" matches all.
    decay_every / decay_factor: the learning rate is multiplied by decay_factor every decay_every
        epochs (0: constant).
    adversarial: training.adversarial.AdversarialConfig fields (None: clean training).
    """

    name: str
    trainable: tuple[str, ...]
    learning_rate: float
    epochs: int
    decay_every: int = 0
    decay_factor: float = 0.1
    adversarial: dict | None = None

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise ValueError(f"A phase name is letters, digits, '_', '.', '-'. Received: name={self.name!r}")
        if isinstance(self.trainable, str) or not self.trainable:
            raise ValueError("trainable must be a tuple of layer names or prefixes. "
                             f"Received: trainable={self.trainable!r}")
        object.__setattr__(self, "trainable", tuple(self.trainable))
        checks.positive_real("learning_rate", self.learning_rate)
        checks.positive_int("epochs", self.epochs)
        checks.non_negative_int("decay_every", self.decay_every)

    def trains(self, layer_name: str) -> bool:
        return any(prefix == "*" or layer_name.startswith(prefix) for prefix in self.trainable)


MARVEL_ADVERSARIAL = {"attacks": {"fgsm": 10, "pgd": 1}, "eps": 2 / 255}
MARVEL_PHASE_5 = (
    Phase("head", ("head_",), 1e-3, 5),
    Phase("resnet101", ("head_", "resnet101"), 1e-4, 5, adversarial=MARVEL_ADVERSARIAL),
    Phase("inception_v3", ("head_", "inception_v3"), 1e-4, 5, adversarial=MARVEL_ADVERSARIAL),
    Phase("vgg19", ("head_", "vgg19"), 1e-5, 5, adversarial=MARVEL_ADVERSARIAL),
    Phase("all", ("*",), 1e-5, 15, decay_every=7, decay_factor=0.1, adversarial=MARVEL_ADVERSARIAL),
)
_SCHEDULES: dict[str, tuple[Phase, ...]] = {"marvel5": MARVEL_PHASE_5}


def register_schedule(name: str, phases) -> None:
    phases = tuple(phases)
    if not phases or not all(isinstance(phase, Phase) for phase in phases):
        raise ValueError(f"A schedule is a non-empty sequence of Phase. Received: {phases!r}")
    if len({phase.name for phase in phases}) != len(phases):
        raise ValueError(f"Phase names in a schedule must be unique. Received: {[p.name for p in phases]}")
    _SCHEDULES[name] = phases


def get_schedule(name: str) -> tuple[Phase, ...]:
    if name not in _SCHEDULES:
        raise ValueError(f"Unknown phase schedule {name!r}. Known schedules: {', '.join(sorted(_SCHEDULES))}")
    return _SCHEDULES[name]


def select_phases(schedule: tuple[Phase, ...], spec: str | None = None) -> list[tuple[int, Phase]]:
    """(number, phase) pairs chosen by ``spec``: None for all, or numbers, ranges and names: "2-4", "1,5", "all"."""
    if spec is None or not str(spec).strip():
        return list(enumerate(schedule, start=1))
    names = [phase.name for phase in schedule]
    chosen = set()
    for part in str(spec).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match and 1 <= int(match.group(1)) <= int(match.group(2) or match.group(1)) <= len(schedule):
            chosen.update(range(int(match.group(1)), int(match.group(2) or match.group(1)) + 1))
        elif part in names:
            chosen.add(names.index(part) + 1)
        else:
            raise ValueError(f"--phases takes numbers 1-{len(schedule)}, ranges like 2-4 or names "
                             f"({', '.join(names)}), comma-separated. Received: phases={spec!r}")
    return [(number, schedule[number - 1]) for number in sorted(chosen)]


def check_phase_spec(recipe, spec: str | None) -> str | None:
    """``spec`` if it selects phases of ``recipe``'s schedule; a ValueError naming the problem otherwise."""
    if spec is None:
        return None
    if not recipe.phases:
        raise ValueError(f"--phases needs a multi-phase recipe; {recipe.model} trains in one phase. Received: {spec!r}")
    select_phases(get_schedule(recipe.phases), spec)
    return spec


def set_trainable(model: keras.Model, phase: Phase) -> list[str]:
    """Make exactly ``phase``'s top-level layers trainable (sublayers included); return their names."""
    model.trainable = True  # a frozen parent hides its sublayers' weights whatever their own flag
    trained = []
    for layer in model.layers:
        layer.trainable = phase.trains(layer.name)
        if layer.trainable and layer.trainable_weights:
            trained.append(layer.name)
    if not trained:
        raise ValueError(f"Phase {phase.name!r} trains no layer of {model.name}: none of its layers with weights "
                         f"matches {phase.trainable}. Layers: {', '.join(layer.name for layer in model.layers)}")
    return trained


def _phase_recipe(recipe, phase: Phase):
    # --epochs on a phased recipe caps every phase (the recipe's own epochs is the longest phase).
    return dataclasses.replace(recipe, learning_rate=phase.learning_rate, epochs=min(phase.epochs, recipe.epochs),
                               step_decay_epochs=phase.decay_every, step_decay_factor=phase.decay_factor)


def phase_part_specs(phase: Phase, config) -> list[dict]:
    """The run's part specs for one phase: a phase without an adversary trains without the attack mix (and logit
    pairing); one with an adversary uses its own, unless train.py's --adv flags gave the run one."""
    from training.adversarial import ADVERSARY_PARTS, adversarial_parts

    given = [spec for spec in config.parts if spec.get("name") in ADVERSARY_PARTS]
    others = [spec for spec in config.parts if spec.get("name") not in ADVERSARY_PARTS]
    if phase.adversarial is None:
        return others
    return [*(given or adversarial_parts({**phase.adversarial, "seed": config.seed})), *others]


def _train_phase(config, number, phase, base, strategy, splits, datasets, run_dir, extra_callbacks,
                 resume) -> dict:
    _, val_split = splits
    train_stream, val_data, steps = datasets
    recipe = _phase_recipe(config.recipe, phase)
    specs = phase_part_specs(phase, config)
    mix = next((spec for spec in specs if spec["name"] == "attack_mix"), None)
    with strategy.scope():
        trained = set_trainable(base, phase)
    assembly = run_setup.assemble(config, splits[0], base=base, parts=specs, recipe=recipe, strategy=strategy)

    history_name = f"phases/{phase.name}.csv"
    callbacks = [*run_setup.run_callbacks(config, assembly, RunContext(run_dir, val_split, config.seed)),
                 *run_setup.schedule_callbacks(config, recipe, extra_callbacks, run_dir / "tensorboard" / phase.name)]
    print(f"phase {number} {phase.name}: training {', '.join(trained)} at {phase.learning_rate:g} for "
          f"{recipe.epochs} epochs{', adversarial ' + str(mix['attacks']) if mix else ''}")
    # A phase history without a finished phase is a crashed attempt: resume it from its own backup.
    # phases/best.keras keeps the training model (constraints, both BN sets) the next phase starts from.
    saved = [*run_setup.checkpoints(assembly), Checkpoint(base, BEST_TRAINING_MODEL)]
    fit_into_run(assembly.model, run_dir, train_stream, epochs=recipe.epochs, steps_per_epoch=steps,
                 validation_data=val_data, checkpoints=saved, callbacks=callbacks,
                 resume=resume or (run_dir / history_name).exists(), verbose=config.verbose,
                 history_name=history_name, backup_name=f"backup/{phase.name}", metrics_name=None, plot_name=None)

    metrics = run_setup.final_metrics(run_dir, val_data, base.count_params(), history_path=run_dir / history_name)
    trainable = sum(int(keras.ops.size(variable)) for variable in base.trainable_variables)
    metrics.update(phase=number, learning_rate=phase.learning_rate, trained_layers=trained,
                   trainable_parameters=trainable, adversarial=mix)
    return metrics


def _best_training_model(run_dir: pathlib.Path) -> pathlib.Path:
    # A run folder written before phases/best.keras existed keeps its best weights in model.keras alone.
    best = run_dir / BEST_TRAINING_MODEL
    return best if best.exists() else run_dir / "model.keras"


def _write_history(run_dir: pathlib.Path, finished: dict) -> pathlib.Path:
    """All finished phases' histories in one file, epochs counted across phases."""
    rows = []
    for name, metrics in finished.items():
        for row in read_history(run_dir / "phases" / f"{name}.csv"):
            rows.append({"epoch": len(rows), "phase": metrics["phase"], "phase_epoch": row["epoch"],
                         **{key: value for key, value in row.items() if key != "epoch"}})
    path = run_dir / "history.csv"
    write_history(path, rows)
    return path


def train_phases(config, run_dir, *, resume: bool = False, extra_callbacks: tuple = ()) -> pathlib.Path:
    """Run the selected phases of ``config.recipe.phases`` into ``run_dir``; with ``resume`` skip finished ones."""
    run_dir = pathlib.Path(run_dir)
    selected = select_phases(get_schedule(config.recipe.phases), config.phases)
    strategy = run_setup.start(config)
    splits = run_setup.load_splits(config)
    with strategy.scope():
        base = run_setup.build_model(config, splits[0])
    run_dir = run_setup.open_run_dir(config, run_dir, strategy, splits[0], resume)
    remove_leftovers(run_dir)
    (run_dir / "phases").mkdir(exist_ok=True)
    progress_path = run_dir / "phases" / "progress.json"
    finished = read_json(progress_path)["finished"] if resume and progress_path.exists() else {}
    finished = dict(sorted(finished.items(), key=lambda item: item[1]["phase"]))  # JSON files sort their keys
    if finished:
        # The best weights of the last finished phase; a phase interrupted after its first epoch then
        # restores its own later weights from its backup.
        base.load_weights(_best_training_model(run_dir))
    datasets = run_setup.make_datasets(config.recipe, *splits, config.seed)

    for number, phase in selected:
        if phase.name in finished:
            continue
        finished[phase.name] = _train_phase(config, number, phase, base, strategy, splits, datasets, run_dir,
                                            extra_callbacks, resume)
        finished = dict(sorted(finished.items(), key=lambda item: item[1]["phase"]))
        write_json(progress_path, {"finished": finished})
        base.load_weights(_best_training_model(run_dir))  # the next phase starts from this phase's best
    backup_root = run_dir / "backup"
    if backup_root.is_dir() and not any(backup_root.iterdir()):
        backup_root.rmdir()

    history_path = _write_history(run_dir, finished)
    last = finished[selected[-1][1].name]
    seconds = sum(metrics["total_seconds"] for metrics in finished.values())
    epochs = sum(metrics["epochs"] for metrics in finished.values())
    summary = {**last, "epochs": epochs, "total_seconds": seconds, "seconds_per_epoch": seconds / max(epochs, 1),
               "parameters": int(base.count_params()), "phases": finished}
    plot_history(history_path, run_dir / "curves.png", title=f"{config.model} on {config.dataset}, phases "
                 f"{', '.join(str(number) for number, _ in selected)}")
    write_json(run_dir / "metrics.json", summary)  # last: a finished run is one with metrics.json
    return run_dir
