"""Train one model with its recipe and leave a complete run folder.

run folder: config.json, model.keras (best by val accuracy), history.csv, metrics.json,
curves.png, fit.json, and backup/ while a run is unfinished (what ``--resume`` continues from).
The model and its training parts (attack mix, loss terms, hooks) come from ``run_setup.assemble``
(the config's builder options and part specs); the fit itself is ``training.fit.fit_into_run``;
multi-phase recipes go to ``training.phases``.
"""
from __future__ import annotations

import contextlib
import os
import pathlib

from common.run_folder import hold_run_folder
from training import phases, run_setup
from training.fit import fit_into_run
from training.parts import RunContext
# The pieces of a run, re-exported: most callers know them as trainer.X.
from training.run_setup import (OPTIMIZERS, TrainConfig, accuracy_metrics, check_parts,  # noqa: F401
                                compile_for_training, default_config, final_metrics, load_splits, make_datasets)


def train(config: run_setup.TrainConfig, run_dir: str | pathlib.Path, *, resume: bool = False,
          extra_callbacks: tuple = (), splits=None, plot_title: str | None = None) -> pathlib.Path:
    """Train ``config`` into ``run_dir``; with ``resume`` continue from its backup (or only finish it).
    ``splits`` (train, val) replaces the data the config names (e.g. a train split with added images).
    The folder's writer lock is held throughout (in a multi-worker job, TF_CONFIG set, each worker's
    fit holds its own folder's)."""
    run_dir = pathlib.Path(run_dir)
    with folder_lock(run_dir):
        if config.recipe.phases:
            return phases.train_phases(config, run_dir, resume=resume, extra_callbacks=extra_callbacks)
        return _train(config, run_dir, resume=resume, extra_callbacks=extra_callbacks, splits=splits,
                      plot_title=plot_title)


def folder_lock(run_dir: pathlib.Path, *, create: bool = True):
    """The run folder's writer lock; in a multi-worker job (TF_CONFIG set) the workers share ``run_dir``,
    so each worker's fit locks only the folder it writes (the chief's, or its own subfolder)."""
    return contextlib.nullcontext() if os.environ.get("TF_CONFIG") else hold_run_folder(run_dir, create=create)


def check_against_model(config: run_setup.TrainConfig, base, parts: dict) -> None:
    """What only the built model can answer, asked before config.json is written: dual BN needs a norm
    layer to split, and a part may check the model (a generator's classes, a monitored layer's name)."""
    from models.routes import has_routes

    if config.model_options.get("norm_layer") == "dual_batch_norm" and not has_routes(base):
        raise ValueError(f"--dual-bn/--advprop: {config.model} has no normalization layer to split into two sets "
                         "of statistics; choose a model with BatchNorm")
    for part in (part for kind in parts.values() for part in kind):
        part.check_model(base)


def _train(config, run_dir: pathlib.Path, *, resume, extra_callbacks, splits, plot_title) -> pathlib.Path:
    recipe = config.recipe
    strategy = run_setup.start(config)
    train_split, val_split = splits or run_setup.load_splits(config)
    assembly = run_setup.assemble(config, train_split, strategy=strategy)
    check_against_model(config, assembly.base, assembly.parts)
    run_dir = run_setup.open_run_dir(config, run_dir, strategy, train_split, resume)
    train_stream, val_data, steps = run_setup.make_datasets(recipe, train_split, val_split, config.seed)
    callbacks = [*run_setup.run_callbacks(config, assembly, RunContext(run_dir, val_split, config.seed)),
                 *run_setup.schedule_callbacks(config, recipe, extra_callbacks, run_dir / "tensorboard")]

    def finish(rows):
        return run_setup.final_metrics(run_dir, val_data, assembly.base.count_params())

    fit_into_run(assembly.model, run_dir, train_stream, epochs=recipe.epochs, steps_per_epoch=steps,
                 validation_data=val_data, checkpoints=run_setup.checkpoints(assembly), callbacks=callbacks,
                 resume=resume,
                 verbose=config.verbose, finish=finish, plot_title=plot_title or f"{config.model} on {config.dataset}")
    return run_dir
