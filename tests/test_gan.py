"""GAN models, trainer, run folders, metrics and the synthetic-data transform, at toy sizes."""
from __future__ import annotations

import itertools
import re

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from analysis import gan_metrics
from models import gan as gan_models
from training.gan import GANTrainer, fixed_inputs, tile
from training.gan_run import GANConfig, grid_inputs, train_gan
from tests.helpers import CrashAfter

TINY = dict(latent_dim=8, generator_width=4, discriminator_width=4, dense_units=8)


def tiny_config(kind="cgan", **changes) -> GANConfig:
    options = dict(kind=kind, dataset="digits", classes=2, per_class=8, epochs=1, batch_size=8, grid_rows=2,
                   grid_columns=3, image_size=16, judge=False, verbose=0, **TINY)
    options.update(changes)
    return GANConfig(**options).resolved()


def tiny_judge(classes: int = 2, size: int = 16) -> keras.Model:
    """A classifier shaped like the zoo's (a Dense logits layer after penultimate features)."""
    inputs = keras.Input((size, size, 3))
    hidden = keras.layers.Dense(6, name="hidden")(keras.layers.GlobalAveragePooling2D(name="pool")(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(hidden))


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory):
    """A two-epoch conditional GAN on two digit classes, killed after its first epoch and resumed:
    (run folder, what the folder held after the kill, the resumed run's history rows)."""
    run_dir = tmp_path_factory.mktemp("cgan")
    real = np.random.default_rng(3).random((20, 16, 16, 3), dtype=np.float32)
    scorer = gan_metrics.FeatureScorer(tiny_judge(), real, real_labels=np.arange(20) % 2, samples=20, num_classes=2)
    with pytest.raises(KeyboardInterrupt):
        train_gan(tiny_config(epochs=2), run_dir, score=scorer,
                  callbacks=[CrashAfter(1, KeyboardInterrupt(), at="begin")])
    after_kill = {path.name: path.stat().st_mtime_ns for path in run_dir.iterdir()}
    rows = train_gan(tiny_config(epochs=2), run_dir, resume=True, score=scorer)
    return run_dir, after_kill, rows


@pytest.mark.parametrize("name,size", itertools.product(
    [name for name in gan_models.gan_names() if name.endswith("generator")], gan_models.IMAGE_SIZES))
def test_generator_shape_and_range(name, size):
    options = {"latent_dim": 8, "width": 4, "image_size": size} | ({"num_classes": 3} if name.startswith("cgan") else {})
    generator = gan_models.build_gan(name, **options)
    noise = keras.random.normal((5, 8), seed=1) * 10.0  # large noise pushes tanh to its ends
    inputs = [noise, keras.ops.array([0, 1, 2, 0, 1], dtype="int32")] if name.startswith("cgan") else noise
    images = keras.ops.convert_to_numpy(generator(inputs, training=False))
    assert images.shape == (5, size, size, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


@pytest.mark.parametrize("name,spectral_norm", itertools.product(
    [name for name in gan_models.gan_names() if name.endswith("discriminator")], [False, True]))
def test_discriminator_logits_are_finite(name, spectral_norm):
    options = {"width": 4, "dense_units": 8, "spectral_norm": spectral_norm}
    options |= {"num_classes": 3} if name.startswith("cgan") else {}
    discriminator = gan_models.build_gan(name, **options)
    images = keras.random.uniform((4, 64, 64, 3), seed=2)
    inputs = [images, keras.ops.array([0, 1, 2, 0], dtype="int32")] if name.startswith("cgan") else images
    logits = keras.ops.convert_to_numpy(discriminator(inputs, training=True))
    assert logits.shape == (4, 1) and np.isfinite(logits).all()
    assert not any(layer.name.startswith(("dense", "conv2d")) for layer in discriminator.layers)
    # No BatchNormalization: see test_a_tiny_gan_learns_two_flat_colours.
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in discriminator.layers)


