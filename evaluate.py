"""Accuracy of a trained model under attack, with sanity checks on every table.

    python evaluate.py runs/alphanet_v4-20261123-101500 --attack fgsm pgd snr noise --limit 1000
    python evaluate.py model.keras --dataset digits --eps 1/255 4/255 --pgd-steps 10
    python evaluate.py runs/alphanet_v4-20261123-101500 --attack pgd autoattack --eps 8/255

For a run folder the data flags default to the run's own; results go into its metrics.json
(key "robustness") and robustness.md / robustness.json beside it; `--results PATH.json` names another file
(evaluations side by side on one model each name their own). `--attack` takes any attack of
the attack registry (``attacks.registry``; a plugin's too, see ``common.plugins``). `--attack autoattack` runs
APGD-CE, APGD-T and Square (the standard AutoAttack), each on the images still robust, and adds the
per-image worst case, each attack's ledger and its RobustBench-style record to both. Its progress is kept
beside them (<stem>-autoattack-<eps>.partial.npz) until they are written: the same command run again after a
crash goes on from there.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from common import cli
from common.cli import add_data_arguments, non_negative_int, pixel_value, positive_int, run_cli


def json_path(value: str) -> pathlib.Path:
    if not value.endswith(".json"):
        raise argparse.ArgumentTypeError(f"must name a .json file. Received: {value!r}")
    return pathlib.Path(value)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="RUN_DIR|MODEL_FILE", help="a run folder or a .keras file")
    add_data_arguments(parser, defaults_from="the run's")
    parser.add_argument("--attack", nargs="+", default=["fgsm", "pgd"], metavar="NAME",
                        help="attacks from the attack registry, each per eps (fgsm, pgd, fast, apgd-ce, apgd-dlr, "
                             "apgd-t, square) or per dB (snr: FGSM at an SNR, noise: Gaussian), plugins' too "
                             "(ZOO_PLUGINS); autoattack: the composition, per eps (default: fgsm pgd)")
    parser.add_argument("--eps", nargs="+", type=pixel_value, default=[1 / 255, 2 / 255, 4 / 255, 8 / 255],
                        help="L-inf radii in pixel units, at most 1 (default: 1/255 2/255 4/255 8/255)")
    parser.add_argument("--snr", nargs="+", type=float, default=[50, 45, 40, 33], help="SNRs in dB")
    parser.add_argument("--pgd-steps", type=positive_int, default=20, help="PGD iterations (default: 20)")
    parser.add_argument("--restarts", type=positive_int, default=1,
                        help="PGD random restarts; each image keeps its worst (default: 1)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="evaluate a fixed random subset of N val images")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per attacked batch (default: 128)")
    autoattack = parser.add_argument_group("autoattack")
    autoattack.add_argument("--version", choices=("standard", "rand", "custom"), default="standard",
                            help="standard: APGD-CE, APGD-T, Square; rand: APGD-CE and APGD-DLR with EOT over 20 "
                                 "samples (randomised models); custom: --components (default: standard)")
    autoattack.add_argument("--components", nargs="+", choices=("apgd-ce", "apgd-dlr", "apgd-t", "square"),
                            help="the attacks of --version custom, in order")
    autoattack.add_argument("--autoattack-eps", nargs="+", type=pixel_value, metavar="EPS",
                            help="run AutoAttack only at these radii (default: every --eps)")
    autoattack.add_argument("--apgd-steps", type=positive_int, default=100, help="APGD iterations (default: 100)")
    autoattack.add_argument("--targets", type=positive_int, default=9,
                            help="APGD-T target classes (default: 9, at most classes - 1)")
    autoattack.add_argument("--square-queries", type=positive_int, default=5000,
                            help="Square queries per image (default: 5000)")
    autoattack.add_argument("--standalone", action="store_true",
                            help="run every attack on every clean-correct image, so each column is its own accuracy")
    autoattack.add_argument("--seed", type=non_negative_int, default=0, help="the attacks' seed (default: 0)")
    parser.add_argument("--out", type=pathlib.Path, help="also write the Markdown table here (e.g. results/x.md)")
    parser.add_argument("--results", type=json_path, metavar="PATH.json",
                        help="write the results to PATH.json and PATH.md (default: robustness.json in the run, or "
                             "MODEL-robustness.json beside a model file); the run's metrics.json is then left alone, "
                             "and AutoAttack checkpoints are named after PATH, so passes side by side never share one")
    return parser


AUTOATTACK_FLAGS = ("version", "components", "autoattack_eps", "apgd_steps", "targets", "square_queries",
                    "standalone", "seed")
# Classes each AutoAttack component needs: the DLR loss reads the 3 largest logits, targeted DLR the 4 largest.
CLASSES_NEEDED = {"apgd-ce": 2, "apgd-dlr": 3, "apgd-t": 4, "square": 2}


def check_flags(args, defaults) -> None:
    """Flags that would be ignored or contradict each other, refused before anything is loaded."""
    if args.version == "custom" and not args.components:
        raise ValueError("--version custom needs --components, e.g. --components apgd-ce square")
    if args.components and args.version != "custom":
        raise ValueError(f"--components are only for --version custom. Received: --version {args.version}")
    from attacks.registry import get_attack

    for name in args.attack:  # an unknown name fails before the model and data are read
        if name != "autoattack":
            get_attack(name)
    if "autoattack" not in args.attack:
        given = [f"--{name.replace('_', '-')}" for name in AUTOATTACK_FLAGS
                 if getattr(args, name) != getattr(defaults, name)]
        if given:
            raise ValueError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to --attack "
                             "autoattack, which is not asked for")


def check_autoattack(args, num_classes: int) -> None:
    """AutoAttack's components against the classes the model predicts, before any data is read."""
    if "autoattack" not in args.attack:
        return
    from analysis.autoattack import VERSIONS

    components = args.components or VERSIONS[args.version]
    short = [name for name in components if CLASSES_NEEDED[name] > num_classes]
    if short:
        raise ValueError(f"{', '.join(short)} need at least {max(CLASSES_NEEDED[name] for name in short)} classes "
                         f"and the model predicts {num_classes}: use --version custom --components apgd-ce square")
    if "apgd-t" in components and args.targets > num_classes - 1:
        raise ValueError(f"--targets {args.targets} is more than the {num_classes - 1} classes besides the true "
                         "one; pass --targets at most that")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    check_flags(args, parser.parse_args([args.target]))
    target = pathlib.Path(args.target)
    if target.is_dir():
        from common.run_folder import hold_run_folder

        with hold_run_folder(target):  # it writes the run's metrics.json: one writer at a time
            return evaluate(args, argv, target)
    return evaluate(args, argv, target)


