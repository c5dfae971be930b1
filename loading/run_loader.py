"""Load a run: its config, its model, and the data split it was trained on.

It sits above ``models`` and ``data``: it imports ``models`` (whose import registers the zoo's custom
layers, so a ``.keras`` file with one of them loads with ``safe_mode=True``) and ``data`` at call
time. Every path in a run's config is untrusted input: it only ever reaches data readers that
parse image and array files, never an unpickler of arbitrary objects; every field goes through
``common.run_config`` first, and the model must predict the classes the config names.
"""
from __future__ import annotations

import dataclasses
import pathlib
import zipfile

from common import run_config
from common.run_folder import read_json


@dataclasses.dataclass
class LoadedRun:
    folder: pathlib.Path | None  # None when a bare .keras file was loaded
    model_path: pathlib.Path
    config: dict
    model: object  # keras.Model

    @property
    def name(self) -> str:
        return self.folder.name if self.folder else self.model_path.name


def load_model(path: str | pathlib.Path, *, compile: bool = False):
    """A ``.keras`` file with ``safe_mode=True``; a missing, corrupt or foreign file is one clear error."""
    import keras

    import models  # noqa: F401  (registers the zoo's custom layers)

    path = pathlib.Path(path)
    if path.is_dir() or path.suffix != ".keras":
        raise ValueError(f"{path} is not a .keras model file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if not zipfile.is_zipfile(path):  # Keras would call a file it cannot open "not found"
        raise ValueError(f"{path} is not a readable .keras file (not a zip archive)")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=compile)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .keras file ({type(error).__name__}: {error})") from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path} cannot be loaded: {detail[:300]}") from None


def load_run(target: str | pathlib.Path, *, model_file: str = "model.keras") -> LoadedRun:
    """A run folder (config.json + ``model_file``) or a bare ``.keras`` file (empty config)."""
    target = pathlib.Path(target)
    if target.is_dir():
        if not (target / "config.json").is_file():
            raise FileNotFoundError(f"{target} is not a run folder: it has no config.json")
        source = target / "config.json"
        config = read_json(source)
        if run_config.is_gan_run(config):
            raise ValueError(f"{target} is a GAN run (gan.py), not a classifier run: it has no model.keras to "
                             f"load; score it with python gan.py score {target}")
        if "recipe" in config:
            run_config.check_train_config(config, str(source))
        else:
            run_config.check_data_fields(config, str(source))
        model_path = target / model_file
        if not model_path.is_file():
            raise FileNotFoundError(f"{model_path} does not exist: {target} has no trained model yet")
        model = load_model(model_path)
        run_config.check_model_classes(model.output_shape[-1], config, str(source))
        return LoadedRun(target, model_path, config, model)
    if not target.exists():
        raise FileNotFoundError(f"{target} does not exist: pass a run folder or a .keras file")
    return LoadedRun(None, target, {}, load_model(target))


def load_split(config: dict, split: str = "val", *, image_size=None, dataset: str | None = None,
               data_path: str | None = None, classes: int | None = None, per_class: int | None = None):
    """The ``split`` a run's config names, with any of its data fields overridden (None keeps the run's)."""
    import data

    dataset = dataset or config.get("dataset", "tiny-imagenet")
    root = data_path or config.get("data")
    if root is not None and not isinstance(root, str):
        raise ValueError(f"the run's data path must be a string. Received: data={root!r}")
    return data.load_dataset(dataset, split, root=root, classes=classes or config.get("classes"),
                             per_class=per_class if split == "train" else None, image_size=image_size)
