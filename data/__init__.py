"""Datasets as uint8 Splits, and the tf.data pipeline that feeds them to models.

Importing ``data`` stays light (NumPy and PIL only): decoding workers and data tools need not
load TensorFlow. ``data.pipeline`` imports TensorFlow and is loaded on first use.
"""
from __future__ import annotations

import importlib

from data.cache import DatasetUnavailableError, cache_dir
from data.datasets import DATASETS, load_dataset
from data.split import Split

__all__ = ["DATASETS", "DatasetUnavailableError", "Split", "cache_dir", "load_dataset", "pipeline", "tiny_imagenet"]


def __getattr__(name):
    # `import data; data.pipeline.make_dataset(...)` works without importing TensorFlow up front.
    if name in ("pipeline", "tiny_imagenet", "datasets", "decode", "extract"):
        return importlib.import_module(f"data.{name}")
    raise AttributeError(f"module 'data' has no attribute {name!r}")