def evaluate(args, argv, target: pathlib.Path) -> int:
    import shlex

    import numpy as np

    from analysis import robustness
    from analysis.autoattack import remove_checkpoints
    from common.cli import dataset_of
    from common.run_folder import check_writable, read_json, write_json, write_text
    from loading.run_loader import load_run, load_split

    # Results, and the AutoAttack checkpoints a killed evaluation goes on from, are named after this stem.
    if args.results is not None:
        out_dir, stem = args.results.parent, args.results.stem
    else:
        out_dir = target if target.is_dir() else target.parent
        stem = "robustness" if target.is_dir() else f"{target.stem}-robustness"
    for folder in (out_dir, *((args.out.parent,) if args.out else ())):
        check_writable(folder)  # a read-only folder is refused now, not after every attack has run
    run = load_run(target)
    model, model_path = run.model, run.model_path
    check_autoattack(args, int(model.output_shape[-1]))

    height, width = model.input_shape[1:3]
    dataset = dataset_of(args, fallback=run.config.get("dataset", "tiny-imagenet"))
    val = load_split(run.config, "val", image_size=(height, width), dataset=dataset, data_path=args.data,
                     classes=args.classes)
    images, labels = val.images, val.labels
    if args.limit and args.limit < len(images):
        chosen = np.sort(np.random.default_rng(0).permutation(len(images))[:args.limit])
        images, labels = images[chosen], labels[chosen]
    images = images.astype("float32") / 255.0

    result = robustness.evaluate_attacks(
        model, images, labels, attack_names=args.attack, eps_values=args.eps, snr_values=args.snr,
        pgd_steps=args.pgd_steps, restarts=args.restarts, batch_size=args.batch_size, num_classes=val.num_classes,
        log=lambda line: print(line, flush=True),
        autoattack_eps=args.autoattack_eps,
        autoattack_options=dict(version=args.version, components=args.components, steps=args.apgd_steps,
                                targets=args.targets, queries=args.square_queries, standalone=args.standalone,
                                seed=args.seed),
        autoattack_checkpoints=out_dir / stem)
    result.update(model=str(model_path), dataset=dataset, threat_model="Linf",
                  command=shlex.join(["python", "evaluate.py", *argv]))
    table = robustness.markdown_table(result, title=f"{model_path.parent.name if target.is_dir() else target.name}"
                                                    f" on {dataset} val")
    print(table)

    write_json(out_dir / f"{stem}.json", result)
    for path in filter(None, (out_dir / f"{stem}.md", args.out)):
        write_text(path, table)
    if target.is_dir() and args.results is None and (target / "metrics.json").exists():
        write_json(target / "metrics.json", {**read_json(target / "metrics.json"), "robustness": result})
    remove_checkpoints(out_dir / stem, result.get("autoattack", {}))  # the radii it ran: their results are written
    print(f"wrote {out_dir / (stem + '.md')}")
    return 0 if result["trustworthy"] else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
