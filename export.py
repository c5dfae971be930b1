"""Export a trained run for serving: a SavedModel (TF Serving) or a TFLite file (phones, edge devices).

    python export.py runs/alphanet_v4-20261123-101500 --format saved_model
    python export.py runs/alphanet_v4-20261123-101500 --format tflite --quantize int8 --out exports/alphanet-int8

The export takes raw uint8 RGB images of the run's size and returns logits and probabilities. Before
it is kept it is checked against the Keras model on validation images (float: every logit within
1e-4 and the same top-1; float16: >= 99.5%, int8: >= 98% top-1 agreement); a failed check exits
with status 1 and writes nothing. Beside the model: labels.txt, model_card.md and model_card.json
(with each file's SHA-256, which predict.py checks before it loads an export).
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

from common.cli import ArgumentParser, run_cli

FORMATS = ("saved_model", "tflite")  # inference.manifest.FORMATS, without importing TensorFlow


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN_DIR", type=pathlib.Path, help="a trained run folder (model.keras and "
                        "config.json; single model, ensemble or dual-BN run)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="saved_model or tflite")
    parser.add_argument("--quantize", choices=("float16", "int8"),
                        help="TFLite only: float16 weights, or int8 calibrated on the run's training images")
    parser.add_argument("--out", type=pathlib.Path, metavar="DIR",
                        help="a new folder for the export (default: RUN_DIR/export-FORMAT[-QUANTIZE])")
    return parser



def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.quantize and args.format != "tflite":
        raise ValueError(f"--quantize {args.quantize} is for --format tflite; a SavedModel keeps float32 weights")
    if not args.run.is_dir():
        raise FileNotFoundError(f"{args.run} is not a run folder")
    from loading.run_loader import load_run
    from inference import export

    out = args.out or export.default_out(args.run, args.format, args.quantize)
    if out.exists():
        raise ValueError(f"{out} already exists: remove it or choose another --out")
    run = load_run(args.run)
    try:
        card = export.export_run(run, args.format, out, quantize=args.quantize,
                                 command=shlex.join(["python", "export.py", *argv]))
    except export.ExportCheckError as error:
        print(f"export check failed: {error}", file=sys.stderr)
        return 1
    agreement = card["agreement"]
    print(f"{args.format}{' ' + args.quantize if args.quantize else ''} export agrees with the Keras model on "
          f"{agreement['images']} validation images: top-1 {agreement['top1_agreement']:.2%}, max |logit difference| "
          f"{agreement['max_logit_difference']:.2e}")
    print(f"wrote {out} (model card: {out / 'model_card.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
