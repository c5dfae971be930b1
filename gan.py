"""Train the CS182 DCGAN or a class-conditional GAN on 64x64 images, and score what it generates.

    python gan.py cgan --data ../shared/data/tiny-imagenet-200 --classes 10 --epochs 5 --classifier runs/tiny10
    python gan.py dcgan --dataset digits --epochs 3 --generator-width 16 --discriminator-width 16
    python gan.py --resume runs/cgan-20261125-171500
    python gan.py score runs/cgan-20261125-171500 --classifier runs/tiny10 --gan-train alphanet_v4

Training writes config.json, generator.keras, discriminator.keras, history.csv (d_loss, g_loss,
d_real = mean D(x), d_fake = mean D(G(z)); fid, kid and gan_test per epoch with --classifier),
samples-epochNNN.png per epoch (fixed noise; one row per class for cgan), samples.png and curves.png.
`score` prints FID/KID/GAN-test (and GAN-train with --gan-train) as JSON, or writes it with --out.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys

from common.cli import (add_data_arguments, dataset_of, fraction, non_negative_int, positive_float, positive_int,
                        run_cli)

TRAIN_FLAGS = ("epochs", "batch_size", "latent_dim", "generator_width", "discriminator_width", "dense_units",
               "learning_rate", "beta_1", "label_smoothing", "instance_noise", "spectral_norm",
               "discriminator_steps", "generator_steps", "grid_rows", "grid_columns", "seed", "classifier",
               "score_samples", "score_every")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=("dcgan", "cgan", "score"),
                        help="dcgan (unconditional), cgan (class-conditional, projection discriminator) or score")
    parser.add_argument("target", nargs="?", metavar="GAN_RUN", help="with score: the GAN run folder to score")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted GAN run from its last epoch")
    add_data_arguments(parser)
    model = parser.add_argument_group("networks (defaults: the report's DCGAN read as in models/gan.py)")
    model.add_argument("--latent-dim", type=positive_int, default=100, help="noise size (default: 100)")
    model.add_argument("--generator-width", type=positive_int, default=64,
                       help="w: the generator's transposed convolutions have 4w, 2w, w, w/2 channels (default: 64)")
    model.add_argument("--discriminator-width", type=positive_int, default=64,
                       help="w: the discriminator's convolutions have w, 2w, 4w, 8w channels (default: 64)")
    model.add_argument("--dense-units", type=positive_int, default=1024,
                       help="the discriminator's hidden dense layer (default: 1024)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=5, help="epochs (default: 5)")
    train.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default: 64)")
    train.add_argument("--learning-rate", type=positive_float, default=2e-4, help="Adam's, both nets (default: 2e-4)")
    train.add_argument("--beta-1", type=fraction(low_open=False), default=0.5, help="Adam's beta_1 (default: 0.5)")
    aids = parser.add_argument_group("stability aids (all off by default: the report's plain DCGAN)")
    aids.add_argument("--label-smoothing", type=fraction(low_open=False), default=0.0,
                      help="one-sided: real targets become 1 - s (default: 0; 0.1 is common)")
    aids.add_argument("--instance-noise", type=non_negative_float, default=0.0,
                      help="std of Gaussian noise on every image the discriminator sees (default: 0)")
    aids.add_argument("--spectral-norm", action="store_true", help="spectral normalisation on the discriminator")
    aids.add_argument("--discriminator-steps", type=positive_int, default=1,
                      help="discriminator updates per batch (default: 1)")
    aids.add_argument("--generator-steps", type=positive_int, default=1,
                      help="generator updates per batch (default: 1)")
    scores = parser.add_argument_group("scores")
    scores.add_argument("--classifier", metavar="RUN_DIR",
                        help="a classifier run (train.py) whose penultimate features FID/KID use; training logs "
                             "them per epoch (default: none, no per-epoch scores); required by score")
    scores.add_argument("--score-samples", type=positive_int, default=500,
                        help="generated and real val images per FID/KID (default: 500)")
    scores.add_argument("--score-every", type=positive_int, default=1,
                        help="epochs between FID/KID scores (default: 1)")
    scores.add_argument("--gan-train", metavar="MODEL", help="score: also train MODEL on generated images (cgan)")
    scores.add_argument("--gan-train-epochs", type=positive_int, default=3, help="score: epochs of --gan-train")
    scores.add_argument("--out", metavar="JSON", help="score: write the scores here instead of printing them")
    run = parser.add_argument_group("run")
    run.add_argument("--grid-rows", type=positive_int, default=8, help="sample grid rows (cgan: classes 0..rows-1)")
    run.add_argument("--grid-columns", type=positive_int, default=8, help="sample grid columns (default: 8)")
    run.add_argument("--seed", type=non_negative_int, default=0, help="seeds weights, noise and shuffling (default: 0)")
    run.add_argument("--run-dir", help="default: runs/<dcgan|cgan>-<timestamp>")
    run.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    return parser


def non_negative_float(text: str) -> float:
    from common.checks import finite_real, parse_float

    value = finite_real("value", parse_float(text))
    if value < 0:
        raise argparse.ArgumentTypeError(f"`value` must be >= 0. Received: value={value}")
    return value


def make_scorer(config):
    """FID/KID/GAN-test after every epoch against the run's own val images, or None without --classifier."""
    if not config.classifier:
        return None
    from analysis.gan_metrics import FeatureScorer
    from loading.run_loader import load_run, load_split

    classifier = load_run(config.classifier).model
    val = load_split(config.to_dict(), "val", image_size=(64, 64))
    return FeatureScorer(classifier, val.images.astype("float32") / 255.0, samples=min(config.score_samples, len(val)),
                         seed=config.seed, num_classes=val.num_classes)


