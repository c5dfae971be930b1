"""Serving speed of one run four ways: Keras `predict`, the SavedModel, TFLite float32 and TFLite int8.

    python benchmarks/inference.py [--run runs/predict-demo-v2] [--images 256] [--repeats 3]

The same validation images (uint8, the run's size) go through each form at batch 1 (one call per
image, as a client classifying photos one by one) and batch 64. Each form is warmed up first; each
repeat times every form in turn, so load from other processes hits them alike, and the median repeat
is kept. Prints images/s and median latency per call, and each form's top-1 agreement with Keras on
those images; writes results/benchmarks/inference.json with `ratios.<form>_over_keras_batch<N>`
(images/s). The exports are made with export.py's code into RUN/export-* when missing, and reused
(after their digest check) when present. TFLite runs with as many threads as there are CPU cores.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common.cli import positive_int, run_cli  # noqa: E402
from common.run_folder import write_json  # noqa: E402
from loading.run_loader import load_run, load_split  # noqa: E402
from inference import export, manifest, predictors  # noqa: E402

OUTPUT = REPO / "results" / "benchmarks" / "inference.json"
FORMS = {"keras_predict": None, "saved_model": ("saved_model", None), "tflite_float32": ("tflite", None),
         "tflite_int8": ("tflite", "int8")}
BATCH_SIZES = (1, 64)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=pathlib.Path, default=pathlib.Path("runs/predict-demo-v2"),
                        help="a trained run folder (default: runs/predict-demo-v2, see results/export/README.md)")
    parser.add_argument("--images", type=positive_int, default=256, help="validation images timed (default: 256)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed passes per form (default: 3)")
    parser.add_argument("--out", type=pathlib.Path, default=OUTPUT,
                        help="JSON output (default: results/benchmarks/inference.json)")
    return parser


def exported(run, fmt: str, quantize):
    out = export.default_out(run.folder, fmt, quantize)
    if not out.exists():
        export.export_run(run, fmt, out, quantize=quantize,
                          command=f"python benchmarks/inference.py (export {fmt} {quantize or ''})")
    return predictors.load_export(out, num_threads=os.cpu_count())


def time_pass(function, images: np.ndarray, batch_size: int) -> tuple[float, list]:
    """Seconds for one pass over ``images`` in batches, and each call's latency."""
    latencies = []
    start = time.perf_counter()
    for offset in range(0, len(images), batch_size):
        begin = time.perf_counter()
        function(images[offset:offset + batch_size])
        latencies.append(time.perf_counter() - begin)
    return time.perf_counter() - start, latencies


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    run = load_run(args.run)
    size = tuple(run.model.input_shape[1:3])
    images = load_split(run.config, "val", image_size=size).images[:args.images]
    keras_form = predictors.KerasPredictor(run.model, None, args.run)
    functions = {"keras_predict": lambda batch: run.model.predict(batch.astype(np.float32) / 255.0,
                                                                  batch_size=len(batch), verbose=0)}
    forms = {"keras_predict": keras_form}
    for name, spec in FORMS.items():
        if spec:
            forms[name] = exported(run, *spec)
            functions[name] = forms[name].outputs
    reference = keras_form.logits(images).argmax(-1)
    agreement = {name: float(np.mean(np.concatenate([form.outputs(images[i:i + 64])["logits"]
                                                     for i in range(0, len(images), 64)]).argmax(-1) == reference))
                 for name, form in forms.items() if name != "keras_predict"}
    results = {}
    load_before = os.getloadavg()
    for batch_size in BATCH_SIZES:
        for function in functions.values():
            time_pass(function, images[:2 * batch_size], batch_size)  # warm-up: tracing, allocation
        passes = {name: [] for name in functions}
        for _ in range(args.repeats):
            for name, function in functions.items():
                passes[name].append(time_pass(function, images, batch_size))
        for name, timed in passes.items():
            seconds, latencies = sorted(timed, key=lambda entry: entry[0])[len(timed) // 2]
            results.setdefault(name, {})[f"batch{batch_size}"] = {
                "images_per_second": len(images) / seconds,
                "median_latency_ms": 1000 * statistics.median(latencies),
                "p90_latency_ms": 1000 * float(np.percentile(latencies, 90))}
    ratios = {f"{name}_over_keras_batch{batch}": results[name][f"batch{batch}"]["images_per_second"]
              / results["keras_predict"][f"batch{batch}"]["images_per_second"]
              for name in functions if name != "keras_predict" for batch in BATCH_SIZES}
    sizes = {name: sum(entry["bytes"] for entry in manifest.verify(form.source)["files"].values())
             for name, form in forms.items() if name != "keras_predict"}
    print(f"{run.config.get('model')} ({args.run.name}), {len(images)} validation images, {os.cpu_count()} CPU cores, "
          f"load {load_before[0]:.2f}")
    print(f"{'form':<16}{'batch':>6}{'images/s':>11}{'median ms':>11}{'x Keras':>9}{'top-1 agr.':>12}")
    for name in functions:
        for batch in BATCH_SIZES:
            row = results[name][f"batch{batch}"]
            ratio = ratios.get(f"{name}_over_keras_batch{batch}", 1.0)
            print(f"{name:<16}{batch:>6}{row['images_per_second']:>11.1f}{row['median_latency_ms']:>11.2f}"
                  f"{ratio:>9.2f}{agreement.get(name, 1.0):>12.2%}")
    write_json(args.out, {
        "command": shlex.join(["python", "benchmarks/inference.py", *argv]),
        "run": str(args.run), "model": run.config.get("model"), "classes": run.config.get("classes"),
        "images": len(images), "repeats": args.repeats, "results": results, "ratios": ratios,
        "top1_agreement_with_keras": agreement, "export_bytes": sizes,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()}})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
