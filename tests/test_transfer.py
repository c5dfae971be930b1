"""Transfer baselines, Convengers and multi-phase training (random weights, small inputs, CPU-fast)."""
from __future__ import annotations

import functools
import json

import keras
import numpy as np
import pytest

import models
import train as train_cli
from models import transfer
from training import phases, trainer
from common.run_folder import read_history
from training.recipes import get_recipe, override
from tests.helpers import ERROR


@functools.lru_cache(maxsize=None)
def small_convengers():
    return models.build("convengers", num_classes=3, input_shape=(32, 32, 3), weights="none", backbone_size=75)


def random_images(shape, count=2):
    return np.random.default_rng(0).random((count, *shape), dtype=np.float32)


@pytest.mark.slow
def test_convengers_concatenates_8192_features():
    model = small_convengers()
    assert model.get_layer("head_concatenate").output.shape == (None, 2048 + 2048 + 4096)
    assert model.get_layer("vgg19").get_layer("vgg19_fc1").units == 4096  # not 224: a new fc1
    for name in ("resnet101", "inception_v3", "vgg19"):
        assert isinstance(model.get_layer(name), keras.Model)
    logits = np.asarray(model(random_images((32, 32, 3)), training=False))
    assert logits.shape == (2, 3) and np.isfinite(logits).all()


@pytest.mark.slow
def test_each_phase_trains_exactly_its_layers():
    model = small_convengers()
    model.trainable = True
    owned = {layer.name: {id(v) for v in layer.trainable_weights} for layer in model.layers}
    head = set().union(*(ids for name, ids in owned.items() if name.startswith("head_")))
    expected = {"head": head, "resnet101": head | owned["resnet101"], "inception_v3": head | owned["inception_v3"],
                "vgg19": head | owned["vgg19"], "all": set().union(*owned.values())}
    assert head and all(owned[name] for name in ("resnet101", "inception_v3", "vgg19"))
    for phase in phases.MARVEL_PHASE_5:
        phases.set_trainable(model, phase)
        assert {id(v) for v in model.trainable_variables} == expected[phase.name], phase.name
    schedule = phases.get_schedule(get_recipe("convengers").phases)
    assert [phase.adversarial is not None for phase in schedule] == [False, True, True, True, True]
    assert schedule[1].adversarial == {"attacks": {"fgsm": 10, "pgd": 1}, "eps": 2 / 255}
    last = schedule[-1]
    assert (last.trainable, last.epochs, last.learning_rate) == (("*",), 15, 1e-5)
    assert (last.decay_every, last.decay_factor) == (7, 0.1)
    assert [phase.epochs for _, phase in phases.select_phases(schedule, "2-4")] == [5, 5, 5]
    assert [number for number, _ in phases.select_phases(schedule, "1,all")] == [1, 5]
    with pytest.raises(ValueError, match="phases='7'"):
        phases.select_phases(schedule, "7")


def test_preprocessing_matches_keras_applications():
    images = random_images((8, 8, 3))
    for preprocessing, reference in (("caffe", keras.applications.vgg19.preprocess_input),
                                     ("inception", keras.applications.inception_v3.preprocess_input)):
        inputs, x = transfer._input_pipeline((8, 8, 3), 8, preprocessing, "imagenet", False, None)
        np.testing.assert_allclose(np.asarray(keras.Model(inputs, x)(images)), reference(images * 255.0), atol=1e-3)
    # Convengers converts its shared [-1, 1] view to the caffe scale for ResNet and VGG.
    model = small_convengers()
    view, caffe = keras.Model(model.input, [model.get_layer("augment_crop").output,
                                            model.get_layer("caffe_bgr").output])(random_images((32, 32, 3)))
    expected = keras.applications.resnet.preprocess_input((np.asarray(view) + 1) * 127.5)
    np.testing.assert_allclose(np.asarray(caffe), expected, atol=1e-3)


