"""Train a model from the zoo with the recipe that made it.

    python train.py alphanet_v4 --dataset digits --epochs 3
    python train.py alphanet_v4 --data ~/tiny-imagenet-200 --classes 10 --epochs 5
    python train.py --resume runs/alphanet_v4-20261123-101500

Every recipe field can be overridden by a flag; the run folder gets config.json,
model.keras (best by val accuracy), history.csv, metrics.json and curves.png.
"""
from __future__ import annotations

import argparse
import fractions
import json
import pathlib
import shlex
import sys

from common.cli import pixel_value, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a model name from the zoo (see --list)")
    parser.add_argument("--list", action="store_true", help="list the models and their recipes, then exit")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last finished epoch")
    source = parser.add_argument_group("data")
    source.add_argument("--data", metavar="PATH", help="Tiny ImageNet folder, official zip, or folder of zip parts")
    source.add_argument("--dataset", default="tiny-imagenet",
                        choices=("tiny-imagenet", "cifar10", "cifar100", "svhn", "digits"),
                        help="a named dataset (default: tiny-imagenet; digits works offline)")
    source.add_argument("--classes", type=int, metavar="N", help="keep the first N classes")
    source.add_argument("--per-class", type=int, metavar="K", help="keep the first K training images per class")
    recipe = parser.add_argument_group("recipe (defaults come from the model's recipe)")
    recipe.add_argument("--hparams", metavar="JSON", help="a JSON file of recipe fields, e.g. tune.py's best.json")
    recipe.add_argument("--augment", metavar="POLICY", help="augmentation policy: none, A, B, C")
    recipe.add_argument("--image-size", type=int, metavar="PIXELS", help="resize images (Lanczos) to this size")
    recipe.add_argument("--optimizer", help="adam, adamw, rmsprop, adadelta, sgd, nadam")
    recipe.add_argument("--learning-rate", type=float, help="initial learning rate")
    recipe.add_argument("--batch-size", type=int, help="global batch size")
    recipe.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    recipe.add_argument("--early-stopping-patience", type=int, help="0 turns early stopping off")
    recipe.add_argument("--reduce-lr-factor", type=float, help="ReduceLROnPlateau factor; 1 turns it off")
    recipe.add_argument("--reduce-lr-patience", type=int, help="epochs without improvement before the reduction")
    recipe.add_argument("--phases", metavar="SPEC", help='phases of a multi-phase recipe to run, e.g. "2-4" or "1,5" '
                        "(default: all); --epochs caps each phase")
    transfer = parser.add_argument_group("transfer models (resnet101_transfer, inception_v3_transfer, vgg19_transfer, "
                                         "convengers)")
    transfer.add_argument("--weights", choices=("imagenet", "none"),
                          help="backbone weights: imagenet (downloaded into ~/.keras/models) or none (random, offline)")
    transfer.add_argument("--backbone-size", type=int, metavar="PIXELS",
                          help="the size images are resized to inside the model (224, Inception 299; at least 75)")
    adversarial = parser.add_argument_group("adversarial training")
    adversarial.add_argument("--adv", metavar="MIX", help='attack mix by weight, e.g. "fgsm:10,pgd:1" or "fast:1"')
    adversarial.add_argument("--adv-fraction", type=float, default=0.5, help="share of each batch made adversarial")
    adversarial.add_argument("--eps", type=pixel_value, default=2 / 255, help="L-inf radius in pixels, e.g. 2/255")
    adversarial.add_argument("--pgd-steps", type=int, default=7, help="PGD iterations when training")
    adversarial.add_argument("--pgd-step-size", type=pixel_value, help="default: 2.5 * eps / steps")
    adversarial.add_argument("--logit-pairing", type=float, default=0.0, help="adversarial logit pairing weight")
    adversarial.add_argument("--noise-snr", type=float, metavar="DB", help="Gaussian-noise training at this SNR")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling and augmentation (default: 0)")
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


def adversarial_options(args) -> dict | None:
    if not args.adv and args.noise_snr is None:
        return None
    return {"attacks": args.adv or "noise:1", "fraction": args.adv_fraction, "eps": args.eps,
            "pgd_steps": args.pgd_steps, "pgd_step_size": args.pgd_step_size,
            "logit_pairing": args.logit_pairing, "noise_snr_db": args.noise_snr, "seed": args.seed}


ADVERSARIAL_FLAGS = ("adv", "adv_fraction", "eps", "pgd_steps", "pgd_step_size", "logit_pairing", "noise_snr")


def apply_adversarial_hparams(args, hparams: dict) -> None:
    """Moves an --hparams file's adversarial fields (tune.py writes "adv" and "eps") onto ``args``;
    a flag not left at its default wins over the file, as for recipe fields."""
    parser = build_parser()
    for name in ADVERSARIAL_FLAGS:
        if name not in hparams:
            continue
        value = hparams.pop(name)
        if isinstance(value, str) and name in ("eps", "pgd_step_size"):
            value = float(fractions.Fraction(value))  # "2/255" as well as 0.0078
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)


def model_options(args) -> dict:
    """Builder options from the transfer flags; an option the model does not take fails before any data is read."""
    from models.registry import check_options

    options = {name: value for name, value in (("weights", args.weights), ("backbone_size", args.backbone_size))
               if value is not None}
    check_options(args.model, options)
    return options


def config_from_args(args, argv):
    from training import recipes, trainer

    if not args.model:
        raise ValueError("name a model to train (python train.py --list shows them) or pass --resume RUN_DIR")
    changes = {}
    if args.hparams:
        path = pathlib.Path(args.hparams)
        if not path.is_file():
            raise FileNotFoundError(f"--hparams file {path} does not exist")
        try:
            changes.update(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"--hparams file {path} is not valid JSON: {error}") from None
        apply_adversarial_hparams(args, changes)
    # Only flags given on the command line override the file (a flag left out is None).
    changes.update({name: getattr(args, name) for name in RECIPE_FLAGS
                    if name != "image_size" and getattr(args, name) is not None})
    if args.augment is not None:
        from augment import get_policy

        get_policy(args.augment)  # an unknown policy fails before any data is read
    config = trainer.default_config(
        args.model, dataset="tiny-imagenet" if args.data else args.dataset, data=args.data, classes=args.classes,
        per_class=args.per_class, image_size=args.image_size, seed=args.seed, mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile, strategy=args.strategy, tensorboard=args.tensorboard,
        adversarial=adversarial_options(args), verbose=2 if args.quiet else "auto",
        command=shlex.join(["python", "train.py", *argv]))
    config.recipe = recipes.override(config.recipe, **changes)
    config.model_options = model_options(args)
    from training.phases import check_phase_spec

    config.phases = check_phase_spec(config.recipe, args.phases)  # a bad spec fails before any data is read
    if config.adversarial:
        from training.adversarial import AdversarialConfig

        AdversarialConfig(**config.adversarial)  # a bad mix or eps fails before any data is read
    return config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from training import trainer
    from common.run_folder import new_run_dir, read_json

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
        if (run_dir / "metrics.json").exists():
            raise ValueError(f"{run_dir} is a finished run: nothing to resume")
        config = trainer.TrainConfig.from_dict(read_json(run_dir / "config.json"))
        trainer.train(config, run_dir, resume=True)
    else:
        config = config_from_args(args, argv)
        run_dir = new_run_dir(config.model, args.run_dir)
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
