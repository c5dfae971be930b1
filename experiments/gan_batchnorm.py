"""Why the GANs made coloured noise: the digits cGAN trained twice, identical but for BatchNormalization
in the discriminator (as it was) or none (as it is now), same seed, data and steps.

    python -m experiments.gan_batchnorm --steps 600 [--image-size 64] --classifier runs/cgan-digits/judge --out results/gan

Writes batchnorm-SIZE-{with,without}-bn.png (fixed noise, row r asks for digit r) and batchnorm-SIZE.json:
per variant the generated images' mean brightness and roughness (mean absolute difference of horizontally
neighbouring pixels), the real training digits' beside them, and with --classifier the FID, KID,
GAN-test and diversity of gan.py's scorer.
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

import keras
import numpy as np

from common.cli import positive_int, run_cli


def train_variant(config, split, batch_norm: bool, steps: int):
    """The generator after ``steps`` updates, with or without BN in the discriminator."""
    from data.pipeline import make_dataset
    from models.gan import build_pair
    from training.gan import GANTrainer

    keras.utils.set_random_seed(config.seed)
    generator, discriminator = build_pair(
        "cgan", num_classes=config.num_classes, latent_dim=config.latent_dim, generator_width=config.generator_width,
        discriminator_width=config.discriminator_width, dense_units=config.dense_units, image_size=config.image_size,
        discriminator_batch_norm=batch_norm)
    trainer = GANTrainer(generator, discriminator, latent_dim=config.latent_dim, conditional=True, seed=config.seed)
    trainer.compile(d_optimizer=keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1),
                    g_optimizer=keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1))
    dataset = make_dataset(split, config.batch_size, training=True, seed=config.seed, repeat=True)
    trainer.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return generator


def main(argv=None) -> int:
    from PIL import Image

    from common.run_folder import write_json
    from training.gan import tile
    from training.gan_run import GANConfig, grid_inputs, load_data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=600, help="GAN updates per variant (default: 600)")
    parser.add_argument("--image-size", type=int, choices=(16, 32, 64), default=32, help="(default: 32)")
    parser.add_argument("--classifier", metavar="RUN_DIR", help="a digits classifier run for GAN-test and diversity")
    parser.add_argument("--out", default="results/gan", help="folder for the grids and batchnorm.json")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    config = GANConfig(kind="cgan", dataset="digits", image_size=args.image_size, verbose=0).resolved()
    split = load_data(config, out)
    scorer = None
    if args.classifier:
        from analysis.gan_metrics import FeatureScorer
        from loading.run_loader import load_run, load_split

        size = config.image_size
        val = load_split(config.to_dict(), "val", image_size=(size, size))
        scorer = FeatureScorer(load_run(args.classifier).model, val.images / np.float32(255.0), real_labels=val.labels,
                               samples=len(val), seed=config.seed, num_classes=config.num_classes)
    real = split.images / 255.0
    result = {"command": shlex.join(["python", "-m", "experiments.gan_batchnorm", *(argv or sys.argv[1:])]),
              "settings": {key: getattr(config, key) for key in ("image_size", "generator_width", "dense_units",
                                                                 "batch_size", "learning_rate", "beta_1", "seed")},
              "steps": args.steps, "real": {"brightness": float(real.mean()),
                                            "roughness": float(np.abs(np.diff(real, axis=2)).mean())}}
    inputs, _ = grid_inputs(config)
    for name, batch_norm in (("with-bn", True), ("without-bn", False)):
        generator = train_variant(config, split, batch_norm, args.steps)
        images = keras.ops.convert_to_numpy(generator(inputs, training=False))
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tile(images, config.grid_columns)).save(out / f"batchnorm-{args.image_size}-{name}.png")
        result[name] = {"brightness": float(images.mean()), "roughness": float(np.abs(np.diff(images, axis=2)).mean()),
                        **(scorer(generator) if scorer else {})}
        print(name, result[name], flush=True)
    write_json(out / f"batchnorm-{args.image_size}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
