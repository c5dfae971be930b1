"""The one return type every dataset reader shares."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset, held as uint8 images.

    images: uint8 (N, H, W, 3); labels: int32 (N,) indexing ``wnids``;
    wnids: class ids in label order (``wnids.txt`` order for Tiny ImageNet);
    class_names: a readable name per class; boxes: int32 (N, 4) as x0, y0, x1, y1
    in pixels of the stored image, or None where the dataset has none.
    """

    images: np.ndarray
    labels: np.ndarray
    wnids: list
    class_names: list
    boxes: np.ndarray | None = None

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError("Split images must be uint8 (N, H, W, 3). "
                             f"Received: {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"Split labels must have shape ({len(self.images)},). Received: {self.labels.shape}")

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    @property
    def image_shape(self) -> tuple:
        return tuple(int(d) for d in self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)
