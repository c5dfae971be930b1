"""predict.py: the shared image conversion, input expansion, top-k output, and predict on real Tiny ImageNet."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from PIL import Image

import predict as predict_cli
from data import datasets
from data.decode import INPUT_FORMATS, decode_file, resize_array, to_array
from data.split import Split
from inference import classify, inputs, predictors
from inference.classes import Classes, numbered, of_dataset, of_run
from tests.helpers import cli_status


def photo(height=20, width=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------- the shared conversion
def test_resize_is_the_datasets_resize():
    images = np.stack([photo(seed=seed) for seed in range(3)])
    split = Split(images=images, labels=np.zeros(3, np.int32), wnids=["a"], class_names=["a"], boxes=None)
    resized = datasets.resize(split, (16, 12)).images
    assert resized.shape == (3, 16, 12, 3)
    for image, expected in zip(images, resized):
        assert np.array_equal(resize_array(image, (16, 12)), expected)
        assert np.array_equal(to_array(Image.fromarray(image), (16, 12)), expected)


def test_grayscale_palette_and_alpha_become_rgb_on_white():
    gray = Image.fromarray(photo()[..., 0])
    assert np.array_equal(to_array(gray), np.repeat(np.asarray(gray)[..., None], 3, -1))
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, ..., 3] = 255  # top half opaque red-ish, bottom half fully transparent
    array = to_array(Image.fromarray(rgba, "RGBA"))
    assert array.dtype == np.uint8 and array.shape == (4, 4, 3)
    assert (array[:2] == [200, 0, 0]).all() and (array[2:] == 255).all()
    palette = Image.fromarray(photo()).convert("P")
    palette.info["transparency"] = 0
    assert to_array(palette).shape == (20, 30, 3)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(photo(10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    image.save(tmp_path / "portrait.jpg", exif=exif)
    assert decode_file(tmp_path / "portrait.jpg", formats=INPUT_FORMATS).shape == (20, 10, 3)


def test_decode_reads_user_formats_and_names_bad_files(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "a.webp")
    assert decode_file(tmp_path / "a.webp", image_size=(8, 8), formats=INPUT_FORMATS).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="a.webp"):
        decode_file(tmp_path / "a.webp")  # dataset folders stay JPEG/PNG only
    Image.fromarray(photo(64, 64)).save(tmp_path / "b.jpg", quality=95)
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="truncated.jpg.*truncated"):
        decode_file(tmp_path / "truncated.jpg", formats=INPUT_FORMATS)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt"):
        decode_file(tmp_path / "notes.txt", formats=INPUT_FORMATS)


# ---------------------------------------------------------------------------------- inputs and output
def test_expand_walks_folders_and_globs_once_each(tmp_path):
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for name in ("photos/b.jpg", "photos/a.png", "photos/sub/c.jpg", "photos/.hidden.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found = inputs.expand([tmp_path / "photos", str(tmp_path / "*.jpg"), tmp_path / "d.jpg"])
    assert [path.relative_to(tmp_path).as_posix() for path in found] == [
        "photos/a.png", "photos/b.jpg", "photos/sub/c.jpg", "d.jpg"]
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        inputs.expand([tmp_path / "missing.jpg"])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        inputs.expand([str(tmp_path / "*.gif")])


def tiny_model(num_classes=3, size=8):
    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(image, keras.layers.Dense(num_classes, name="logits")(x))


def test_classify_ranks_classes_and_writes_csv_and_json(tmp_path):
    model = tiny_model()
    predictor = predictors.KerasPredictor(model, Classes(["n1", "n2", "n3"], ["cat", "dog", "fish"]), tmp_path)
    for index in range(3):
        Image.fromarray(photo(seed=index)).save(tmp_path / f"{index}.png")
    (tmp_path / "bad.png").write_bytes(b"broken")
    failures = []
    rows = classify.classify(predictor, sorted(tmp_path.glob("*.png")), top=2, batch_size=2,
                             on_error=lambda path, message: failures.append(path))
    assert [row.path for row in rows] == [str(tmp_path / f"{index}.png") for index in range(3)]
    assert [path.name for path in failures] == ["bad.png"]
    images = np.stack([decode_file(tmp_path / f"{index}.png", image_size=(8, 8)) for index in range(3)])
    expected = predictors.softmax(model.predict(images / 255.0, verbose=0))
    for row, probabilities in zip(rows, expected):
        assert row.labels == list(np.argsort(-probabilities)[:2])
        assert row.probabilities == pytest.approx(list(probabilities[row.labels]), abs=1e-6)
        assert row.names == [["cat", "dog", "fish"][label] for label in row.labels]
    text = classify.format_text(rows)
    assert f"  1. {rows[0].probabilities[0]:7.2%}  {rows[0].ids[0]}  {rows[0].names[0]}" in text
    classify.write(tmp_path / "p.csv", rows, [], model="m")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "path,id_1,name_1,probability_1,id_2,name_2,probability_2" and len(lines) == 4
    classify.write(tmp_path / "p.json", rows, [(tmp_path / "bad.png", "cannot decode")], model="m")
    written = json.loads((tmp_path / "p.json").read_text())
    assert len(written["predictions"]) == 3 and written["failed"][0]["path"].endswith("bad.png")


def test_class_names_of_the_small_datasets():
    assert of_dataset("cifar10", 10).names[3] == "cat"
    assert of_dataset("digits", 10).names == [str(digit) for digit in range(10)]
    assert numbered(2).names == ["class 0", "class 1"]
    assert Classes.from_text("n1\tcat, tabby\nn2\tdog\n", "labels.txt").names == ["cat, tabby", "dog"]
    with pytest.raises(ValueError, match="labels.txt"):
        Classes.from_text("no tab here\n", "labels.txt")
    with pytest.raises(FileNotFoundError, match="/nonexistent.*pass --data PATH"):
        of_run({"dataset": "tiny-imagenet", "data": "/nonexistent"}, 10)


# ---------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("argv, words", [
    (["model.keras", "cat.jpg", "--top", "0"], "--top"),
    (["model.keras", "cat.jpg", "--saliency", "lime"], "--saliency"),
    (["model.keras"], "INPUT"),
    (["model.keras", "cat.jpg", "--out", "predictions.txt"], "predictions.txt"),
    (["model.keras", "/nonexistent/cat.jpg"], "/nonexistent/cat.jpg"),
])
def test_argument_errors_are_one_line_with_exit_status_2(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cat.jpg").write_bytes(b"x")
    assert cli_status(predict_cli, argv) == 2
    error = capsys.readouterr().err.strip()
    assert "error: " in error and words in error and "\n" not in error


def test_a_bare_model_file_predicts_with_numbered_or_named_classes(tmp_path, capsys):
    model = tiny_model(num_classes=10)
    model.save(tmp_path / "model.keras")
    Image.fromarray(photo()).save(tmp_path / "seven.png")
    assert predict_cli.run_cli(predict_cli.main, [str(tmp_path / "model.keras"), str(tmp_path / "seven.png"),
                                                  "--top", "2"]) == 0
    assert "class " in capsys.readouterr().out
    assert predict_cli.run_cli(predict_cli.main, [str(tmp_path / "model.keras"), str(tmp_path / "seven.png"),
                                                  "--dataset", "cifar10", "--top", "10"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in datasets.CIFAR10_CLASSES)


# ---------------------------------------------------------------------------------- slow: every kind of run folder
@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Two plain digits runs, their averaged ensemble and AlphaStack, and a dual-BN run (a few steps each)."""
    import train as train_cli
    from training import ensembles, trainer
    from training.recipes import override

    root = tmp_path_factory.mktemp("kinds")
    members = []
    for seed in (1, 2):
        config = trainer.default_config("cis680_allconv", dataset="digits", per_class=20, seed=seed, verbose=0)
        config.recipe = override(config.recipe, epochs=1, batch_size=50)
        members.append(trainer.train(config, root / f"member{seed}"))
    loaded = ensembles.load_members(members)
    runs = {"single": members[0],
            "average": ensembles.save_average(loaded, root / "average", batch_size=50),
            "alphastack": ensembles.train_alphastack(loaded, root / "alphastack", head=(8,), epochs=1,
                                                     batch_size=50, verbose=0)}
    argv = ["alphanet_v4", "--dataset", "digits", "--classes", "3", "--per-class", "12", "--epochs", "1",
            "--batch-size", "36", "--image-size", "16", "--adv", "fgsm:1", "--dual-bn", "--save-bn", "adv", "--quiet",
            "--run-dir", str(root / "dual-bn")]
    assert train_cli.run_cli(train_cli.main, argv) == 0
    runs["dual-bn"] = root / "dual-bn"
    runs["dual-bn auxiliary"] = root / "dual-bn" / "model-adv-bn.keras"
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["single", "average", "alphastack", "dual-bn", "dual-bn auxiliary"])
def test_every_kind_of_run_predicts_with_its_class_names(digits_runs, kind, tmp_path, capsys):
    from loading.run_loader import load_split

    split = load_split({"dataset": "digits"}, "val", image_size=(32, 32))
    Image.fromarray(split.images[0]).resize((50, 40)).save(tmp_path / "digit.png")
    out = tmp_path / "p.json"
    assert cli_status(predict_cli, [str(digits_runs[kind]), str(tmp_path / "digit.png"), "--top", "3",
                                    "--out", str(out)]) == 0
    row = json.loads(out.read_text())["predictions"][0]
    assert row["names"] == [str(label) for label in row["labels"]]  # digits' names, not "class N"
    assert sum(row["probabilities"]) <= 1 + 1e-6 and row["probabilities"] == sorted(row["probabilities"], reverse=True)


@pytest.mark.slow
def test_an_ensemble_exports_and_serves_like_its_run(digits_runs, tmp_path):
    import export as export_cli
    import tensorflow as tf

    out = tmp_path / "export"
    assert cli_status(export_cli, [str(digits_runs["alphastack"]), "--format", "saved_model", "--out", str(out)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["agreement"]["top1_agreement"] == 1.0 and len(card["model"]["members"]) == 2
    loaded = tf.saved_model.load(str(out / "saved_model"))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    assert served["probabilities"].shape == (2, 10)
