"""Cost of attacks and adversarial training steps: this project's PGD and APGD vs cleverhans and ART, vs the floor.

    python benchmarks/adversarial.py [--batch-size 128] [--repeats 5] [--steps 10] [--train-pgd-steps 7]
    python benchmarks/adversarial.py --accuracy-run runs/digits-vanilla --accuracy-eps 8/255 16/255

One small conv net (four strided 3x3 convolutions at 64x64x3, 200 classes) and one random batch.
Every method runs once as warm-up (tracing), then once per repeat with the methods interleaved, so load
from other processes hits each alike; the table shows medians.  The floor is `steps` forward + input-
gradient passes with nothing else.  cleverhans and ART are optional (`pip install .[peers]`); a peer that
does not install or run shows why.  Writes results/benchmarks/adversarial.json.

APGD-CE with `--apgd-steps` iterations and one restart is timed against its own floor and against ART's
`AutoProjectedGradientDescent` (same iterations, one random start, initial step 2·eps, CE loss) on the
small conv net and on a zoo model (`--zoo-model`, untrained, 200 classes), each attacking the model's own
predictions.  `--accuracy-run RUN_DIR` also compares the two attacks' accuracy on that run's val images.
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

from attacks import apgd as apgd_module  # noqa: E402
from attacks import core as attacks  # noqa: E402
from attacks.accuracy import accuracy  # noqa: E402
from training.adversarial import AdversarialConfig, AdversarialModel  # noqa: E402
from common.checks import eps_label  # noqa: E402
from common.cli import pixel_value, positive_int, run_cli  # noqa: E402
from common.run_folder import write_json  # noqa: E402

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


def art_apgd(model, x, y, steps, eps=EPS, batch_size=None):
    """ART's APGD with the paper's settings: one random start, first step 2·eps, CE loss; returns numpy images."""
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    num_classes = int(model.output_shape[-1])
    classifier = TensorFlowV2Classifier(model, nb_classes=num_classes, input_shape=tuple(x.shape[1:]),
                                        clip_values=(0.0, 1.0),
                                        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    attack = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps,
                                          nb_random_init=1, batch_size=batch_size or len(x),
                                          loss_type="cross_entropy", verbose=False)
    x_numpy, labels = np.asarray(x), np.eye(num_classes, dtype="float32")[np.asarray(y)]
    return lambda: attack.generate(x_numpy, labels)


def apgd_methods(model, x, arguments):
    """APGD-CE rows for one model, attacking its own predictions (ART skips images already misclassified)."""
    steps = arguments.apgd_steps
    y = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
    table = {
        f"floor: {steps} forward+input-gradient passes": lambda: floor(model, x, y, steps),
        f"this project: apgd (CE), {steps} steps": lambda: lambda: apgd_module.apgd(
            model, x, y, eps=EPS, steps=steps, seed=0).numpy(),
        f"ART: AutoProjectedGradientDescent (CE), {steps} steps": lambda: art_apgd(model, x, y, steps),
    }
    return {name: make for name, make in table.items() if not (arguments.skip_peers and name.startswith("ART"))}


def apgd_accuracy(run_dir, arguments):
    """APGD-CE accuracy of this project and of ART on one run's val images (same images, iterations, eps)."""
    from loading.run_loader import load_run, load_split

    run = load_run(run_dir)
    val = load_split(run.config, "val", image_size=tuple(run.model.input_shape[1:3]))
    chosen = np.sort(np.random.default_rng(0).permutation(len(val.images))[:arguments.accuracy_limit])
    images, labels = val.images[chosen].astype("float32") / 255.0, val.labels[chosen]
    steps = arguments.apgd_steps
    rows = {"run": str(run_dir), "n": int(len(images)), "steps": steps, "eps": {}}
    for eps in arguments.accuracy_eps:
        ours = accuracy(run.model, images, labels, lambda m, x, y, seed: apgd_module.apgd(m, x, y, eps=eps,
                                                                                           steps=steps, seed=seed))
        row = {"clean": accuracy(run.model, images, labels), "this_project_apgd_ce": ours}
        try:
            adversarial = art_apgd(run.model, images, labels, steps, eps=eps, batch_size=128)()
            row["art_apgd_ce"] = accuracy(run.model, adversarial, labels)
        except Exception as error:  # noqa: BLE001 - the peer is optional; the row says why it is missing
            row["art_apgd_ce"] = f"unavailable: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
        rows["eps"][eps_label(eps)] = row
        print(f"{run_dir} eps {eps_label(eps)}: " + ", ".join(
            f"{key} {100 * value:.1f}%" if isinstance(value, float) else f"{key} {value}"
            for key, value in row.items()))
    return rows


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


