"""Train the CS182 DCGAN or a class-conditional GAN, and score what it generates (docs/gans.md).

    python gan.py cgan --dataset digits                  # offline: 32x32 digits, scored by its own judge
    python gan.py cgan --data ../shared/data/tiny-imagenet-200 --classes 10 --classifier runs/tiny10
    python gan.py --resume runs/cgan-20261125-171500
    python gan.py score runs/cgan-20261125-171500 [--classifier runs/tiny10] [--gan-train alphanet_v4]

Flags left out take the dataset's default (training/gan_run.py). Training writes config.json,
generator.keras, discriminator.keras, history.csv (d_loss, g_loss, d_real = mean D(x), d_fake =
mean D(G(z)), sample_change; fid, kid, gan_test and diversity on scored epochs, with a judge),
samples-epochNNN.png per epoch (fixed noise; one row per class for cgan), samples.png and curves.png,
and warns when diversity or sample_change says the generator collapsed or stopped learning.
`score` prints FID/KID/GAN-test/diversity (and GAN-train with --gan-train) as JSON, or writes it with --out.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys

from common.cli import (ArgumentParser, add_data_arguments, dataset_of, fraction, non_negative_float, non_negative_int,
                        positive_float, positive_int, run_cli)

# Flags that shape training; left out (None), they take the dataset's default (training.gan_run.DEFAULTS).
TRAIN_FLAGS = ("epochs", "batch_size", "latent_dim", "generator_width", "discriminator_width", "dense_units",
               "learning_rate", "beta_1", "label_smoothing", "instance_noise", "spectral_norm",
               "discriminator_steps", "generator_steps", "grid_rows", "grid_columns", "image_size",
               "score_every", "collapse_threshold")
DATA_FLAGS = ("data", "dataset", "classes", "per_class")
SCORE_FLAGS = ("gan_train", "gan_train_epochs", "out")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=("dcgan", "cgan", "score"),
                        help="dcgan (unconditional), cgan (class-conditional, projection discriminator) or score")
    parser.add_argument("target", nargs="?", metavar="GAN_RUN", help="with score: the GAN run folder to score")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted GAN run with its own settings")
    add_data_arguments(parser, defaults_from="tiny-imagenet; with score, the run's")
    model = parser.add_argument_group("networks (defaults: the report's DCGAN read as in models/gan.py; "
                                      "digits: 32x32, widths 16, dense 256)")
    model.add_argument("--image-size", type=int, choices=(16, 32, 64), help="generated image size (default: 64)")
    model.add_argument("--latent-dim", type=positive_int, help="noise size (default: 100)")
    model.add_argument("--generator-width", type=positive_int,
                       help="w: the generator's transposed convolutions have 4w, 2w, w, w/2 channels (default: 64)")
    model.add_argument("--discriminator-width", type=positive_int,
                       help="w: the discriminator's convolutions have w, 2w, 4w, 8w channels (default: 64)")
    model.add_argument("--dense-units", type=positive_int, help="the discriminator's hidden dense layer (default: 1024)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, help="epochs (default: 5; digits: 50)")
    train.add_argument("--batch-size", type=positive_int, help="batch size (default: 64)")
    train.add_argument("--learning-rate", type=positive_float, help="Adam's, both nets (default: 2e-4)")
    train.add_argument("--beta-1", type=fraction(low_open=False), help="Adam's beta_1 (default: 0.5)")
    aids = parser.add_argument_group("stability aids (all off by default: the report's plain DCGAN)")
    aids.add_argument("--label-smoothing", type=fraction(low_open=False),
                      help="one-sided: real targets become 1 - s (default: 0; 0.1 is common)")
    aids.add_argument("--instance-noise", type=non_negative_float,
                      help="std of Gaussian noise on every image the discriminator sees (default: 0)")
    aids.add_argument("--spectral-norm", action="store_true", default=None,
                      help="spectral normalisation on the discriminator")
    aids.add_argument("--discriminator-steps", type=positive_int, help="discriminator updates per batch (default: 1)")
    aids.add_argument("--generator-steps", type=positive_int, help="generator updates per batch (default: 1)")
    scores = parser.add_argument_group("scores")
    scores.add_argument("--classifier", metavar="RUN_DIR",
                        help="a classifier run (train.py) of the same dataset and classes whose features score the "
                             "GAN (FID, KID, GAN-test, diversity) per epoch; digits default: a judge trained into "
                             "the run's judge/; score's default: that judge/")
    scores.add_argument("--score-samples", type=positive_int, help="generated and real val images per score (500)")
    scores.add_argument("--score-every", type=positive_int, help="epochs between scores (default: 1; digits: 2)")
    scores.add_argument("--collapse-threshold", type=fraction(),
                        help="warn when generated diversity falls below this share of the real (default: 0.5)")
    scores.add_argument("--gan-train", metavar="MODEL", help="score: also train MODEL on generated images (cgan)")
    scores.add_argument("--gan-train-epochs", type=positive_int, help="score: epochs of --gan-train (default: 3)")
    scores.add_argument("--out", metavar="JSON", help="score: write the scores here instead of printing them")
    run = parser.add_argument_group("run")
    run.add_argument("--grid-rows", type=positive_int, help="sample grid rows (cgan: classes 0..rows-1; default 8)")
    run.add_argument("--grid-columns", type=positive_int, help="sample grid columns (default: 8)")
    run.add_argument("--seed", type=non_negative_int, help="seeds weights, noise and shuffling (default: 0)")
    run.add_argument("--run-dir", help="default: runs/<dcgan|cgan>-<timestamp>")
    run.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    return parser


def refuse(args, names, context: str) -> None:
    """Refuse the flags among ``names`` that the command line set: in ``context`` they do nothing."""
    flags = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) not in (None, False)]
    if flags:
        raise ValueError(f"{context}: {', '.join(flags)} would be ignored")


def load_judge(config):
    """The named --classifier's run, checked against the GAN's dataset and classes (before anything is
    written), or None."""
    if not config.classifier:
        return None
    from analysis.gan_metrics import check_judge
    from loading.run_loader import load_run

    judge = load_run(config.classifier)
    check_judge(judge, config.to_dict(), f"this {config.kind} run")
    return judge


def make_scorer(config, run_dir, judge):
    """FID/KID/GAN-test/diversity after scored epochs against the run's own val images, or None without
    a judge (--classifier, or the judge/ the run trains for itself: digits' default)."""
    from analysis.gan_metrics import FeatureScorer
    from loading.run_loader import load_run, load_split
    from training.gan_run import train_judge

    if judge is None and config.judge:
        judge = load_run(train_judge(config, run_dir))
    if judge is None:
        return None
    size = config.image_size
    val = load_split(config.to_dict(), "val", image_size=(size, size))
    return FeatureScorer(judge.model, val.images.astype("float32") / 255.0, real_labels=val.labels,
                         samples=min(config.score_samples, len(val)), seed=config.seed, num_classes=val.num_classes)


def score(args) -> int:
    from analysis.gan_metrics import score_gan_run
    from common.run_folder import write_json

    if not args.target:
        raise ValueError("score needs a GAN run folder: python gan.py score RUN_DIR [--classifier RUN_DIR]")
    refuse(args, (*TRAIN_FLAGS, "resume", "run_dir", "quiet", "classes", "per_class", "dataset"),
           "score measures a finished run")
    result = score_gan_run(args.target, args.classifier, samples=args.score_samples or 500,
                           gan_train_model=args.gan_train, gan_train_epochs=args.gan_train_epochs or 3,
                           seed=args.seed or 0, data_path=args.data)
    result["command"] = shlex.join(["python", "gan.py", *sys.argv[1:]])
    if args.out:
        write_json(pathlib.Path(args.out), result)
        print(f"scores: {args.out}")
    else:
        print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "score":
        return score(args)
    from common.run_folder import new_run_dir
    from training.gan_run import GANConfig, load_config, load_data, train_gan, write_config

    refuse(args, SCORE_FLAGS, f"{args.command or 'training'} trains; --gan-train and --out belong to score")
    if args.resume:
        if args.command or args.target:
            raise ValueError("--resume continues a run as it was: leave out dcgan/cgan")
        refuse(args, (*TRAIN_FLAGS, *DATA_FLAGS, "classifier", "score_samples", "seed", "run_dir"),
               f"--resume {args.resume} continues with the settings in its config.json")
        run_dir = pathlib.Path(args.resume)
        if (run_dir / "metrics.json").exists():
            raise ValueError(f"{run_dir} is a finished run: nothing to resume")
        config = load_config(run_dir)
        config.verbose = 2 if args.quiet else config.verbose
    elif args.command is None:
        raise ValueError("name what to train (dcgan or cgan), or pass --resume RUN_DIR")
    else:
        if args.target:
            raise ValueError(f"unexpected argument {args.target!r}: a run folder goes after --run-dir")
        if args.classifier and not pathlib.Path(args.classifier).is_dir():
            raise FileNotFoundError(f"--classifier {args.classifier} is not a run folder")
        config = GANConfig(kind=args.command, dataset=dataset_of(args), data=args.data, classes=args.classes,
                           per_class=args.per_class, verbose=2 if args.quiet else "auto", classifier=args.classifier,
                           score_samples=args.score_samples, seed=args.seed,
                           command=shlex.join(["python", "gan.py", *argv]),
                           **{name: getattr(args, name) for name in TRAIN_FLAGS}).resolved()
        run_dir = new_run_dir(config.kind, args.run_dir)
    # Every check (data, judge) before the first write; the judge trains after config.json, so a kill
    # during it leaves a run that --resume finishes.
    split, judge = load_data(config, run_dir), load_judge(config)
    if not args.resume:
        write_config(config, run_dir)
    rows = train_gan(config, run_dir, resume=bool(args.resume), score=make_scorer(config, run_dir, judge), split=split)
    last = rows[-1] if rows else {}
    scored = "".join(f"  {name} {last[name]:.3g}" for name in ("fid", "gan_test", "diversity") if name in last)
    print(f"{len(rows)} epochs; last: d_loss {last.get('d_loss', float('nan')):.3f}  "
          f"g_loss {last.get('g_loss', float('nan')):.3f}{scored}")
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
