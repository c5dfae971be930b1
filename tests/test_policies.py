"""Policies by name, and the statistics of their drawn parameters over 4,000 images."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import augment
from augment import Policy, draw_params, get_policy

NUM_IMAGES = 4000
SIZE = 64


def _draw(name, seed=(1, 2)):
    params = draw_params(name, NUM_IMAGES, SIZE, SIZE, tf.constant(seed, tf.int32))
    return {key: np.asarray(value) for key, value in params.items()}


def test_registered_names_and_numbers():
    assert {"none", "A", "B", "C"} <= set(augment.policy_names())
    assert get_policy("A") == Policy(width_shift_range=0.2, height_shift_range=0.2,
                                     channel_shift_range=60, channel_shuffle_probability=1.0)
    policy_b = get_policy("B")
    assert (policy_b.rotation_range, policy_b.brightness_range, policy_b.shear_range) == (30, (0.3, 0.7), 0.2)
    assert policy_b.zoom_range == (0.8, 1.2) and policy_b.horizontal_flip
    assert (policy_b.channel_shift_range, policy_b.channel_shuffle_probability) == (90, 1.0)
    policy_c = get_policy("C")
    assert (policy_c.shear_range, policy_c.zoom_range, policy_c.horizontal_flip) == (20, (0.6, 1.4), True)
    assert (policy_c.channel_shift_range, policy_c.channel_shuffle_probability) == (90, 0.2)
    assert policy_c.fill_mode == "reflect" and policy_c.width_shift_range == 0.2


def test_unknown_policy_lists_known_names():
    with pytest.raises(ValueError, match=r"'D'.*\['A', 'B', 'C', 'flip', 'flip_shift', 'none'"):
        get_policy("D")
    with pytest.raises(ValueError, match="D"):
        augment.make_augmenter("D")


def test_register_policy_adds_a_name():
    augment.register_policy("test-rotate", Policy(rotation_range=10.0))
    assert "test-rotate" in augment.policy_names()
    assert set(_draw("test-rotate")) == {"theta"}


@pytest.mark.parametrize("field, value", [("rotation_range", -1), ("zoom_range", (0.0, 1.0)),
                                          ("fill_mode", "wrap"), ("channel_shuffle_probability", 2)])
def test_invalid_policy_fields_raise(field, value):
    with pytest.raises(ValueError, match=field):
        Policy(**{field: value})


def test_same_seed_same_params_other_seed_other_params():
    first, second, other = _draw("C", (5, 6)), _draw("C", (5, 6)), _draw("C", (5, 7))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first["shear"], other["shear"])


def test_none_draws_nothing():
    assert _draw("none") == {}


def _assert_uniform(values, low, high):
    """Within [low, high], and covering it: mean and spread of a uniform distribution."""
    assert values.min() >= low and values.max() <= high
    width = high - low
    assert values.min() < low + 0.01 * width and values.max() > high - 0.01 * width
    assert abs(values.mean() - (low + high) / 2) < 0.02 * width
    assert abs(values.std() - width / np.sqrt(12)) < 0.02 * width


def test_policy_b_ranges():
    params = _draw("B")
    _assert_uniform(params["theta"], -30, 30)
    _assert_uniform(params["shear"], -0.2, 0.2)  # degrees, like the legacy shear_range
    _assert_uniform(params["zx"], 0.8, 1.2)
    _assert_uniform(params["zy"], 0.8, 1.2)
    assert abs(np.corrcoef(params["zx"], params["zy"])[0, 1]) < 0.05  # x and y zoom independent
    _assert_uniform(params["tx"], -0.2 * SIZE, 0.2 * SIZE)  # a fraction of the size, in pixels
    _assert_uniform(params["ty"], -0.2 * SIZE, 0.2 * SIZE)
    _assert_uniform(params["channel_shift_intensity"], -90, 90)
    _assert_uniform(params["brightness"], 0.3, 0.7)
    assert abs(params["flip_horizontal"].mean() - 0.5) < 0.03
    assert "flip_vertical" not in params


def test_policy_a_and_c_ranges():
    params_a = _draw("A")
    assert set(params_a) == {"tx", "ty", "channel_shift_intensity", "channel_shuffle",
                             "channel_permutation"}
    _assert_uniform(params_a["channel_shift_intensity"], -60, 60)
    params_c = _draw("C")
    _assert_uniform(params_c["shear"], -20, 20)
    _assert_uniform(params_c["zx"], 0.6, 1.4)
    assert "theta" not in params_c and "brightness" not in params_c


@pytest.mark.parametrize("name, probability", [("A", 1.0), ("B", 1.0), ("C", 0.2)])
def test_channel_shuffle_fraction(name, probability):
    params = _draw(name)
    # The draw flag: the fraction of images that get a random permutation is p, within 5 points.
    assert abs(params["channel_shuffle"].mean() - probability) <= 0.05
    permutations = params["channel_permutation"]
    np.testing.assert_array_equal(np.sort(permutations, axis=-1), np.tile([0, 1, 2], (NUM_IMAGES, 1)))
    unshuffled = permutations[~params["channel_shuffle"]]
    np.testing.assert_array_equal(unshuffled, np.tile([0, 1, 2], (len(unshuffled), 1)))
    # The outcome: a drawn permutation is the identity 1 time in 6, so channels move in 5/6 p.
    moved = np.any(permutations != [0, 1, 2], axis=-1).mean()
    assert abs(moved - 5 / 6 * probability) <= 0.05
    # Each of the 6 permutations equally likely among the shuffled images.
    codes = permutations[params["channel_shuffle"]] @ [9, 3, 1]
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 6 and counts.min() > 0.6 * counts.mean()  # >= 5 sigma for C


def test_integer_and_pixel_shift_ranges_follow_legacy():
    integer = draw_params(Policy(width_shift_range=3), NUM_IMAGES, SIZE, SIZE, tf.constant([0, 1]))
    assert set(np.unique(np.asarray(integer["ty"]))) == {-2, -1, 0, 1, 2}
    pixels = draw_params(Policy(height_shift_range=5.0), NUM_IMAGES, SIZE, SIZE, tf.constant([0, 1]))
    _assert_uniform(np.asarray(pixels["tx"]), -5, 5)
