"""augment.transforms.apply_transform against the legacy ImageDataGenerator.apply_transform."""
from __future__ import annotations

import io
import zipfile

import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

import augment
from augment.transforms import apply_transform, resample

NUM_IMAGES = 32


def _legacy_generator(fill_mode="reflect"):
    image_module = pytest.importorskip("tf_keras.src.preprocessing.image")
    return image_module.ImageDataGenerator(fill_mode=fill_mode)


def _legacy(images, params, fill_mode="reflect"):
    generator = _legacy_generator(fill_mode)
    per_image = [{key: np.asarray(value)[index] for key, value in params.items()}
                 for index in range(len(images))]
    return np.stack([generator.apply_transform(image, p) for image, p in zip(images, per_image)])


@pytest.fixture(scope="module")
def val_images(tiny_imagenet_shared):
    """The first 32 validation JPEGs (0..255 float32), read straight from the shared zip."""
    from PIL import Image

    with zipfile.ZipFile(tiny_imagenet_shared / "tiny-imagenet-200-meta-val.zip") as archive:
        names = sorted(name for name in archive.namelist()
                       if "/val/images/" in name and name.endswith(".JPEG"))[:NUM_IMAGES]
        images = [np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))
                  for name in names]
    return np.stack(images).astype(np.float32)


def _random_params(batch_size):
    rng = np.random.default_rng(0)
    return {
        "theta": rng.uniform(-30, 30, batch_size),
        "tx": rng.uniform(-12.8, 12.8, batch_size),
        "ty": rng.uniform(-12.8, 12.8, batch_size),
        "shear": rng.uniform(-20, 20, batch_size),
        "zx": rng.uniform(0.6, 1.4, batch_size),
        "zy": rng.uniform(0.6, 1.4, batch_size),
        "flip_horizontal": rng.random(batch_size) < 0.5,
        "flip_vertical": rng.random(batch_size) < 0.5,
        "channel_shift_intensity": rng.uniform(-90, 90, batch_size),
        "brightness": rng.uniform(0.3, 0.7, batch_size),
    }


@pytest.mark.slow
@pytest.mark.parametrize("key", list(_random_params(1)) + ["all"])
def test_matches_legacy_on_real_images(val_images, key):
    params = _random_params(len(val_images))
    if key != "all":
        params = {key: params[key]}
    expected = _legacy(val_images, params)
    actual = np.asarray(apply_transform(val_images, params))
    assert np.abs(actual - expected).mean() < 1.0  # grey levels on 0..255
    assert np.mean(np.abs(actual - expected) > 1.0) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_policy_draw_matches_legacy(val_images, name):
    """augment_batch = legacy apply_transform of the same drawn parameters, then the shuffle."""
    seed = tf.constant([7, 11], tf.int32)
    params = augment.draw_params(name, NUM_IMAGES, 64, 64, seed)
    params = {key: np.asarray(value) for key, value in params.items()}
    permutation = params.pop("channel_permutation")
    params.pop("channel_shuffle")
    expected = _legacy(val_images, params)
    expected = np.take_along_axis(expected, permutation[:, None, None, :], axis=-1)
    actual = np.asarray(augment.make_augmenter(name)(val_images / 255.0, seed)) * 255.0
    assert np.abs(actual - expected).mean() < 1.0


def test_identity_parameters_return_input():
    images = np.random.default_rng(1).uniform(0, 255, (3, 9, 7, 3)).astype(np.float32)
    identity = {"theta": np.zeros(3), "tx": np.zeros(3), "ty": np.zeros(3), "shear": np.zeros(3),
                "zx": np.ones(3), "zy": np.ones(3), "flip_horizontal": np.zeros(3, bool),
                "channel_shift_intensity": np.zeros(3),
                "channel_permutation": np.tile(np.arange(3), (3, 1))}
    np.testing.assert_array_equal(np.asarray(apply_transform(images, identity)), images)
    np.testing.assert_array_equal(np.asarray(apply_transform(images, {})), images)


