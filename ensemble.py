"""Ensembles of trained runs, saved as run folders like train.py's.

    python ensemble.py alphastack runs/digits-v4-s1 runs/digits-v4-s2 runs/digits-v4-s3 --epochs 10
    python ensemble.py alphastack runs/alphanet_v3-a runs/alphanet_v4-b --head 1024,512 --data ~/tiny-imagenet-200
    python ensemble.py average runs/resnet101_transfer-a runs/inception_v3_transfer-b runs/vgg19_transfer-c

alphastack: the members are frozen (inference mode), their logits concatenated, and a dense head
(Dense + ReLU per --head width, then Dense to logits) is trained on top (CS182 report's AlphaStack).
average: the mean of the members' softmax probabilities (Convengers' multi-model ensemble); nothing
is trained. The ensemble reads images at the first member's size and resizes them (bilinear) inside
the model for members of another size. The data flags default to the first member's config.json.
metrics.json holds the ensemble's val top-1/3/5 and, under "members", each member's; both are printed.
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

from common import cli
from common.cli import run_cli


def head_widths(text: str) -> tuple[int, ...]:
    """ "512,256" -> (512, 256); "" -> () (a single Dense on the concatenated logits)."""
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--head takes comma-separated widths like 512,256: {text!r}") from None
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"--head widths must be positive: {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    common = cli.ArgumentParser(add_help=False)
    common.add_argument("members", nargs="+", metavar="RUN_DIR", help="run folders of the trained members")
    cli.add_data_arguments(common, defaults_from="the first member's")
    run = common.add_argument_group("run")
    run.add_argument("--batch-size", type=cli.positive_int, default=64, help="batch size (default: 64)")
    run.add_argument("--seed", type=cli.non_negative_int, default=0,
                     help="seeds the head's weights and shuffling (default: 0)")
    run.add_argument("--run-dir", help="default: runs/<kind>-<timestamp>")
    run.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    run.add_argument("--out", type=pathlib.Path, metavar="FILE",
                     help="also write the members-vs-ensemble table and this command here (e.g. results/x.md)")

    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True)
    stack = kinds.add_parser("alphastack", parents=[common], help="train a dense head on the frozen members' logits")
    stack.add_argument("--epochs", type=cli.positive_int, default=32, help="epochs of head training (default: 32)")
    stack.add_argument("--head", type=head_widths, default=(512, 256), metavar="WIDTHS",
                       help="hidden Dense widths, comma-separated (default 512,256)")
    stack.add_argument("--learning-rate", type=cli.positive_float, default=1e-3, help="Adam learning rate")
    kinds.add_parser("average", parents=[common], help="average the members' softmax probabilities (no training)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    for member in args.members:
        if not (pathlib.Path(member) / "model.keras").is_file():
            raise FileNotFoundError(f"{member} is not a trained run folder (no model.keras)")
    from training import ensembles
    from common.run_folder import check_writable, hold_run_folder, new_run_dir, read_json, write_text

    run_dir = new_run_dir(args.kind, args.run_dir)
    if args.out:
        check_writable(args.out.parent)
    members = ensembles.load_members(args.members)
    command = shlex.join(["python", "ensemble.py", *argv])
    options = dict(dataset=args.dataset, data=args.data, classes=args.classes, per_class=args.per_class,
                   batch_size=args.batch_size, seed=args.seed, verbose=2 if args.quiet else "auto", command=command)
    with hold_run_folder(run_dir, create=True):
        new_run_dir(args.kind, run_dir)  # again under the lock: another command may have just started one
        if args.kind == "alphastack":
            ensembles.train_alphastack(members, run_dir, head=args.head, epochs=args.epochs,
                                       learning_rate=args.learning_rate, **options)
        else:
            ensembles.save_average(members, run_dir, **options)
    metrics = read_json(run_dir / "metrics.json")
    print(ensembles.markdown_table(metrics, args.kind))
    if args.out:
        write_text(args.out, ensembles.markdown_report(metrics, args.kind, members, command))
        print(f"wrote {args.out}")
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