def test_unknown_gan_model_and_bad_width_are_refused():
    with pytest.raises(ValueError, match="Unknown GAN model 'nope'.*dcgan_generator"):
        gan_models.build_gan("nope")
    with pytest.raises(ValueError, match="width"):
        gan_models.dcgan_generator(width=3)
    with pytest.raises(ValueError, match="image_size"):
        gan_models.dcgan_discriminator(image_size=48)


def test_conditional_generator_output_depends_on_the_label():
    generator = gan_models.cgan_generator(num_classes=4, latent_dim=8, width=4)
    noise = keras.ops.repeat(keras.random.normal((1, 8), seed=3), 3, axis=0)
    labels = keras.ops.array([0, 3, 0], dtype="int32")
    images = keras.ops.convert_to_numpy(generator([noise, labels], training=False))
    # An untrained generator's outputs all sit near grey: compare with the exact repeat of label 0.
    np.testing.assert_array_equal(images[0], images[2])
    assert np.abs(images[0] - images[1]).mean() > 1e-6


def discriminator_loss(trainer, real, fake):
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    real_logits = trainer.discriminator(real, training=True)
    fake_logits = trainer.discriminator(fake, training=True)
    return float(loss(tf.ones_like(real_logits), real_logits) + loss(tf.zeros_like(fake_logits), fake_logits))


def test_one_train_step_lowers_the_discriminator_loss():
    keras.utils.set_random_seed(0)
    generator, discriminator = gan_models.build_pair("dcgan", latent_dim=8, generator_width=4,
                                                     discriminator_width=4, dense_units=8)
    trainer = GANTrainer(generator, discriminator, latent_dim=8)
    trainer.compile(d_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5),
                    g_optimizer=keras.optimizers.Adam(1e-6, beta_1=0.5))
    # "Real" images: horizontal ramps of random contrast; the untrained generator's output is near-grey noise.
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32)[None, None, :, None]
    contrast = np.random.default_rng(0).uniform(0.3, 1.0, (16, 1, 1, 1)).astype(np.float32)
    real = np.broadcast_to(ramp * contrast, (16, 64, 64, 3)).copy()
    fake = generator(keras.random.normal((16, 8), seed=4), training=True)
    before = discriminator_loss(trainer, real, fake)
    logs = trainer.train_step((tf.constant(real), tf.zeros(16, tf.int32)))
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(logs)
    assert discriminator_loss(trainer, real, fake) < before


def test_stability_aids_are_checked():
    generator, discriminator = gan_models.build_pair("dcgan", latent_dim=8, generator_width=4,
                                                     discriminator_width=4, dense_units=8)
    with pytest.raises(ValueError, match="label_smoothing"):
        GANTrainer(generator, discriminator, latent_dim=8, label_smoothing=1.0)
    with pytest.raises(ValueError, match="discriminator_steps"):
        GANTrainer(generator, discriminator, latent_dim=8, discriminator_steps=0)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    generator = np.random.default_rng(0)
    base = generator.normal(size=(400, 12))
    distances = [gan_metrics.frechet_distance(base, base + generator.normal(scale=scale, size=base.shape))
                 for scale in (0.0, 0.3, 1.0, 3.0)]
    assert distances[0] < 1e-6
    assert distances == sorted(distances) and distances[1] > 0


@pytest.mark.parametrize("count,dimensions", [(40, 6), (10, 30)])  # both ways of taking the trace
def test_fid_matches_the_matrix_square_root_formula(count, dimensions):
    generator = np.random.default_rng(1)
    a, b = generator.normal(size=(count, dimensions)), generator.normal(1.0, 2.0, size=(count + 5, dimensions))
    covariance_a, covariance_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(covariance_a + covariance_b)
                 - 2 * np.trace(np.real(scipy.linalg.sqrtm(covariance_a @ covariance_b))))
    assert gan_metrics.frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)


