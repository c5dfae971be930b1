"""Throughput of policy C: our batched pipeline vs ImageDataGenerator vs a chain of Keras 3 layers.

    python benchmarks/augment.py [--shared PATH] [--repeats 5] [--batch-size 128]

Reads 2,048 validation images from the shared zip, times every method on all of them once per
repeat (methods interleaved, so load from other processes hits each alike; one warm-up pass first),
prints a Markdown table of medians and writes results/benchmarks/augment.json.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import pathlib
import platform
import statistics
import sys
import time
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import augment  # noqa: E402
from common.cli import run_cli  # noqa: E402
from common.run_folder import write_json  # noqa: E402

NUM_IMAGES = 2048
OUTPUT = REPO / "results" / "benchmarks" / "augment.json"


def load_val_images(shared: pathlib.Path) -> np.ndarray:
    path = shared / "tiny-imagenet-200-meta-val.zip"
    if not path.is_file():
        raise FileNotFoundError(f"no tiny-imagenet-200-meta-val.zip in {shared}")
    from PIL import Image

    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if "/val/images/" in n and n.endswith(".JPEG"))
        return np.stack([np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB"))
                         for n in names[:NUM_IMAGES]])


def ours(images: np.ndarray, batch_size: int):
    """Policy C from make_augmenter, in a tf.data map as data.pipeline runs it."""
    augmenter = augment.make_augmenter("C")
    dataset = tf.data.Dataset.from_tensor_slices(images.astype(np.float32) / 255.0)
    dataset = dataset.batch(batch_size).enumerate().map(
        lambda index, batch: augmenter(batch, tf.stack([0, tf.cast(index, tf.int32)])),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return lambda: sum(1 for _ in dataset)


def legacy(images: np.ndarray, batch_size: int):
    """tf_keras ImageDataGenerator with the class C settings; the shuffle as preprocessing_function."""
    from tf_keras.src.preprocessing.image import ImageDataGenerator

    policy = augment.get_policy("C")
    rng = np.random.default_rng(0)

    def shuffle_channels(image):
        if rng.random() < policy.channel_shuffle_probability:
            return image[..., rng.permutation(3)]
        return image

    generator = ImageDataGenerator(
        shear_range=policy.shear_range, zoom_range=list(policy.zoom_range),
        horizontal_flip=policy.horizontal_flip, width_shift_range=policy.width_shift_range,
        height_shift_range=policy.height_shift_range, channel_shift_range=policy.channel_shift_range,
        fill_mode=policy.fill_mode, preprocessing_function=shuffle_channels)
    iterator = generator.flow(images.astype(np.float32), batch_size=batch_size, shuffle=False, seed=0)
    return lambda: sum(1 for index in range(len(iterator)) if iterator[index] is not None)


def keras_layers(images: np.ndarray, batch_size: int, rotation: bool):
    """Stock Keras 3 layers as close to class C as they go (each one resamples the batch)."""
    layers = [keras.layers.RandomRotation(30 / 360, fill_mode="reflect", seed=1)] if rotation else []
    # RandomShear's factor is a shear coefficient, not degrees: tan(20 degrees) ~ 0.36.
    layers += [
        keras.layers.RandomShear(x_factor=math.tan(math.radians(20)),
                                 y_factor=math.tan(math.radians(20)), fill_mode="reflect", seed=2),
        keras.layers.RandomZoom(height_factor=(-0.4, 0.4), width_factor=(-0.4, 0.4),
                                fill_mode="reflect", seed=3),
        keras.layers.RandomTranslation(0.2, 0.2, fill_mode="reflect", seed=4),
        keras.layers.RandomFlip("horizontal", seed=5),
    ]
    chain = keras.Sequential(layers)
    dataset = tf.data.Dataset.from_tensor_slices(images.astype(np.float32) / 255.0).batch(batch_size)
    dataset = dataset.map(lambda batch: chain(batch, training=True),
                          num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return lambda: sum(1 for _ in dataset)


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend(), "gpus": len(tf.config.list_physical_devices("GPU"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("TINY_IMAGENET_SHARED",
                                                            REPO.parent / "shared/data/tiny-imagenet-200")),
                        help="Tiny ImageNet folder or zip parts (default: $TINY_IMAGENET_SHARED or ../shared)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per method; the median is reported")
    parser.add_argument("--batch-size", type=int, default=128, help="images per augmented batch")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1:
        raise ValueError(f"--repeats and --batch-size must be >= 1. Received: {args.repeats}, "
                         f"{args.batch_size}")
    images = load_val_images(args.shared)
    methods = {
        "a_ours_batched": ("(a) augment, policy C, one resample per batch (tf.data map)",
                           ours(images, args.batch_size)),
        "b_image_data_generator": ("(b) tf_keras ImageDataGenerator(class C).flow",
                                   legacy(images, args.batch_size)),
        "c_keras_layers": ("(c) Keras 3 layers: Rotation, Shear, Zoom, Translation, Flip",
                           keras_layers(images, args.batch_size, rotation=True)),
        "c_keras_layers_no_rotation": ("(c') (c) without RandomRotation (class C has none)",
                                       keras_layers(images, args.batch_size, rotation=False)),
    }
    for _, run in methods.values():
        run()  # warm-up: tracing, thread pools, caches
    seconds = {key: [] for key in methods}
    for _ in range(args.repeats):
        for key, (_, run) in methods.items():
            start = time.perf_counter()
            run()
            seconds[key].append(time.perf_counter() - start)
    rates = {key: [len(images) / value for value in values] for key, values in seconds.items()}
    medians = {key: statistics.median(values) for key, values in rates.items()}
    baseline = medians["a_ours_batched"]
    print(f"| method | images/s (median of {args.repeats}) | (a) / method |\n| --- | ---: | ---: |")
    for key, (label, _) in methods.items():
        print(f"| {label} | {medians[key]:,.0f} | {baseline / medians[key]:.1f}x |")
    result = {
        "benchmark": "augment", "machine": machine_info(),
        "settings": {"images": len(images), "image_shape": list(images.shape[1:]),
                     "batch_size": args.batch_size, "repeats": args.repeats, "policy": "C",
                     "policy_fields": dict(vars(augment.get_policy("C"))),
                     "source": "tiny-imagenet-200 val, first images in name order"},
        "methods": {key: {"label": label, "median_images_per_second": medians[key],
                          "images_per_second": rates[key], "seconds": seconds[key]}
                    for key, (label, _) in methods.items()},
        "ratios": {"a_over_b": baseline / medians["b_image_data_generator"],
                   "a_over_c": baseline / medians["c_keras_layers"],
                   "a_over_c_no_rotation": baseline / medians["c_keras_layers_no_rotation"]},
    }
    write_json(OUTPUT, result)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