def report(results, batch_size, reference_of):
    """Markdown rows with images/s and the ratio to each row's reference row (``reference_of(name)``)."""
    rows = ["| method | median s | images/s | ratio |", "| --- | ---: | ---: | ---: |"]
    for name, result in results.items():
        if result["status"] != "ok":
            rows.append(f"| {name} | {result['status']} | | |")
            continue
        result["images_per_s"] = batch_size / result["median_s"]
        reference_name = reference_of(name)
        if reference_name and results[reference_name]["status"] == "ok":
            result["ratio"] = result["median_s"] / results[reference_name]["median_s"]
            result["ratio_to"] = reference_name
        ratio = f"{result['ratio']:.2f}x vs {reference_name.split(':')[0]}" if "ratio" in result else ""
        rows.append(f"| {name} | {result['median_s']:.3f} | {result['images_per_s']:.1f} | {ratio} |")
    print("\n".join(rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per attacked batch")
    parser.add_argument("--width", type=positive_int, default=32,
                        help="filters of the first conv layer (then 2x, 4x, 4x)")
    parser.add_argument("--steps", type=positive_int, default=10, help="PGD steps for the attack rows")
    parser.add_argument("--train-pgd-steps", type=positive_int, default=7, help="k of the PGD-k training step")
    parser.add_argument("--apgd-steps", type=positive_int, default=100, help="APGD-CE iterations (default: 100)")
    parser.add_argument("--zoo-model", default="alphanet_v4", help="zoo model of the second APGD timing")
    parser.add_argument("--zoo-batch-size", type=positive_int, default=32, help="images per batch for the zoo model")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed repeats after one warm-up; the median is reported")
    parser.add_argument("--skip-peers", action="store_true", help="leave out cleverhans and ART")
    parser.add_argument("--accuracy-run", nargs="*", default=[], type=pathlib.Path, metavar="RUN_DIR",
                        help="also compare APGD-CE accuracy of this project and ART on these runs' val images")
    parser.add_argument("--accuracy-eps", nargs="+", type=pixel_value, default=[EPS],
                        help="L-inf eps of the accuracy comparison (default: 8/255)")
    parser.add_argument("--accuracy-limit", type=positive_int, default=1000,
                        help="at most this many val images per run (a fixed random subset, as evaluate.py --limit)")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT,
                        help="JSON report (default: results/benchmarks/adversarial.json)")
    arguments = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x = tf.random.uniform((arguments.batch_size, *SHAPE), seed=1)
    y = tf.random.uniform((arguments.batch_size,), maxval=NUM_CLASSES, dtype=tf.int32, seed=2)
    results = measure(methods(conv_net(arguments.width), x, y, arguments), arguments.repeats)
    floor_name = next(iter(results))
    report(results, arguments.batch_size,
           lambda name: "train step: clean" if name.startswith("train step") else floor_name)

    import models

    apgd = {}
    zoo_model = models.build(arguments.zoo_model, num_classes=NUM_CLASSES, input_shape=SHAPE)
    for label, model, batch in (("small conv net", conv_net(arguments.width), arguments.batch_size),
                                (f"zoo: {arguments.zoo_model}", zoo_model, arguments.zoo_batch_size)):
        print(f"APGD-CE on {label}, batch {batch}:")
        rows = measure(apgd_methods(model, x[:batch], arguments), arguments.repeats)
        names = list(rows)
        # Ours against the floor; ART against ours.
        report(rows, batch, lambda name: None if name == names[0] else (names[0] if name == names[1] else names[1]))
        apgd[label] = {"batch_size": batch, "parameters": model.count_params(), "results": rows}
    accuracy_rows = [apgd_accuracy(run_dir, arguments) for run_dir in arguments.accuracy_run]

    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
               "tensorflow": tf.__version__, "keras": keras.__version__,
               "gpus": len(tf.config.list_physical_devices("GPU")), "load_average_at_end": os.getloadavg()}
    settings = {"model": f"4 strided 3x3 conv layers ({arguments.width}-{2 * arguments.width}-{4 * arguments.width}-"
                         f"{4 * arguments.width} filters), global average pool, dense", "image_shape": list(SHAPE),
                "num_classes": NUM_CLASSES, "batch_size": arguments.batch_size, "eps": "8/255", "step_size": "2/255",
                "norm": "inf", "attack_steps": arguments.steps, "train_pgd_steps": arguments.train_pgd_steps,
                "train_fraction_adversarial": 1.0, "repeats": arguments.repeats, "apgd_steps": arguments.apgd_steps,
                "apgd": "CE loss, 1 restart, first step 2*eps; ART: eps_step=2*eps, nb_random_init=1",
                "statistic": "median after one warm-up", "command": " ".join(["python", "benchmarks/adversarial.py",
                                                                               *(argv or sys.argv[1:])])}
    write_json(arguments.output, {"benchmark": "adversarial", "machine": machine, "settings": settings,
                                  "results": results, "apgd_ce": apgd, "apgd_ce_accuracy": accuracy_rows})
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