def test_kid_unbiased_estimator_matches_brute_force():
    generator = np.random.default_rng(2)
    a, b = generator.normal(size=(7, 5)), generator.normal(0.5, 1.0, size=(6, 5))

    def kernel(x, y):
        return (np.dot(x, y) / 5 + 1.0) ** 3

    same_a = sum(kernel(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    same_b = sum(kernel(b[i], b[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    cross = sum(kernel(x, y) for x in a for y in b) / (7 * 6)
    assert gan_metrics.mmd2_unbiased(a, b) == pytest.approx(same_a + same_b - 2 * cross, rel=1e-10)
    same = generator.normal(size=(400, 5))
    kid_same, _ = gan_metrics.kernel_inception_distance(same[:200], same[200:], subset_size=100)
    kid_shifted, _ = gan_metrics.kernel_inception_distance(same[:200], same[200:] + 1.0, subset_size=100)
    assert abs(kid_same) < 0.1 * kid_shifted


def test_tile_places_images_in_rows():
    images = np.stack([np.full((2, 2, 3), value, np.float32) for value in (0.0, 1.0, 0.5)])
    grid = tile(images, columns=2, gap=1)
    assert grid.shape == (5, 5, 3) and grid[0, 0, 0] == 0 and grid[0, 3, 0] == 255 and grid[3, 0, 0] == 128


def test_fixed_grid_inputs_repeat_and_give_one_row_per_class():
    config = tiny_config(num_classes=2)
    (noise, labels), rows = grid_inputs(config)
    (again, _), _ = grid_inputs(config)
    assert rows == 2 and keras.ops.convert_to_numpy(labels).tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(noise), keras.ops.convert_to_numpy(again))
    unconditional = fixed_inputs(8, num_classes=None, rows=2, columns=3, seed=0)
    assert tuple(unconditional.shape) == (6, 8)


@pytest.mark.slow
def test_resume_continues_the_epoch_count_and_the_fixed_noise_grid(cgan_run):
    run_dir, after_kill, rows = cgan_run
    assert "samples-epoch001.png" in after_kill and "samples-epoch002.png" not in after_kill
    assert [row["epoch"] for row in rows] == [0, 1]
    # The first epoch's grid is kept as it was; the second continues the numbering.
    assert (run_dir / "samples-epoch001.png").stat().st_mtime_ns == after_kill["samples-epoch001.png"]
    assert (run_dir / "samples-epoch002.png").is_file()
    for name in ("generator.keras", "discriminator.keras", "metrics.json", "curves.png", "samples.png"):
        assert (run_dir / name).is_file(), name
    generator = keras.models.load_model(run_dir / "generator.keras", safe_mode=True)
    assert [tuple(tensor.shape) for tensor in generator.inputs] == [(None, 8), (None,)]


@pytest.mark.slow
def test_a_resumed_run_keeps_one_column_set_in_history_csv(cgan_run):
    import csv

    with open(cgan_run[0] / "history.csv", newline="") as handle:
        lines = list(csv.reader(handle))
    header = lines[0]
    assert {"fid", "kid", "gan_test", "diversity", "sample_change", "d_loss"} <= set(header)
    assert len(lines) == 3 and all(len(line) == len(header) for line in lines)
    rows = cgan_run[2]
    assert np.isnan(rows[0]["sample_change"]) and rows[1]["sample_change"] > 0  # compared across the resume


@pytest.mark.slow
def test_feature_scorer_and_gan_test_on_a_run(cgan_run):
    generator = keras.models.load_model(cgan_run[0] / "generator.keras", safe_mode=True)
    classifier = tiny_judge(size=32)  # a classifier at another size: the scorer resizes
    real = np.random.default_rng(3).random((20, 16, 16, 3), dtype=np.float32)
    scores = gan_metrics.FeatureScorer(classifier, real, samples=20, num_classes=2)(generator)
    assert set(scores) == {"fid", "kid", "gan_test", "diversity"} and all(np.isfinite(list(scores.values())))
    images, labels = gan_metrics.generate(generator, 6, seed=1)
    assert images.shape == (6, 16, 16, 3) and labels.tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.slow
def test_synthetic_transform_replaces_a_fraction_with_labelled_images(cgan_run):
    from training.parts import make_part
    from training.wrapper import TrainingModel

    transform = make_part({"kind": "transform", "name": "synthetic", "run_dir": str(cgan_run[0]), "fraction": 0.3})
    inputs = keras.Input((32, 32, 3))
    base = keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(inputs)))
    model = TrainingModel(base, transforms=[transform])
    x, y = tf.zeros((10, 32, 32, 3)), tf.zeros(10, tf.int32)
    first = transform.views(model, x, y, tf.constant(5, tf.int64))[0]
    again = transform.views(model, x, y, tf.constant(5, tf.int64))[0]
    other = transform.views(model, x, y, tf.constant(6, tf.int64))[0]
    assert int(first.replaces) == 3 and tuple(first.images.shape) == (3, 32, 32, 3)
    assert set(first.labels.numpy().tolist()) <= {0, 1}
    np.testing.assert_array_equal(first.images.numpy(), again.images.numpy())
    assert not np.array_equal(first.images.numpy(), other.images.numpy())
    small = keras.Model(inputs, keras.layers.Dense(1, name="one")(keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(ValueError, match="makes 2 classes but the classifier has 1"):
        transform.views(TrainingModel(small, transforms=[transform]), x, y, tf.constant(0, tf.int64))


def test_synthetic_transform_refuses_an_unconditional_generator(tmp_path):
    from training.synthetic import SyntheticImages

    gan_models.dcgan_generator(latent_dim=8, width=4).save(tmp_path / "generator.keras")
    with pytest.raises(ValueError, match="unconditional"):
        SyntheticImages(str(tmp_path), 0.5)
    with pytest.raises(FileNotFoundError, match="generator.keras"):
        SyntheticImages(str(tmp_path / "missing"), 0.5)


def test_epoch_scores_keep_their_columns_in_history_csv(tmp_path):
    from common.run_folder import read_history
    from training.gan import EpochScores

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(inputs))
    model.compile("sgd", "mse")
    calls = []
    scores = EpochScores(model, lambda generator: calls.append(1) or {"fid": float(len(calls))}, every=2)
    csv = keras.callbacks.CSVLogger(str(tmp_path / "history.csv"))
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=5, verbose=0, callbacks=[scores, csv])
    fids = [row["fid"] for row in read_history(tmp_path / "history.csv")]
    # Scored on the first epoch, every second one and the last; NaN between.
    assert fids[0] == 1 and np.isnan(fids[2]) and fids[1] == 2 and fids[3] == 3 and fids[4] == 4


@pytest.mark.slow
def test_a_tiny_gan_learns_two_flat_colours():
    """The trivially simple data the old discriminator could not teach: class 0 is flat red, class 1 flat
    blue. With BatchNormalization in the discriminator, each all-real or all-fake batch was normalised by
    its own statistics, so the colour a whole batch shares never reached the logit and the samples kept
    the generator's grey noise (mean error 0.34-0.40 after these 80 steps, against 0.12-0.13 now)."""
    colours = np.array([[0.9, 0.2, 0.1], [0.1, 0.3, 0.9]], np.float32)
    labels = np.arange(256, dtype=np.int32) % 2
    images = np.broadcast_to(colours[labels][:, None, None, :], (256, 16, 16, 3))
    images = np.clip(images + np.random.default_rng(0).normal(0, 0.03, images.shape), 0, 1).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(256, seed=0).batch(32).repeat()
    generator, discriminator = gan_models.build_pair("cgan", num_classes=2, latent_dim=8, generator_width=8,
                                                     discriminator_width=8, dense_units=16, image_size=16)
    trainer = GANTrainer(generator, discriminator, latent_dim=8, conditional=True)
    trainer.compile(d_optimizer=keras.optimizers.Adam(2e-3, beta_1=0.5),
                    g_optimizer=keras.optimizers.Adam(2e-3, beta_1=0.5))
    trainer.fit(dataset, steps_per_epoch=80, epochs=1, verbose=0, shuffle=False)
    samples = keras.ops.convert_to_numpy(generator(
        [keras.random.normal((64, 8), seed=1), keras.ops.arange(64, dtype="int32") % 2], training=False))
    for label in (0, 1):
        assert np.abs(samples[label::2] - colours[label]).mean() < 0.2, label


def test_diversity_is_the_mean_pairwise_distance_within_classes():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 10.0], [10.0, 11.0]])
    assert gan_metrics.mean_pairwise_distance(points[:2]) == pytest.approx(5.0)
    assert gan_metrics.mean_pairwise_distance(points, np.array([0, 0, 1, 1])) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="at least 2"):
        gan_metrics.mean_pairwise_distance(points[:2], np.array([0, 1]))


