"""Checks an experiment command runs before it starts any run: a grid of runs that fails on its
first training (a negative seed, a missing data folder) has already written folders and logs, and
its error points at a log instead of naming the value.

    check_experiment(dataset="tiny-imagenet", data=args.data, classes=10, seeds=args.seeds)
"""
from __future__ import annotations

from common import checks


def check_experiment(*, dataset: str, data=None, classes: int | None = None, per_class: int | None = None,
                     seeds=(), image_size: int | None = None) -> None:
    """Raise ValueError/FileNotFoundError naming the flag if a seed or the data would fail a run.

    The data check reads the validation split the runs will read (from the decode cache after the
    first time), so a wrong path, a folder that is not the dataset or too few classes fail here."""
    for seed in seeds:
        checks.non_negative_int("--seeds", seed)
    if image_size is not None:
        from common.run_config import check_image_size

        check_image_size("--image-size", image_size, dataset=dataset, classes=classes)
    import data as datasets

    try:
        split = datasets.load_dataset(dataset, "val", root=data, classes=classes)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        raise type(error)(f"--data {data}: {error}" if data else str(error)) from None
    if classes is not None and split.num_classes < classes:
        raise ValueError(f"--classes {classes}: {dataset} at {data or 'its default location'} has only "
                         f"{split.num_classes} classes")