@pytest.mark.parametrize("fill_mode", ["reflect", "nearest"])
def test_fill_mode_matches_scipy_on_a_ramp(fill_mode):
    """TF's REFLECT is scipy's reflect (dcba|abcd|dcba, edge repeated) under bilinear sampling."""
    ramp = np.arange(5 * 6, dtype=np.float32).reshape(1, 5, 6, 1).repeat(3, axis=-1) * 3.0
    for shift_columns, shift_rows in [(2.5, 0.0), (-3.25, 1.5), (9.0, -7.75)]:
        params = {"tx": np.array([shift_columns]), "ty": np.array([shift_rows])}
        # apply_transform maps output (row, col) to input (row + ty, col + tx).
        expected = scipy.ndimage.affine_transform(ramp[0, :, :, 0].astype(np.float64), np.eye(2),
                                                  offset=(shift_rows, shift_columns), order=1,
                                                  mode=fill_mode)
        actual = np.asarray(apply_transform(ramp, params, fill_mode=fill_mode))[0, :, :, 0]
        np.testing.assert_allclose(actual, expected, atol=1e-3)


@pytest.mark.parametrize("fill_mode", ["reflect", "nearest"])
def test_resample_equals_the_keras_affine_transform_kernel(fill_mode):
    """Our XLA-friendly gathers compute what keras.ops.image.affine_transform computes."""
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (6, 11, 9, 3)).astype(np.float32)
    transforms = np.concatenate([rng.uniform(-1.5, 1.5, (6, 2)), rng.uniform(-20, 20, (6, 1)),
                                 rng.uniform(-1.5, 1.5, (6, 2)), rng.uniform(-20, 20, (6, 1)),
                                 np.zeros((6, 2))], axis=1).astype(np.float32)
    expected = keras.ops.image.affine_transform(images, transforms, interpolation="bilinear",
                                                fill_mode=fill_mode)
    actual = resample(images, transforms, fill_mode)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=0.05)


@pytest.mark.slow
def test_compiled_augmenter_equals_eager_augment_batch():
    images = np.random.default_rng(5).uniform(0, 1, (5, 12, 12, 3)).astype(np.float32)
    seed = tf.constant([3, 4], tf.int32)
    for name in ("A", "B", "C"):
        compiled = np.asarray(augment.make_augmenter(name)(images, seed))
        eager = np.asarray(augment.augment_batch(images, name, seed))
        assert np.abs(compiled - eager).mean() < 1e-3


def test_reflect_repeats_the_edge():
    row = np.array([10.0, 20.0, 30.0, 40.0], np.float32).reshape(1, 1, 4, 1).repeat(3, axis=-1)
    shifted = np.asarray(apply_transform(row, {"tx": np.array([-2.0])}))[0, 0, :, 0]
    np.testing.assert_array_equal(shifted, [20.0, 10.0, 10.0, 20.0])  # ba|ab, not cb|ab


def test_channel_shift_clips_to_each_images_own_range():
    images = np.stack([np.full((2, 2, 3), 50.0), np.full((2, 2, 3), 100.0)]).astype(np.float32)
    images[0, 0, 0] = [10.0, 60.0, 200.0]
    out = np.asarray(apply_transform(images, {"channel_shift_intensity": np.array([100.0, -30.0])}))
    assert out[0].min() == 110.0 and out[0].max() == 200.0  # clipped at image 0's max only
    np.testing.assert_array_equal(out[1], images[1])  # a flat image stays put


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="rotation"):
        apply_transform(np.zeros((1, 4, 4, 3), np.float32), {"rotation": np.zeros(1)})


@pytest.mark.slow
def test_augmenter_in_tf_data_is_deterministic_and_in_range():
    images = np.random.default_rng(2).uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
    augmenter = augment.make_augmenter("B")

    def run():
        dataset = tf.data.Dataset.from_tensors(images).repeat(2).enumerate()
        dataset = dataset.map(lambda index, batch: augmenter(batch, tf.stack([7, tf.cast(index, tf.int32)])),
                              num_parallel_calls=2)
        return [batch.numpy() for batch in dataset]

    first, second = run(), run()
    np.testing.assert_array_equal(first[0], second[0])
    assert not np.array_equal(first[0], first[1])  # a different seed per batch
    assert first[0].min() >= 0.0 and first[0].max() <= 1.0 and first[0].shape == images.shape


def test_layer_is_identity_at_inference_and_round_trips(tmp_path):
    inputs = keras.Input((16, 16, 3))
    outputs = augment.PolicyAugmentation("C", seed=3, name="augmentation")(inputs)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(3).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(images, training=False), images)
    assert not np.array_equal(model(images, training=True), images)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_layer("augmentation").get_config()["policy"] == "C"
    custom = augment.PolicyAugmentation(augment.Policy(rotation_range=5.0, zoom_range=0.1))
    clone = augment.PolicyAugmentation.from_config(custom.get_config())
    assert clone._policy == custom._policy
