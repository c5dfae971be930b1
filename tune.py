"""Search a zoo model's recipe with Keras Tuner: optimizer and learning rate, or augmentation
policy and adversarial eps.

    python tune.py bravonet_v3 --search optimizer --data ~/tiny-imagenet-200 --trials 20 --epochs 5
    python tune.py alphanet_v4 --search augment --dataset digits --adv fgsm:1 --trials 8
    python tune.py alphanet_v4 --search optimizer --dataset digits --parseval 0.01 --trials 4 --epochs 2
    python train.py bravonet_v3 --data ~/tiny-imagenet-200 --hparams tuning/bravonet_v3-optimizer/best.json

Every train.py flag of a way of training (--adv, --parseval, --smoothness, --dual-bn, --advprop, ...)
trains every trial that way; with an adversary, trials are ranked by PGD-10 accuracy at --eval-eps and
the augment search also tunes the adversary's eps. Each trial's history is in
<search folder>/keras_tuner/trial_<id>/history.csv.

Every trial starts from a clean Keras session seeded with --seed plus its index. The search
folder (default tuning/<model>-<search>) gets trials.md, trials.json and best.json; running the
same command again resumes an interrupted search without repeating finished trials, and
--overwrite starts anew. Distributed: start one process with KERASTUNER_TUNER_ID=chief and any
number with KERASTUNER_TUNER_ID=worker<N>, all with the same KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT and the same flags; the chief writes the table.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from common import cli
from common.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model name from the zoo (python train.py --list)")
    parser.add_argument("--search", default="optimizer", help="optimizer (optimizer, learning rate) "
                        "or augment (policy none/A/B/C, and eps with --adv)")
    source = cli.add_data_arguments(parser)
    source.add_argument("--batch-size", type=cli.positive_int, help="default: the recipe's")
    source.add_argument("--image-size", type=cli.positive_int, metavar="PIXELS",
                        help="resize images (Lanczos) to this size")
    space = parser.add_argument_group("search space")
    space.add_argument("--optimizers", nargs="+", default=["adam", "rmsprop", "adadelta", "sgd"],
                       metavar="NAME", help="optimizer choices (default: %(default)s)")
    space.add_argument("--lr-min", type=cli.positive_float, default=1e-4,
                       help="learning rates are log-uniform in [min, max]")
    space.add_argument("--lr-max", type=cli.positive_float, default=1e-2,
                       help="upper bound of the learning rate (default: 1e-2)")
    space.add_argument("--eval-eps", type=cli.pixel_value, default=8 / 255, help="PGD radius of the robust objective")
    budget = parser.add_argument_group("search")
    budget.add_argument("--tuner", default="random", help="random, bayesian or hyperband")
    budget.add_argument("--trials", type=cli.positive_int, default=20,
                        help="trials in all (hyperband sets its own number)")
    budget.add_argument("--epochs", type=cli.positive_int, default=5,
                        help="epochs per trial (hyperband: the most a trial gets)")
    budget.add_argument("--seed", type=cli.non_negative_int, default=0, help="trial i is seeded with seed + i")
    budget.add_argument("--dir", help="search folder (default: tuning/<model>-<search>)")
    budget.add_argument("--overwrite", action="store_true", help="discard the search in --dir and start anew")
    budget.add_argument("--results-table", metavar="PATH", help="also write the table here (e.g. under results/)")
    budget.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    from training import flags

    flags.add_arguments(parser)
    return parser


# The method flags (--adv, --parseval, ...) apply to every search; these only to one.
SEARCH_FLAGS = {"optimizer": ("optimizers", "lr_min", "lr_max"), "augment": ()}


def refuse_ignored_flags(args, defaults) -> None:
    """A search-space flag of the other search, or an adversarial one without --adv, would do nothing."""
    def flags(names):
        return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) != getattr(defaults, name)]

    for search, names in SEARCH_FLAGS.items():
        given = flags(names)
        if given and args.search != search and args.search in SEARCH_FLAGS:
            raise ValueError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to --search {search}, "
                             f"not --search {args.search}")
    given = flags(("adv_fraction", "eval_eps"))
    if given and not (args.adv or args.advprop or args.noise_snr is not None):
        raise ValueError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with --adv "
                         "(an adversarial search)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_ignored_flags(args, parser.parse_args([args.model]))
    from training import flags, tuning
    from common.run_folder import write_text

    if args.search == "augment" and args.eps is not None and (args.adv or args.advprop):
        raise ValueError("--eps is what the augment search tunes with an adversary: leave it out")
    options = flags.builder_options(args)
    settings = tuning.SearchSettings(
        model=args.model, search=args.search, dataset=cli.dataset_of(args),
        data=args.data, classes=args.classes, per_class=args.per_class, batch_size=args.batch_size,
        image_size=args.image_size, optimizers=tuple(args.optimizers), lr_min=args.lr_min, lr_max=args.lr_max,
        adv=args.adv, adv_fraction=args.adv_fraction, adversarial=flags.adversarial_options(args),
        parts=tuple(flags.part_specs(args, adversarial=False)), model_options=options, eval_eps=args.eval_eps,
        trials=args.trials, epochs=args.epochs, tuner=args.tuner, seed=args.seed)
    outcome = tuning.run_search(settings, args.dir, overwrite=args.overwrite, verbose=2 if args.quiet else 1,
                                command=shlex.join(["python", "tune.py", *argv]))
    if outcome.markdown is None:
        print(f"worker done: ran {outcome.trials_run} trials; the chief writes the table")
        return 0
    print()
    print(outcome.markdown)
    finished = sum(row["status"] == "COMPLETED" for row in outcome.rows)
    print(f"{finished} trials finished, {outcome.trials_run} of them in this call")
    if args.results_table:
        write_text(args.results_table, outcome.markdown)
        print(f"table: {args.results_table}")
    print(f"search folder: {outcome.directory} (trials.md, trials.json, best.json)")
    if outcome.best is not None:
        print(f"best: {json.dumps(outcome.best)}; train with it: python train.py {args.model} "
              f"--hparams {outcome.directory / 'best.json'} and the same data and method flags")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
