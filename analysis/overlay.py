"""A saliency map laid over the image it explains, as one PNG a person can look at."""
from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from common.run_folder import atomic_path

ALPHA = 0.45  # the overlay strength explain.py's figures use


def save_overlay(image: np.ndarray, saliency: np.ndarray, path, *, scale: int = 4) -> pathlib.Path:
    """Write uint8 ``image`` (H, W, 3) with ``saliency`` (H, W) in [0, 1] blended on it in the jet colour
    map, enlarged ``scale`` times (nearest neighbour: every model pixel stays a visible square)."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(saliency, 0.0, 1.0))[..., :3] * 255.0
    blended = np.round((1 - ALPHA) * image.astype(np.float32) + ALPHA * colours).astype(np.uint8)
    height, width = blended.shape[:2]
    picture = Image.fromarray(blended).resize((width * scale, height * scale), Image.NEAREST)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")
    return path
