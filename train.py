"""Train a model from the zoo with the recipe that made it.

    python train.py alphanet_v4 --dataset digits --epochs 3
    python train.py alphanet_v4 --data ~/tiny-imagenet-200 --classes 10 --epochs 5
    python train.py resnet18_maxpool --dataset digits --adv fgsm:1 --eps 2/255 --parseval 0.01
    python train.py --resume runs/alphanet_v4-20261123-101500

Every recipe field can be overridden by a flag; the run folder gets config.json,
model.keras (best by val accuracy), history.csv, metrics.json and curves.png.
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

from common import cli
from common.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a model name from the zoo (see --list)")
    parser.add_argument("--list", action="store_true", help="list the models and their recipes, then exit")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last finished epoch")
    cli.add_data_arguments(parser)
    recipe = parser.add_argument_group("recipe (defaults come from the model's recipe)")
    recipe.add_argument("--hparams", metavar="JSON", help="a JSON file of recipe fields, e.g. tune.py's best.json")
    recipe.add_argument("--augment", metavar="POLICY", help="augmentation policy: none, A, B, C")
    recipe.add_argument("--image-size", type=cli.positive_int, metavar="PIXELS",
                        help="resize images (Lanczos) to this size")
    recipe.add_argument("--optimizer", help="adam, adamw, rmsprop, adadelta, sgd, nadam")
    recipe.add_argument("--learning-rate", type=cli.positive_float, help="initial learning rate")
    recipe.add_argument("--batch-size", type=cli.positive_int, help="global batch size")
    recipe.add_argument("--epochs", type=cli.positive_int, help="maximum epochs (early stopping may end sooner)")
    recipe.add_argument("--early-stopping-patience", type=cli.non_negative_int, help="0 turns early stopping off")
    recipe.add_argument("--reduce-lr-factor", type=cli.fraction(), help="ReduceLROnPlateau factor; 1 turns it off")
    recipe.add_argument("--reduce-lr-patience", type=cli.non_negative_int,
                        help="epochs without improvement before the reduction")
    recipe.add_argument("--phases", metavar="SPEC", help='phases of a multi-phase recipe to run, e.g. "2-4" or "1,5" '
                        "(default: all); --epochs caps each phase")
    transfer = parser.add_argument_group("transfer models (resnet101_transfer, inception_v3_transfer, vgg19_transfer, "
                                         "convengers)")
    transfer.add_argument("--weights", choices=("imagenet", "none"),
                          help="backbone weights: imagenet (downloaded into ~/.keras/models) or none (random, offline)")
    transfer.add_argument("--backbone-size", type=cli.positive_int, metavar="PIXELS",
                          help="the size images are resized to inside the model (224, Inception 299; at least 75)")
    from training import flags

    flags.add_arguments(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=cli.non_negative_int, default=0,
                     help="seeds weights, shuffling and augmentation (default: 0)")
    run.add_argument("--run-dir", help="default: runs/<model>-<timestamp>")
    run.add_argument("--mixed-precision", action="store_true", help="mixed_float16 compute")
    run.add_argument("--jit-compile", action="store_true", help="XLA (measure first: often slower on CPU)")
    run.add_argument("--strategy", default="default", choices=("default", "mirrored", "multi-worker"),
                     help="tf.distribute strategy; multi-worker reads TF_CONFIG (default: default)")
    run.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs into the run folder")
    run.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    return parser


RECIPE_FLAGS = ("augment", "image_size", "optimizer", "learning_rate", "batch_size", "epochs",
                "early_stopping_patience", "reduce_lr_factor", "reduce_lr_patience")


def read_hparams(args) -> dict:
    """The --hparams file's recipe fields; its adversarial fields (tune.py writes "adv" and "eps") move onto
    ``args`` unless the flag was given."""
    from common.checks import pixel_value
    from common.run_folder import read_json
    from training.flags import ADVERSARIAL_FLAGS

    if not args.hparams:
        return {}
    path = pathlib.Path(args.hparams)
    hparams = read_json(path)
    defaults = build_parser()
    for name in ADVERSARIAL_FLAGS:
        if name not in hparams:
            continue
        value = hparams.pop(name)
        if name in ("eps", "pgd_step_size") and value is not None:
            try:
                value = pixel_value(value)  # "2/255" as well as 0.0078
            except ValueError as error:
                raise ValueError(f"--hparams file {path}: {name}: {error}") from None
        if getattr(args, name) == defaults.get_default(name):
            setattr(args, name, value)
    return hparams


def config_from_args(args, argv):
    from common.run_config import check_image_size, check_train_config
    from models.registry import check_options
    from training import flags, recipes, trainer
    from training.flag_rules import refuse_ignored_flags

    if not args.model:
        raise ValueError("name a model to train (python train.py --list shows them) or pass --resume RUN_DIR")
    refuse_ignored_flags(args, build_parser().parse_args([]))
    if args.image_size is not None:
        check_image_size("--image-size", args.image_size, dataset=cli.dataset_of(args), classes=args.classes)
    changes = read_hparams(args)
    # Only flags given on the command line override the file (a flag left out is None).
    changes.update({name: getattr(args, name) for name in RECIPE_FLAGS
                    if name != "image_size" and getattr(args, name) is not None})
    if args.augment is not None:
        from augment import get_policy

        get_policy(args.augment)  # an unknown policy fails before any data is read
    options = {name: value for name, value in (("weights", args.weights), ("backbone_size", args.backbone_size))
               if value is not None}
    options.update(flags.builder_options(args))
    check_options(args.model, options)  # an option the model does not take fails before any data is read
    config = trainer.default_config(
        args.model, dataset=cli.dataset_of(args), data=args.data, classes=args.classes,
        per_class=args.per_class, image_size=args.image_size, seed=args.seed, mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile, strategy=args.strategy, tensorboard=args.tensorboard,
        parts=flags.part_specs(args), model_options=options, verbose=2 if args.quiet else "auto",
        command=shlex.join(["python", "train.py", *argv]))
    try:
        config.recipe = recipes.override(config.recipe, **changes)
    except ValueError as error:
        raise ValueError(f"{'--hparams ' + args.hparams + ': ' if args.hparams else ''}{error}") from None
    from training.phases import check_phase_spec

    config.phases = check_phase_spec(config.recipe, args.phases)  # a bad spec fails before any data is read
    trainer.check_parts(config)  # a bad mix, eps or part option fails before any data is read
    check_train_config(config.to_dict(), f"--hparams {args.hparams}" if args.hparams else "the command line")
    return config


def ignored_with_resume(args, argv) -> list[str]:
    """The flags given beside --resume: the run's config.json decides them all."""
    defaults = build_parser().parse_args([])
    return sorted({f"--{name.replace('_', '-')}" for name, value in vars(args).items()
                   if name != "resume" and value != getattr(defaults, name)})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from common.run_config import check_train_config
    from common.run_folder import check_writable, new_run_dir, read_json
    from training import trainer

    if args.list:
        import models
        from training.recipes import get_recipe

        for name in models.names():
            recipe = get_recipe(name)
            print(f"{name:24s} augment={recipe.augment:4s} size={recipe.image_size} "
                  f"{recipe.optimizer} lr={recipe.learning_rate:g} batch={recipe.batch_size} epochs={recipe.epochs}")
        return 0
    if args.resume:
        run_dir = pathlib.Path(args.resume)
        ignored = ignored_with_resume(args, argv)
        if ignored:
            print(f"note: {', '.join(ignored)} ignored with --resume: the run's config.json decides", file=sys.stderr)
        with trainer.folder_lock(run_dir, create=False):  # before anything in it is read
            if (run_dir / "metrics.json").exists():
                raise ValueError(f"{run_dir} is a finished run: nothing to resume")
            payload = check_train_config(read_json(run_dir / "config.json"), str(run_dir / "config.json"))
            config = trainer.TrainConfig.from_dict(payload)
            trainer.check_parts(config)  # a tampered part or attack spec is one line, not a TypeError mid-build
            check_writable(run_dir)
            trainer.train(config, run_dir, resume=True)
    else:
        config = config_from_args(args, argv)
        run_dir = new_run_dir(config.model, args.run_dir)
        with trainer.folder_lock(run_dir):
            new_run_dir(config.model, run_dir)  # again under the lock: another command may have just started one
            trainer.train(config, run_dir)
    metrics = read_json(run_dir / "metrics.json")
    for name, scores in sorted(metrics.get("phases", {}).items(), key=lambda item: item[1]["phase"]):
        print(f"phase {scores['phase']} {name:14s} val top-1 {scores['val_top1']:.4f}  top-3 {scores['val_top3']:.4f}  "
              f"top-5 {scores['val_top5']:.4f}  ({scores['epochs']} epochs, {scores['total_seconds']:.0f} s)")
    print(f"val top-1 {metrics['val_top1']:.4f}  top-3 {metrics['val_top3']:.4f}  top-5 {metrics['val_top5']:.4f}  "
          f"({metrics['seconds_per_epoch']:.1f} s/epoch)")
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
