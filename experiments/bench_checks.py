"""Two diagnostics behind the bench's notes (results/imt/notes.md).

    python -m experiments.bench_checks bn-gap runs/psv/new-s2 --data ../shared/data/tiny-imagenet-200
    python -m experiments.bench_checks smoothness-scale resnet18_maxpool --data ../shared/data/tiny-imagenet-200

bn-gap: a run's model.keras on its val images in inference mode and with batch statistics (training=True,
batches of 100): a model that learned but whose BatchNormalization moving statistics are stale scores far
higher with batch statistics. smoothness-scale: the Laplacian smoothness term at initialisation on 125 val
images (every fourth), beside the cross-entropy, at the IMT report's two settings.
"""
from __future__ import annotations

import argparse
import sys

import keras
import numpy as np

from common.cli import run_cli
from common.run_folder import read_json
from data.datasets import load_dataset

CLASSES = 10


def val_images(data: str, size: int):
    split = load_dataset("tiny-imagenet", "val", root=data, classes=CLASSES, image_size=(size, size))
    return split.images.astype("float32") / 255.0, split.labels


def bn_gap(args) -> None:
    import models  # noqa: F401  (registers the zoo's layers for loading)

    x, y = val_images(args.data, int(read_json(f"{args.target}/config.json")["image_size"]))
    model = keras.models.load_model(f"{args.target}/model.keras", compile=False)
    for training in (False, True):
        predictions = np.concatenate([np.argmax(model(x[i:i + 100], training=training), -1)
                                      for i in range(0, len(x), 100)])
        print(f"{args.target} training={training}: val top-1 {100 * np.mean(predictions == y):.1f} % "
              f"({len(set(predictions))} classes predicted)")


def smoothness_scale(args) -> None:
    import models
    from training.parts import View
    from training.regularizers import LaplacianSmoothness

    x, y = val_images(args.data, 32)
    x, y = x[::4], y[::4]
    keras.utils.set_random_seed(0)
    model = models.build(args.target, num_classes=CLASSES, input_shape=(32, 32, 3))
    logits = model(x, training=True)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    print(f"{args.target}: cross-entropy {float(loss):.2f}")
    for gamma, power in ((0.01, 2), (0.001, 1)):
        term = LaplacianSmoothness(gamma=gamma, power=power)
        term.bind(model)
        features = keras.Model(model.inputs, [model.get_layer(name).output for name in term.layers])(x, training=True)
        value = term(None, {"clean": View("clean", x, y)},
                     {"clean": logits, "features": {"clean": dict(zip(term.layers, features))}})
        print(f"γ {gamma}, m {power}: term {float(value):.2f} over {len(term.layers)} layers")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=["bn-gap", "smoothness-scale"])
    parser.add_argument("target", help="a run folder (bn-gap) or a model name (smoothness-scale)")
    parser.add_argument("--data", default="../shared/data/tiny-imagenet-200", help="Tiny ImageNet folder or zip")
    args = parser.parse_args(argv)
    (bn_gap if args.check == "bn-gap" else smoothness_scale)(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
