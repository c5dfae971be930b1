"""Accuracy of a trained model under attack, with sanity checks on every table.

    python evaluate.py runs/alphanet_v4-20261123-101500 --attack fgsm pgd snr noise --limit 1000
    python evaluate.py model.keras --dataset digits --eps 1/255 4/255 --pgd-steps 10

For a run folder the data flags default to the run's own; results go into its metrics.json
(key "robustness") and robustness.md / robustness.json beside it.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from common.cli import pixel_value, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="RUN_DIR|MODEL_FILE", help="a run folder or a .keras file")
    parser.add_argument("--data", metavar="PATH", help="Tiny ImageNet folder, zip, or folder of zip parts")
    parser.add_argument("--dataset", choices=("tiny-imagenet", "cifar10", "cifar100", "svhn", "digits"),
                        help="a named dataset (default: the run's)")
    parser.add_argument("--classes", type=int, metavar="N", help="keep the first N classes (default: the run's)")
    parser.add_argument("--attack", nargs="+", default=["fgsm", "pgd"], choices=("fgsm", "pgd", "snr", "noise"),
                        help="fgsm/pgd per eps; snr (FGSM at an SNR) and noise (Gaussian) per dB (default: fgsm pgd)")
    parser.add_argument("--eps", nargs="+", type=pixel_value, default=[1 / 255, 2 / 255, 4 / 255, 8 / 255],
                        help="L-inf radii in pixel units (default: 1/255 2/255 4/255 8/255)")
    parser.add_argument("--snr", nargs="+", type=float, default=[50, 45, 40, 33], help="SNRs in dB")
    parser.add_argument("--pgd-steps", type=int, default=20, help="PGD iterations (default: 20)")
    parser.add_argument("--restarts", type=int, default=1, help="PGD random restarts; each image keeps its worst")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate a fixed random subset of N val images")
    parser.add_argument("--batch-size", type=int, default=128, help="images per attacked batch (default: 128)")
    parser.add_argument("--out", type=pathlib.Path, help="also write the Markdown table here (e.g. results/x.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    import shlex

    import keras
    import numpy as np

    import data
    import models  # noqa: F401  (registers the zoo's custom layers for loading)
    from analysis import robustness
    from common.run_folder import read_json, write_json, write_text

    target = pathlib.Path(args.target)
    run_config = read_json(target / "config.json") if target.is_dir() else {}
    model_path = target / "model.keras" if target.is_dir() else target
    if not model_path.is_file() or model_path.suffix != ".keras":
        raise FileNotFoundError(f"{model_path} is not a .keras model file")
    model = keras.models.load_model(model_path, safe_mode=True)

    height, width = model.input_shape[1:3]
    dataset = "tiny-imagenet" if args.data else (args.dataset or run_config.get("dataset", "tiny-imagenet"))
    val = data.load_dataset(dataset, "val", root=args.data or run_config.get("data"),
                            classes=args.classes or run_config.get("classes"), image_size=(height, width))
    images, labels = val.images, val.labels
    if args.limit and args.limit < len(images):
        chosen = np.sort(np.random.default_rng(0).permutation(len(images))[:args.limit])
        images, labels = images[chosen], labels[chosen]
    images = images.astype("float32") / 255.0

    result = robustness.evaluate_attacks(
        model, images, labels, attack_names=args.attack, eps_values=args.eps, snr_values=args.snr,
        pgd_steps=args.pgd_steps, restarts=args.restarts, batch_size=args.batch_size, num_classes=val.num_classes,
        log=lambda line: print(line, flush=True))
    result.update(model=str(model_path), dataset=dataset, threat_model="Linf",
                  command=shlex.join(["python", "evaluate.py", *argv]))
    table = robustness.markdown_table(result, title=f"{model_path.parent.name if target.is_dir() else target.name}"
                                                    f" on {dataset} val")
    print(table)

    stem = "robustness" if target.is_dir() else f"{target.stem}-robustness"
    out_dir = target if target.is_dir() else target.parent
    write_json(out_dir / f"{stem}.json", result)
    for path in filter(None, (out_dir / f"{stem}.md", args.out)):
        write_text(path, table)
    if target.is_dir() and (target / "metrics.json").exists():
        write_json(target / "metrics.json", {**read_json(target / "metrics.json"), "robustness": result})
    print(f"wrote {out_dir / (stem + '.md')}")
    return 0 if result["trustworthy"] else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
