"""Cost of each way of training per image: plain `model.fit` against the training wrapper and its parts.

    python benchmarks/train_step.py [--model resnet18_maxpool] [--image-size 32] [--batch-size 64]
                                    [--steps 10] [--repeats 3] [--only NAME ...]

One zoo model (untrained, 10 classes) and one fixed random batch, repeated. Every configuration is built
and compiled once and warmed up by one epoch (tracing); then each repeat times one `fit` epoch of
`--steps` steps per configuration, the configurations interleaved so that load from other processes
hits each alike. The table shows images/s (median wall time) and the CPU time per image (median), relative to plain
`model.fit` and to the wrapper with no parts; the ratios use CPU time, the work each way of training
does, because on a shared or quota-throttled machine wall time snaps to scheduling periods. Writes
results/benchmarks/train_step.json with `ratios.wrapper_over_plain_fit` (CPU time per image, wrapper
with no parts ÷ plain fit) and `ratios.<name>_over_clean` for every configuration.

A configuration is a row of CONFIGURATIONS: builder options and part specs, exactly what train.py's
flags produce, so a new way of training is measured by adding one row.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from common.cli import positive_int, run_cli  # noqa: E402
from common.run_folder import write_json  # noqa: E402
from models.parseval import ParsevalConstraint  # noqa: E402
from training.parts import make_parts  # noqa: E402
from training.adversarial import adversarial_parts  # noqa: E402
from training import run_setup  # noqa: E402
from training.recipes import Recipe  # noqa: E402
from training.wrapper import wrap  # noqa: E402

OUTPUT = REPO / "results" / "benchmarks" / "train_step.json"
NUM_CLASSES = 10
FGSM = {"attacks": "fgsm:1", "eps": 2 / 255}
PGD7 = {"attacks": "pgd:1", "eps": 2 / 255, "pgd_steps": 7}
PARSEVAL = {"conv_constraint": "parseval", "residual_merge": "convex"}  # ParsevalConstraint(beta=0.01)
# train.py --parseval 0.01 --parseval-rows 0.3: a random 30% of each kernel's rows retracted per step
PARSEVAL_SAMPLED = {"conv_constraint": ParsevalConstraint(beta=0.01, rows=0.3), "residual_merge": "convex"}

# name: (wrapped?, builder options, adversarial options, further part specs)
CONFIGURATIONS = {
    "plain model.fit": (False, {}, None, []),
    "wrapper, no parts": (True, {}, None, []),
    "FGSM-AT (50%)": (True, {}, FGSM, []),
    "PGD-7-AT (50%)": (True, {}, PGD7, []),
    "Parseval (beta 0.01, convex merges)": (True, PARSEVAL, None, []),
    "Parseval, 30% of rows per step": (True, PARSEVAL_SAMPLED, None, []),
    "Laplacian smoothness (m=2)": (True, {}, None, [{"kind": "loss", "name": "laplacian_smoothness", "gamma": 0.01,
                                                    "power": 2}]),
    "gradient monitor": (True, {}, None, [{"kind": "hook", "name": "gradient_monitor"}]),
    "PGD-7-AT (50%), dual BN": (True, {"norm_layer": "dual_batch_norm"}, PGD7, []),
}


def build(name: str, arguments):
    wrapped, options, adversarial, extra = CONFIGURATIONS[name]
    keras.utils.set_random_seed(0)
    base = models.build(arguments.model, num_classes=NUM_CLASSES,
                        input_shape=(arguments.image_size, arguments.image_size, 3), **options)
    model = wrap(base, make_parts([*(adversarial_parts(adversarial) if adversarial else []), *extra])) if wrapped else base
    run_setup.compile_for_training(model, Recipe(arguments.model, batch_size=arguments.batch_size))
    return model


def epoch_seconds(model, dataset, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one fit epoch. CPU time is the work done: on a shared or
    quota-throttled machine wall time snaps to scheduling periods, CPU time does not."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return time.perf_counter() - wall, time.process_time() - cpu


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18_maxpool", help="zoo model (default: resnet18_maxpool)")
    parser.add_argument("--image-size", type=positive_int, default=32, help="square input size (default: 32)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per step (default: 64)")
    parser.add_argument("--steps", type=positive_int, default=10, help="steps per timed epoch (default: 10)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed epochs per configuration (default: 3)")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGURATIONS), metavar="NAME",
                        help="measure these configurations (plain model.fit and the wrapper always run)")
    parser.add_argument("--out", type=pathlib.Path, default=OUTPUT, help=f"JSON output (default: {OUTPUT})")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    arguments = parse_args(argv)
    names = list(CONFIGURATIONS) if not arguments.only else [
        "plain model.fit", "wrapper, no parts", *[name for name in arguments.only if name not in
                                                  ("plain model.fit", "wrapper, no parts")]]
    rng = np.random.default_rng(0)
    shape = (arguments.batch_size, arguments.image_size, arguments.image_size, 3)
    x = rng.uniform(0, 1, shape).astype("float32")
    y = rng.integers(0, NUM_CLASSES, arguments.batch_size).astype("int32")
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    built = {}
    for name in names:
        print(f"building and warming up: {name}", flush=True)
        built[name] = build(name, arguments)
        epoch_seconds(built[name], dataset, arguments.steps)
    times, cpu_times = {name: [] for name in names}, {name: [] for name in names}
    for repeat in range(arguments.repeats):
        for name in names:
            wall, cpu = epoch_seconds(built[name], dataset, arguments.steps)
            times[name].append(wall)
            cpu_times[name].append(cpu)
        print(f"repeat {repeat + 1}/{arguments.repeats} done", flush=True)
    images = arguments.steps * arguments.batch_size
    per_second = {name: images / statistics.median(values) for name, values in times.items()}
    cpu_per_image = {name: statistics.median(values) / images for name, values in cpu_times.items()}
    plain, clean = cpu_per_image["plain model.fit"], cpu_per_image["wrapper, no parts"]
    print(f"\n{arguments.model} at {arguments.image_size}x{arguments.image_size}, batch {arguments.batch_size}, "
          f"{arguments.steps} steps x {arguments.repeats} repeats (median)\n")
    print(f"| {'configuration':40s} | images/s (wall) | CPU ms per image | vs plain fit | vs wrapper, no parts |")
    print(f"| {'-' * 40} | ---: | ---: | ---: | ---: |")
    for name in names:
        print(f"| {name:40s} | {per_second[name]:15.1f} | {1000 * cpu_per_image[name]:16.2f} | "
              f"{cpu_per_image[name] / plain:11.2f}x | {cpu_per_image[name] / clean:19.2f}x |")
    # Ratios of CPU time per image (the work each way of training does), measured in one run.
    ratios = {"wrapper_over_plain_fit": clean / plain}
    ratios.update({f"{name}_over_clean": cpu_per_image[name] / clean for name in names if name != "plain model.fit"})
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
               "tensorflow": tf.__version__, "keras": keras.__version__,
               "gpus": len(tf.config.list_physical_devices("GPU")), "load_average_at_end": os.getloadavg()}
    payload = {"benchmark": "train_step", "machine": machine,
               "settings": {"model": arguments.model, "image_size": arguments.image_size, "num_classes": NUM_CLASSES,
                            "batch_size": arguments.batch_size, "steps": arguments.steps,
                            "repeats": arguments.repeats, "statistic": "median after one warm-up epoch",
                            "eps": "2/255"},
               "images_per_second": per_second, "cpu_seconds_per_image": cpu_per_image, "seconds": times,
               "cpu_seconds": cpu_times, "ratios": ratios, "ratio_statistic": "median CPU seconds per image",
               "command": "python benchmarks/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_json(arguments.out, payload)
    print(f"\nwrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
