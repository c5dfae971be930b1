"""Cost of attacks and adversarial training steps: this project's PGD vs cleverhans and ART, vs the floor.

    python benchmarks/adversarial.py [--batch-size 128] [--repeats 5] [--steps 10] [--train-pgd-steps 7]

One small conv net (four strided 3x3 convolutions at 64x64x3, 200 classes) and one random batch.
Every method runs once as warm-up (tracing), then once per repeat with the methods interleaved, so load
from other processes hits each alike; the table shows medians.  The floor is `steps` forward + input-
gradient passes with nothing else.  cleverhans and ART are optional (`pip install .[peers]`); a peer that
does not install or run shows why.  Writes results/benchmarks/adversarial.json.
"""
from __future__ import annotations

import argparse
import json
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

from augment import attacks  # noqa: E402
from training.adversarial import AdversarialConfig, AdversarialModel  # noqa: E402
from common.cli import run_cli  # noqa: E402

OUTPUT = REPO / "results" / "benchmarks" / "adversarial.json"
EPS, SHAPE, NUM_CLASSES = 8 / 255, (64, 64, 3), 200


def conv_net(width: int) -> keras.Model:
    inputs = keras.Input(SHAPE, name="images")
    hidden = inputs
    for index, filters in enumerate((width, 2 * width, 4 * width, 4 * width)):
        hidden = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                                     name=f"conv{index}")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(hidden), name="bench_conv")


def floor(model, x, y, steps):
    """`steps` forward + input-gradient passes; the only extra work is a cheap elementwise update."""
    @tf.function
    def passes(x, y):
        def body(i, images):
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(images, training=False)))
            return i + 1, images + 1e-6 * tape.gradient(loss, images)
        return tf.while_loop(lambda i, _: i < steps, body, (0, x))[1]
    return lambda: passes(x, y).numpy()


def cleverhans_pgd(model, x, y, steps):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    def model_fn(images):
        return model(images, training=False)
    return lambda: projected_gradient_descent(model_fn, x, EPS, EPS / 4, steps, np.inf, clip_min=0.0, clip_max=1.0,
                                              y=y, rand_init=True, sanity_checks=False).numpy()


def art_pgd(model, x, y, steps):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(model, nb_classes=NUM_CLASSES, input_shape=SHAPE, clip_values=(0.0, 1.0),
                                        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=EPS, eps_step=EPS / 4, max_iter=steps,
                                      batch_size=len(x), num_random_init=1, verbose=False)
    x_numpy, labels = x.numpy(), np.eye(NUM_CLASSES, dtype="float32")[y.numpy()]
    return lambda: attack.generate(x_numpy, labels)


def train_step(model, x, y):
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return lambda: model.train_on_batch(x, y)


def methods(model, x, y, arguments):
    steps, pgd_k = arguments.steps, arguments.train_pgd_steps
    ours = dict(eps=EPS, step_size=EPS / 4, steps=steps, seed=0)
    adversarial = dict(fraction=1.0, eps=EPS, pgd_steps=pgd_k, pgd_step_size=EPS / 4)
    table = {
        f"floor: {steps} forward+input-gradient passes": lambda: floor(model, x, y, steps),
        f"this project: pgd, {steps} steps": lambda: lambda: attacks.pgd(model, x, y, **ours).numpy(),
        f"this project: pgd, {steps} steps, jit_compile=True":
            lambda: lambda: attacks.pgd(model, x, y, jit_compile=True, **ours).numpy(),
        f"cleverhans: projected_gradient_descent, {steps} steps": lambda: cleverhans_pgd(model, x, y, steps),
        f"ART: ProjectedGradientDescent, {steps} steps": lambda: art_pgd(model, x, y, steps),
        "train step: clean": lambda: train_step(conv_net(arguments.width), x, y),
        "train step: FGSM-AT": lambda: train_step(
            AdversarialModel(conv_net(arguments.width), AdversarialConfig(attacks="fgsm", **adversarial)), x, y),
        f"train step: PGD-{pgd_k}-AT": lambda: train_step(
            AdversarialModel(conv_net(arguments.width), AdversarialConfig(attacks="pgd", **adversarial)), x, y),
    }
    if arguments.skip_peers:
        table = {name: make for name, make in table.items() if not name.startswith(("cleverhans", "ART"))}
    return table


