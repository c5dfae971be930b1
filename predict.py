"""Say what is in images: the top classes of each file, with readable names and probabilities.

    python predict.py runs/alphanet_v4-20261123-101500 cat.jpg
    python predict.py runs/alphanet_v4-20261123-101500 photos/ "more/*.png" --top 3 --out predictions.csv
    python predict.py runs/alphanet_v4-20261123-101500 cat.jpg --saliency gradcam
    python predict.py runs/alphanet_v4-20261123-101500/export-tflite-int8 photos/

RUN_DIR is a run folder (single model, ensemble, dual-BN run), a .keras file, or a folder export.py
wrote (checked against its model card first). INPUTs are image files, folders (searched recursively)
or globs; every image Pillow reads as JPEG, PNG, WebP, GIF, BMP, TIFF or PPM is converted and resized
exactly as the training data was. A file that cannot be read is named on stderr and the rest are
still classified; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys

from common.cli import ArgumentParser, positive_int, print_error, run_cli

METHODS = ("vanilla", "smoothgrad", "gradcam", "gradcam++")  # analysis.saliency.METHODS, without importing TF


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="RUN_DIR|MODEL_FILE", help="a run folder, a .keras file or an export folder")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    parser.add_argument("--top", type=positive_int, default=5, metavar="K", help="classes shown per image (default: 5)")
    parser.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                        help="images per batch (default: 64)")
    parser.add_argument("--out", type=pathlib.Path, metavar="FILE",
                        help="also write one row per image to a .csv or .json")
    parser.add_argument("--saliency", choices=METHODS, metavar="METHOD",
                        help=f"write a saliency overlay PNG of the top class per image ({', '.join(METHODS)})")
    parser.add_argument("--saliency-dir", type=pathlib.Path, metavar="DIR",
                        help="where the overlays go (default: saliency/ beside --out, else ./saliency)")
    parser.add_argument("--data", metavar="PATH",
                        help="the dataset copy whose class names to show (default: the run's)")
    parser.add_argument("--dataset", choices=("tiny-imagenet", "cifar10", "cifar100", "svhn", "digits"),
                        help="the dataset a bare .keras file was trained on (default: the run's)")
    return parser



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from inference import classify, inputs

    if args.out:
        classify.check_out(args.out)
    paths = inputs.expand(args.inputs)
    if not paths:
        raise FileNotFoundError(f"no files in {' '.join(args.inputs)}")
    import keras

    from inference import predictors

    predictor = predictors.load(args.target, dataset=args.dataset, data_path=args.data)
    if args.top > len(predictor.classes):
        raise ValueError(f"--top {args.top} is more than the model's {len(predictor.classes)} classes")
    if args.saliency and not isinstance(predictor, predictors.KerasPredictor):
        raise ValueError(f"--saliency needs the Keras model's gradients: pass the run folder, not the export "
                         f"{args.target}")
    saliency_dir = args.saliency_dir or (args.out.parent / "saliency" if args.out else pathlib.Path("saliency"))
    failures = []

    def failed(path, message):
        failures.append((path, message))
        print_error(message)

    # A bar when there are several files; it goes to stderr so stdout carries the predictions alone.
    progress = keras.utils.Progbar(len(paths), unit_name="image") if len(paths) > 1 or \
        any(pathlib.Path(text).is_dir() for text in args.inputs) else None
    written, shown = set(), [0]

    def each_batch(chosen, images, probabilities, consumed):
        if args.saliency:
            written.update(save_saliency(predictor.model, chosen, images, probabilities.argmax(-1), args.saliency,
                                         saliency_dir, written))
        show(consumed)

    def show(consumed):
        if progress and consumed > shown[0]:
            shown[0] = consumed
            with contextlib.redirect_stdout(sys.stderr):
                progress.update(consumed)

    predictions = classify.classify(predictor, paths, top=args.top, batch_size=args.batch_size, on_error=failed,
                                    on_batch=each_batch)
    show(len(paths))  # unreadable files at the end were never part of a batch
    print(classify.format_text(predictions))
    if args.out:
        classify.write(args.out, predictions, failures, model=str(args.target))
        print(f"wrote {args.out}", file=sys.stderr)
    if args.saliency and written:
        plural = "s" if len(written) > 1 else ""
        print(f"wrote {len(written)} {args.saliency} overlay{plural} to {saliency_dir}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(paths)} files could not be read", file=sys.stderr)
    return 1 if failures else 0


def save_saliency(model, paths, images, labels, method: str, folder: pathlib.Path, taken: set) -> list:
    """One overlay PNG per image, named after the file (``cat-gradcam.png``; ``cat-1-gradcam.png`` if taken)."""
    from analysis.overlay import save_overlay
    from analysis.saliency import saliency_map

    maps = saliency_map(model, images, labels, method=method)
    written = []
    for path, image, saliency in zip(paths, images, maps):
        name, number = f"{path.stem}-{method}.png", 0
        while folder / name in taken or folder / name in written:
            number += 1
            name = f"{path.stem}-{number}-{method}.png"
        written.append(save_overlay(image, saliency, folder / name))
    return written


if __name__ == "__main__":
    sys.exit(run_cli(main))