def score(args) -> int:
    from analysis.gan_metrics import score_gan_run
    from common.run_folder import write_json

    if not args.target or not args.classifier:
        raise ValueError("score needs a GAN run folder and --classifier RUN_DIR")
    result = score_gan_run(args.target, args.classifier, samples=args.score_samples, gan_train_model=args.gan_train,
                           gan_train_epochs=args.gan_train_epochs, seed=args.seed, data_path=args.data)
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
    from training.gan_run import GANConfig, load_config, train_gan

    if args.resume:
        run_dir = pathlib.Path(args.resume)
        if (run_dir / "metrics.json").exists():
            raise ValueError(f"{run_dir} is a finished run: nothing to resume")
        config = load_config(run_dir)
    elif args.command is None:
        raise ValueError("name what to train (dcgan or cgan), or pass --resume RUN_DIR")
    else:
        if args.command == "dcgan" and args.gan_train:
            raise ValueError("--gan-train needs class labels: it applies to cgan runs, through score")
        if args.classifier and not pathlib.Path(args.classifier).is_dir():
            raise FileNotFoundError(f"--classifier {args.classifier} is not a run folder")
        config = GANConfig(kind=args.command, dataset=dataset_of(args), data=args.data, classes=args.classes,
                           per_class=args.per_class, verbose=2 if args.quiet else "auto",
                           command=shlex.join(["python", "gan.py", *argv]),
                           **{name: getattr(args, name) for name in TRAIN_FLAGS})
        for name in ("generator_width", "discriminator_width"):
            if getattr(config, name) % 2:
                raise ValueError(f"--{name.replace('_', '-')} must be even. Received: {getattr(config, name)}")
        run_dir = new_run_dir(config.kind, args.run_dir)
    rows = train_gan(config, run_dir, resume=bool(args.resume), score=make_scorer(config))
    last = rows[-1] if rows else {}
    print(f"{len(rows)} epochs; last: d_loss {last.get('d_loss', float('nan')):.3f}  "
          f"g_loss {last.get('g_loss', float('nan')):.3f}"
          + (f"  FID {last['fid']:.2f}  KID {last['kid']:.4f}" if "fid" in last else ""))
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
