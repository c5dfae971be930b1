"""Plugins: modules named in the ZOO_PLUGINS environment variable, imported before a registry is read.

    ZOO_PLUGINS=my_attacks python train.py alphanet_v4 --dataset digits --adv toy:1
    ZOO_PLUGINS=/path/to/my_attacks.py,other_module python evaluate.py runs/<run> --attack toy

Each entry is an importable module name or a path to a ``.py`` file; a plugin registers attacks
(``attacks.register_attack``), training parts (``training.parts.register_part``) or models on import,
so a new one needs no edit of the project. An environment variable, not a flag, because a resumed run
and every script (train, evaluate, tune) must see the same registries without new arguments.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys

VARIABLE = "ZOO_PLUGINS"
_imported: set[str] = set()


def import_plugins() -> list[str]:
    """Import every ZOO_PLUGINS entry not yet imported; return the entries. An entry that cannot be imported
    raises ValueError naming it."""
    entries = [entry.strip() for entry in os.environ.get(VARIABLE, "").split(",") if entry.strip()]
    for entry in entries:
        if entry in _imported:
            continue
        _imported.add(entry)  # first, so a plugin that reads a registry while importing does not recurse
        try:
            if entry.endswith(".py"):
                path = pathlib.Path(entry)
                if not path.is_file():
                    raise FileNotFoundError(f"no file {path}")
                spec = importlib.util.spec_from_file_location(f"zoo_plugin_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(entry)
        except (ImportError, OSError) as error:
            _imported.discard(entry)
            raise ValueError(f"{VARIABLE} names {entry!r}, which cannot be imported: {error}") from None
    return entries
