"""How well saliency maps point at the object: two scores against ground-truth bounding boxes.

- The pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"): a hit
  when the map's maximum lies within ``tolerance`` pixels of the box. The paper's 15 pixels were set
  for images of about 224 pixels; Tiny ImageNet's are 64, so the default tolerance is 15 x 64 / 224,
  rounded: 4 pixels. Where several pixels share the maximum, each counts for an equal share of the
  hit, so a uniform map scores exactly the share of the image the widened box covers.
- The energy-based pointing game (Wang et al. 2020, "Score-CAM"): the share of the map's total
  mass that falls inside the box (no tolerance). A uniform map scores the box's area share.

What a uniform map scores (``baselines``) is the bar a map must clear to say anything about the
object: many Tiny ImageNet boxes cover most of the image, so that bar is high.
Boxes are int (N, 4) as x0, y0, x1, y1, inclusive pixel coordinates of the image the map covers.
"""
from __future__ import annotations

import numpy as np

DEFAULT_TOLERANCE = 4  # pixels on 64-pixel images: Zhang et al.'s 15 px at 224 px, scaled


def box_masks(boxes, height: int, width: int, tolerance: float = 0.0) -> np.ndarray:
    """bool (N, H, W): pixels whose centre lies within ``tolerance`` pixels (Euclidean) of each box."""
    boxes = _check_boxes(boxes)
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number of pixels. Received: tolerance={tolerance!r}")
    columns = np.arange(width)[None, None, :]
    rows = np.arange(height)[None, :, None]
    x0, y0, x1, y1 = (boxes[:, index, None, None] for index in range(4))
    horizontal = np.maximum(np.maximum(x0 - columns, columns - x1), 0)
    vertical = np.maximum(np.maximum(y0 - rows, rows - y1), 0)
    return horizontal ** 2 + vertical ** 2 <= tolerance ** 2


def pointing_game(maps, boxes, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """float32 (N,) in [0, 1]: 1 where the map's maximum lies within ``tolerance`` px of the box.

    maps: float (N, H, W), any non-negative scale; ties for the maximum share the hit.
    """
    maps = _check_maps(maps, boxes)
    inside = box_masks(boxes, *maps.shape[1:], tolerance=tolerance)
    peaks = maps == maps.max(axis=(1, 2), keepdims=True)
    return ((peaks & inside).sum(axis=(1, 2)) / peaks.sum(axis=(1, 2))).astype(np.float32)


def energy_pointing_game(maps, boxes) -> np.ndarray:
    """float32 (N,) in [0, 1]: the share of each map's mass inside its box (an all-zero map counts as uniform)."""
    maps = _check_maps(maps, boxes)
    if (maps < 0).any():
        raise ValueError(f"maps must be non-negative for the energy score. Received: minimum {maps.min()}")
    inside = box_masks(boxes, *maps.shape[1:])
    total = maps.sum(axis=(1, 2))
    share = np.where(total > 0, (maps * inside).sum(axis=(1, 2)) / np.where(total > 0, total, 1.0),
                     inside.mean(axis=(1, 2)))
    return share.astype(np.float32)


def baselines(boxes, height: int, width: int, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """What a uniform map scores, per image: float32 (N,) for "pointing" and "energy"."""
    return {
        "pointing": box_masks(boxes, height, width, tolerance).mean(axis=(1, 2)).astype(np.float32),
        "energy": box_masks(boxes, height, width).mean(axis=(1, 2)).astype(np.float32),
    }


def scores(maps, boxes, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Mean pointing and energy scores of ``maps`` with the uniform-map baselines beside them."""
    maps = _check_maps(maps, boxes)
    base = baselines(boxes, *maps.shape[1:], tolerance=tolerance)
    return {
        "pointing": float(pointing_game(maps, boxes, tolerance).mean()),
        "pointing_baseline": float(base["pointing"].mean()),
        "energy": float(energy_pointing_game(maps, boxes).mean()),
        "energy_baseline": float(base["energy"].mean()),
        "images": int(len(maps)),
    }


def _check_boxes(boxes) -> np.ndarray:
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as x0, y0, x1, y1. Received: shape {boxes.shape}")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError("boxes must have x1 >= x0 and y1 >= y0")
    return boxes.astype(np.int64)


def _check_maps(maps, boxes) -> np.ndarray:
    maps = np.asarray(maps, np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W). Received: shape {maps.shape}")
    if len(maps) != len(np.asarray(boxes)):
        raise ValueError(f"maps and boxes must have the same length. Received: {len(maps)} maps, "
                         f"{len(np.asarray(boxes))} boxes")
    if not np.isfinite(maps).all():
        raise ValueError("maps must be finite")
    return maps