def test_collapse_watch_warns_on_low_diversity_and_still_samples(capsys):
    from training.gan import CollapseWatch

    watch = CollapseWatch(threshold=0.5)
    watch.on_epoch_end(0, {"diversity": 0.8, "sample_change": 0.05})
    assert capsys.readouterr().out == ""
    watch.on_epoch_end(3, {"diversity": 0.2, "sample_change": 0.0})
    out = capsys.readouterr().out
    assert "epoch 4: mode collapse? generated images are 0.20" in out and "stopped changing" in out
    watch.on_epoch_end(4, {"diversity": float("nan"), "sample_change": float("nan")})  # unscored epochs
    assert capsys.readouterr().out == ""


def test_a_non_finite_loss_stops_training_with_one_error():
    from training.gan import StopOnNonFiniteLoss

    StopOnNonFiniteLoss().on_epoch_end(0, {"d_loss": 0.7, "g_loss": 0.7})
    with pytest.raises(ValueError, match="training diverged: g_loss is nan after epoch 5"):
        StopOnNonFiniteLoss().on_epoch_end(4, {"d_loss": 0.7, "g_loss": float("nan")})


@pytest.mark.slow
def test_a_diverging_run_exits_with_an_error_not_a_finished_run(tmp_path):
    # A learning rate that overflows Adam's moments within a few steps (a finite float the CLI accepts).
    config = tiny_config(learning_rate=1.0, instance_noise=10.0, epochs=2, per_class=32)
    config.learning_rate = 1e30  # past the CLI's bound, as a tampered config.json could not be
    with pytest.raises(ValueError, match="training diverged"):
        train_gan(config, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("field,value,message", [
    ("epochs", "3", "`epochs` must be an integer. Received: epochs='3'"),
    ("learning_rate", float("nan"), "learning_rate"),
    ("learning_rate", -1.0, "learning_rate"),
    ("grid_rows", 0, "`grid_rows` must be an integer >= 1"),
    ("image_size", 48, "image_size"),
    ("batch_size", 10**9, "at most"),
    ("spectral_norm", "yes", "true or false"),
])
def test_a_tampered_config_is_refused_in_one_line(tmp_path, field, value, message):
    import json

    from training.gan_run import load_config

    # json.dumps writes NaN as the bare word NaN, which Python's JSON reader (and read_json) accept.
    (tmp_path / "config.json").write_text(json.dumps(tiny_config().to_dict() | {field: value}))
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_config(tmp_path)
    assert str(tmp_path / "config.json") in str(error.value) and "\n" not in str(error.value)


def test_judge_and_generator_must_match_the_gan_run(cgan_run):
    from loading.run_loader import LoadedRun

    config = {"dataset": "digits", "num_classes": 2}
    judge = LoadedRun(None, cgan_run[0], {"dataset": "tiny-imagenet"}, tiny_judge())
    with pytest.raises(ValueError, match="trained on tiny-imagenet, the GAN run on digits"):
        gan_metrics.check_judge(judge, config, "the GAN run")
    with pytest.raises(ValueError, match="has 3 classes, the GAN run 2"):
        gan_metrics.check_judge(LoadedRun(None, cgan_run[0], {"dataset": "digits"}, tiny_judge(3)), config,
                                "the GAN run")
    generator = keras.models.load_model(cgan_run[0] / "generator.keras", safe_mode=True)
    gan_metrics.check_generator(generator, config, "generator.keras")
    with pytest.raises(ValueError, match="embeds 2 classes but its config.json names 11"):
        gan_metrics.check_generator(generator, {"num_classes": 11}, "generator.keras")
