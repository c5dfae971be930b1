"""export.py: SavedModel and TFLite exports checked against the Keras model, model cards, refused tampering;
and predict.py on real Tiny ImageNet files, ensembles and dual-BN runs."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import export as export_cli
import predict as predict_cli
from common.run_folder import write_json
from loading.run_loader import load_run, load_split
from data import tiny_imagenet
from data.decode import decode_file
from inference import export, manifest, model_card, predictors
from tests.helpers import ERROR, cli_status
from training import trainer
from training.recipes import override


# ---------------------------------------------------------------------------------- fast: digests and flags
def test_a_changed_missing_or_added_file_is_refused(tmp_path):
    (tmp_path / manifest.TFLITE).write_bytes(b"\x00" * 64)
    (tmp_path / manifest.LABELS).write_text("n1\tcat\n")
    write_json(tmp_path / manifest.CARD_JSON, {"format": "tflite", "files": manifest.files_of(tmp_path)})
    assert manifest.verify(tmp_path)["format"] == "tflite"
    (tmp_path / "extra.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="does not list: extra.bin"):
        manifest.verify(tmp_path)
    (tmp_path / "extra.bin").unlink()
    (tmp_path / manifest.TFLITE).write_bytes(b"\x00" * 63 + b"\x01")
    with pytest.raises(ValueError, match="corrupted: model.tflite"):
        manifest.verify(tmp_path)
    (tmp_path / manifest.TFLITE).unlink()
    with pytest.raises(ValueError, match="model.tflite is missing"):
        manifest.verify(tmp_path)


def test_the_model_card_shows_robust_accuracy_when_the_run_has_it():
    card = {
        "format": "tflite", "quantize": "int8", "command": "python export.py runs/x --format tflite",
        "created": "2026-12-06T12:00:00+00:00",
        "model": {"name": "alphanet_v4", "run": "runs/x", "parameters": 1234, "members": None},
        "data": {"dataset": "tiny-imagenet", "classes": 10, "per_class": None, "labels": "labels.txt"},
        "input": {"name": "images", "preprocessing": "uint8"}, "outputs": {"logits": "float32"},
        "training": {"command": "python train.py alphanet_v4"},
        "evaluation": {"val_top1": 0.5, "val_top3": 0.75, "val_top5": 0.875},
        "robustness": {"n": 500, "clean": 0.5, "command": "python evaluate.py runs/x",
                       "eps": {"2/255": {"fgsm": 0.25, "pgd": 0.125}}},
        "agreement": {"images": 500, "top1_agreement": 0.99, "required_top1_agreement": 0.98,
                      "max_logit_difference": 0.5, "max_logit_difference_allowed": None},
    }
    text = model_card.markdown(card, {"model.tflite": {"bytes": 5401680}})
    assert "| eps | fgsm | pgd |" in text and "| 2/255 | 25.0% | 12.5% |" in text
    assert "top-1 50.0%, top-3 75.0%, top-5 87.5%" in text and "| model.tflite | 5,401,680 |" in text
    assert "top-1 agreement 99.0% (required 98.0%)" in text and "allowed" not in text
    del card["robustness"]
    assert "Robust accuracy" not in model_card.markdown(card, {})


@pytest.mark.parametrize("argv, words", [
    (["{run}", "--format", "onnx"], "--format"),
    (["{run}", "--format", "saved_model", "--quantize", "int8"], "--quantize int8 is for --format tflite"),
    (["{run}/nothing", "--format", "tflite"], "nothing is not a run folder"),
    (["{run}", "--format", "tflite", "--out", "{run}"], "already exists"),
])
def test_argument_errors_are_one_line_with_exit_status_2(argv, words, tmp_path, capsys):
    argv = [argument.format(run=tmp_path) for argument in argv]
    assert cli_status(export_cli, argv) == 2
    error = capsys.readouterr().err.strip()
    assert "error: " in error and words in error and "\n" not in error


# ---------------------------------------------------------------------------------- slow: a real Tiny ImageNet run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_imagenet_shared):
    # AlphaNet v4 without augmentation: after 4 short epochs its logits separate enough that int8 agrees on
    # 149 of the 150 validation images (the check needs 147), where a smaller all-convolutional net's nearly
    # tied logits leave it one flip from the limit.
    config = trainer.default_config("alphanet_v4", dataset="tiny-imagenet", data=str(tiny_imagenet_shared),
                                    classes=3, per_class=60, verbose=0)
    config.recipe = override(config.recipe, epochs=4, batch_size=30, learning_rate=1e-3, augment="none")
    return trainer.train(config, tmp_path_factory.mktemp("runs") / "tiny3")


def val_files(run_dir) -> tuple[list, np.ndarray]:
    """The run's first validation JPEGs in split order, and the split's images (what training saw)."""
    config = load_run(run_dir).config
    split = load_split(config, "val", image_size=(64, 64))
    meta = tiny_imagenet.resolve(config["data"], "val", None).meta
    wanted = set(split.wnids)
    rows = [line.split("\t")[:2] for line in (meta / "val" / "val_annotations.txt").read_text().splitlines()]
    names = sorted((name for name, wnid in rows if wnid in wanted), key=tiny_imagenet._image_number)
    return [meta / "val" / "images" / name for name in names[:4]], split.images[:4]


@pytest.mark.slow
def test_predict_on_a_real_folder_names_bad_files_and_matches_model_predict(tiny_run, tmp_path, capsys):
    paths, split_images = val_files(tiny_run)
    # The file, read the way predict.py reads it, is byte for byte the array training saw.
    for path, expected in zip(paths, split_images):
        assert np.array_equal(decode_file(path, image_size=(64, 64), formats=("JPEG",)), expected)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "colour.jpg").write_bytes(paths[0].read_bytes())
    Image.open(paths[1]).convert("L").save(folder / "gray.jpg")
    rgba = Image.open(paths[2]).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(folder / "alpha.png")
    Image.open(paths[3]).resize((250, 180)).save(folder / "large.webp")
    data = paths[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (folder / "readme.txt").write_text("not an image")
    out = tmp_path / "predictions.json"
    status = cli_status(predict_cli, [str(tiny_run), str(folder), "--top", "3", "--out", str(out),
                                      "--saliency", "gradcam"])
    captured = capsys.readouterr()
    assert status == 1
    errors = [line for line in captured.err.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 2 and "truncated.jpg" in errors[1] and "readme.txt" in errors[0]
    written = json.loads(out.read_text())
    assert [pathlib.Path(row["path"]).name for row in written["predictions"]] == [
        "alpha.png", "colour.jpg", "gray.jpg", "large.webp"]
    model = load_run(tiny_run).model
    images = np.stack([decode_file(folder / name, image_size=(64, 64), formats=("JPEG", "PNG", "WEBP"))
                       for name in ("alpha.png", "colour.jpg", "gray.jpg", "large.webp")])
    expected = predictors.softmax(model.predict(images / 255.0, verbose=0))
    for row, probabilities in zip(written["predictions"], expected):
        assert row["labels"] == list(np.argsort(-probabilities)[:3])
        np.testing.assert_allclose(row["probabilities"], probabilities[row["labels"]], atol=1e-6)
        assert row["ids"][0].startswith("n") and row["names"][0] != row["ids"][0]  # wnid and words.txt name
    assert row["names"][0] in captured.out
    assert sorted(path.name for path in (tmp_path / "saliency").iterdir()) == [
        "alpha-gradcam.png", "colour-gradcam.png", "gray-gradcam.png", "large-gradcam.png"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt, quantize", [("saved_model", None), ("tflite", None), ("tflite", "float16"),
                                           ("tflite", "int8")])
def test_export_round_trips_with_its_agreement_checked(tiny_run, tmp_path, fmt, quantize, capsys):
    out = tmp_path / "export"
    argv = [str(tiny_run), "--format", fmt, "--out", str(out)] + (["--quantize", quantize] if quantize else [])
    assert cli_status(export_cli, argv) == 0
    card = json.loads((out / manifest.CARD_JSON).read_text())
    agreement = card["agreement"]
    assert agreement["images"] == 150 and agreement["top1_agreement"] >= export.REQUIRED_AGREEMENT[quantize]
    if quantize is None:
        assert agreement["max_logit_difference"] <= 1e-4
    assert card["input"] == {**card["input"], "dtype": "uint8", "shape": [64, 64, 3]}
    assert card["evaluation"]["val_top1"] is not None and card["model"]["name"] == "alphanet_v4"
    assert (out / manifest.LABELS).read_text().count("\n") == 3
    text = (out / manifest.CARD_MARKDOWN).read_text()
    assert "top-1 agreement" in text and f"{card['files'][manifest.LABELS]['bytes']:,}" in text
    # predict.py serves the export like the run, with the run's class names.
    paths, split_images = val_files(tiny_run)
    exported = predictors.load_export(out)
    keras_model = predictors.KerasPredictor(load_run(tiny_run).model, None, tiny_run)
    keras_probabilities = keras_model.probabilities(split_images)
    tolerance = 1e-5 if quantize is None else 0.1
    np.testing.assert_allclose(exported.probabilities(split_images), keras_probabilities, atol=tolerance)
    assert cli_status(predict_cli, [str(out), str(paths[0]), "--top", "1"]) == 0
    printed = capsys.readouterr().out
    assert any(name in printed for name in exported.classes.names), printed
    # A flipped byte in the model is refused before anything is loaded.
    model_file = next(path for path in sorted(out.rglob("*")) if path.is_file() and path.stat().st_size > 10_000)
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    assert cli_status(predict_cli, [str(out), str(paths[0])]) == 2
    assert "corrupted" in capsys.readouterr().err


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_the_folders_of_killed_exports_are_removed(tmp_path):
    out = tmp_path / "export-tflite"
    abandoned = tmp_path / f"{export.temporary_prefix(out, dead_pid())}x1"
    in_progress = tmp_path / f"{export.temporary_prefix(out, os.getpid())}x2"
    other = tmp_path / f"{export.temporary_prefix(tmp_path / 'another', dead_pid())}x3"
    for folder in (abandoned, in_progress, other):
        (folder / "saved_model").mkdir(parents=True)
    assert export.remove_abandoned_exports(out) == [abandoned]
    assert sorted(tmp_path.iterdir()) == sorted([in_progress, other])


@pytest.mark.slow
def test_a_failed_check_exits_1_and_leaves_nothing(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(export.REQUIRED_AGREEMENT, None, 1.01)  # no export can reach it
    out = tmp_path / "export"
    killed = tmp_path / f"{export.temporary_prefix(out, dead_pid())}abc"  # what a killed export left
    (killed / "saved_model").mkdir(parents=True)
    assert cli_status(export_cli, [str(tiny_run), "--format", "tflite", "--out", str(out)]) == 1
    assert "export check failed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
