"""Shared fixtures. Real-data tests use TINY_IMAGENET_SHARED and fail if it points at nothing."""
from __future__ import annotations

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def tiny_imagenet_shared() -> pathlib.Path:
    """The shared Tiny ImageNet folder (zip parts or official layout), from TINY_IMAGENET_SHARED."""
    value = os.environ.get("TINY_IMAGENET_SHARED")
    if not value:
        pytest.skip("TINY_IMAGENET_SHARED is not set")
    path = pathlib.Path(value)
    if not path.exists():
        pytest.fail(f"TINY_IMAGENET_SHARED={value} does not exist")
    return path


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> pathlib.Path:
    """A per-session data cache so tests never touch the user's ~/.keras."""
    path = tmp_path_factory.mktemp("zoo-cache")
    os.environ["ZOO_CACHE_DIR"] = str(path)
    return path