def test_augmentation_is_a_random_crop_in_training_and_the_centre_crop_otherwise():
    layer = transfer.RandomCropTraining(4, 4, seed=1)
    images = random_images((6, 6, 1), count=16)
    np.testing.assert_array_equal(np.asarray(layer(images)), images[:, 1:5, 1:5])
    cropped = np.asarray(layer(images, training=True))
    offsets = {next((top, left) for top in range(3) for left in range(3)
                    if np.array_equal(cropped[i], images[i, top:top + 4, left:left + 4])) for i in range(16)}
    assert len(offsets) > 1  # one window per image, not per batch


def test_offline_imagenet_weights_fail_with_one_clear_line(monkeypatch, capsys, tmp_path):
    def unreachable(*args, **kwargs):  # what keras.utils.get_file raises without a network
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -2] Name or "
                        "service not known")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", unreachable)
    with pytest.raises(ValueError, match=r"--weights none.*~/\.keras/models"):
        models.build("vgg19_transfer", num_classes=3, input_shape=(32, 32, 3), backbone_size=32)
    monkeypatch.chdir(tmp_path)
    argv = ["vgg19_transfer", "--dataset", "digits", "--classes", "3", "--per-class", "4", "--backbone-size", "32"]
    assert train_cli.run_cli(train_cli.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(ERROR + "Cannot download the ImageNet weights of vgg19") and "\n" not in error
    assert "--weights none" in error


def test_bad_transfer_options_fail_before_building():
    with pytest.raises(ValueError, match="Received: backbone_size=74"):
        models.build("inception_v3_transfer", num_classes=3, weights="none", backbone_size=74)
    with pytest.raises(ValueError, match="Received: weights='ImageNet'"):
        models.build("convengers", num_classes=3, weights="ImageNet")
    with pytest.raises(ValueError, match="trains in one phase"):
        phases.check_phase_spec(get_recipe("alphanet_v4"), "2-4")


class CrashAtEpochEnd(keras.callbacks.Callback):
    """Simulates a crash at the end of the ``count``-th epoch of the whole run, before it is recorded."""

    def __init__(self, count):
        super().__init__()
        self.count, self.seen = count, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen == self.count:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
def test_phases_record_their_metrics_and_resume_at_the_phase_and_epoch_reached(tmp_path):
    phases.register_schedule("test-two", (
        phases.Phase("zfirst", ("conv4", "conv5"), 3e-3, 2),  # named to sort after "second"
        phases.Phase("second", ("*",), 3e-3, 3, decay_every=1, decay_factor=0.5,
                     adversarial={"attacks": {"fgsm": 1}, "eps": 2 / 255}),
    ))
    config = trainer.default_config("cis680_allconv", dataset="digits", classes=4, per_class=40, verbose=0)
    config.recipe = override(config.recipe, phases="test-two", batch_size=32, epochs=10)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(config, run_dir, extra_callbacks=(CrashAtEpochEnd(4),))  # phase 2's second epoch
    assert list(json.loads((run_dir / "phases" / "progress.json").read_text())["finished"]) == ["zfirst"]

    started = []

    class Recorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.append(epoch)

    trainer.train(config, run_dir, resume=True, extra_callbacks=(Recorder(),))
    assert started == [1, 2]
    history = read_history(run_dir / "history.csv")
    assert [(row["phase"], row["phase_epoch"]) for row in history] == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert [row["learning_rate"] for row in history[2:]] == pytest.approx([3e-3, 1.5e-3, 7.5e-4])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(metrics["phases"]) == ["second", "zfirst"] and metrics["epochs"] == 5
    first = metrics["phases"]["zfirst"]
    assert first["trained_layers"] == ["conv4", "conv5"] and 0 < first["trainable_parameters"] < metrics["parameters"]
    assert 0 <= first["val_top1"] <= first["val_top3"] <= first["val_top5"] <= 1
    assert metrics["val_top1"] == metrics["phases"]["second"]["val_top1"]
    assert metrics["phases"]["second"]["adversarial"]["attacks"] == {"fgsm": 1}
    assert (run_dir / "curves.png").is_file() and not (run_dir / "backup").exists()