def measure(table, repeats):
    runners, results = {}, {}
    for name, make in table.items():
        try:
            runners[name] = make()
            runners[name]()  # warm-up: tracing and first allocation
        except Exception as error:  # noqa: BLE001 - a peer may fail in any way; the row says how
            runners.pop(name, None)
            results[name] = {"status": f"unavailable: {type(error).__name__}: {str(error).splitlines()[0][:120]}"}
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    for name, samples in times.items():
        results[name] = {"status": "ok", "median_s": statistics.median(samples), "samples_s": samples}
    return {name: results[name] for name in table}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128, help="images per attacked batch")
    parser.add_argument("--width", type=int, default=32, help="filters of the first conv layer (then 2x, 4x, 4x)")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps for the attack rows")
    parser.add_argument("--train-pgd-steps", type=int, default=7, help="k of the PGD-k training step")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats after one warm-up; the median is reported")
    parser.add_argument("--skip-peers", action="store_true", help="leave out cleverhans and ART")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT,
                        help="JSON report (default: results/benchmarks/adversarial.json)")
    arguments = parser.parse_args(argv)
    for name in ("batch_size", "width", "steps", "train_pgd_steps", "repeats"):
        if getattr(arguments, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1. Received: {getattr(arguments, name)}")
    keras.utils.set_random_seed(0)
    x = tf.random.uniform((arguments.batch_size, *SHAPE), seed=1)
    y = tf.random.uniform((arguments.batch_size,), maxval=NUM_CLASSES, dtype=tf.int32, seed=2)
    results = measure(methods(conv_net(arguments.width), x, y, arguments), arguments.repeats)

    floor_name, clean_name = next(iter(results)), "train step: clean"
    rows = ["| method | median s | images/s | vs floor / vs clean step |", "| --- | ---: | ---: | ---: |"]
    for name, result in results.items():
        if result["status"] != "ok":
            rows.append(f"| {name} | {result['status']} | | |")
            continue
        result["images_per_s"] = arguments.batch_size / result["median_s"]
        reference = results[clean_name if name.startswith("train step") else floor_name]
        if reference["status"] == "ok":
            result["ratio"] = result["median_s"] / reference["median_s"]
        ratio = f"{result['ratio']:.2f}x" if "ratio" in result else ""
        rows.append(f"| {name} | {result['median_s']:.3f} | {result['images_per_s']:.1f} | {ratio} |")
    print("\n".join(rows))

    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
               "tensorflow": tf.__version__, "keras": keras.__version__,
               "gpus": len(tf.config.list_physical_devices("GPU"))}
    settings = {"model": f"4 strided 3x3 conv layers ({arguments.width}-{2 * arguments.width}-{4 * arguments.width}-"
                         f"{4 * arguments.width} filters), global average pool, dense", "image_shape": list(SHAPE),
                "num_classes": NUM_CLASSES, "batch_size": arguments.batch_size, "eps": "8/255", "step_size": "2/255",
                "norm": "inf", "attack_steps": arguments.steps, "train_pgd_steps": arguments.train_pgd_steps,
                "train_fraction_adversarial": 1.0, "repeats": arguments.repeats,
                "statistic": "median after one warm-up"}
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = arguments.output.with_name(arguments.output.name + ".tmp")
    temporary.write_text(json.dumps({"benchmark": "adversarial", "machine": machine, "settings": settings,
                                     "results": results}, indent=2) + "\n")
    os.replace(temporary, arguments.output)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
