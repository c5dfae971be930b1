"""Class identifiers and readable names of a run: Tiny ImageNet's wnids and words.txt, CIFAR's and digits' names."""
from __future__ import annotations

import dataclasses
import pathlib

from data import datasets, tiny_imagenet


@dataclasses.dataclass(frozen=True)
class Classes:
    ids: list  # what a label means in the data: a wnid for Tiny ImageNet, the name itself elsewhere
    names: list  # a readable name per class

    def __len__(self) -> int:
        return len(self.ids)

    def to_text(self) -> str:
        """labels.txt: one ``id<TAB>name`` line per class, in label order."""
        return "".join(f"{class_id}\t{name}\n" for class_id, name in zip(self.ids, self.names))

    @classmethod
    def from_text(cls, text: str, where) -> "Classes":
        rows = [line.split("\t", 1) for line in text.splitlines() if line.strip()]
        if not rows or any(len(row) != 2 for row in rows):
            raise ValueError(f"{where} is not a labels file: expected one 'id<TAB>name' line per class")
        return cls([row[0] for row in rows], [row[1] for row in rows])


def numbered(count: int) -> Classes:
    """Classes of a model whose dataset is unknown (a bare .keras file): their indices."""
    return Classes([str(index) for index in range(count)], [f"class {index}" for index in range(count)])


def of_dataset(dataset: str, count: int, *, root=None) -> Classes:
    """The first ``count`` classes of ``dataset``; for Tiny ImageNet from wnids.txt and words.txt of
    ``root`` (a folder, the official zip or the zip parts; None: the official zip, downloaded once)."""
    if dataset == "tiny-imagenet":
        layout = tiny_imagenet.resolve(root, "val", None)  # the metadata only: no train part is extracted
        wnids = tiny_imagenet.read_wnids(layout.meta / "wnids.txt")[:count]
        return Classes(wnids, tiny_imagenet.read_class_names(layout.meta / "words.txt", wnids))
    names = {"cifar10": datasets.CIFAR10_CLASSES, "cifar100": datasets.CIFAR100_CLASSES}.get(
        dataset, [str(digit) for digit in range(10)])
    if dataset not in datasets.DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}. Known datasets: {', '.join(datasets.DATASETS)}")
    return Classes(names[:count], names[:count])


def of_run(config: dict, count: int, *, dataset: str | None = None, root=None) -> Classes:
    """The ``count`` classes a run's model predicts, from its config (``dataset``/``root`` override it).

    A bare model file (empty config) with no ``dataset`` gets numbered classes.
    """
    dataset = dataset or config.get("dataset") or ("tiny-imagenet" if root else None)
    if dataset is None:
        return numbered(count)
    root = root or config.get("data")
    if root is not None and not isinstance(root, (str, pathlib.Path)):
        raise ValueError(f"the run's data path must be a string. Received: data={root!r}")
    try:
        result = of_dataset(dataset, count, root=root)
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f"cannot read the class names of the run's {dataset} data: {error}; "
                          "pass --data PATH to a copy of it") from None
    if len(result) != count:
        raise ValueError(f"the model predicts {count} classes but {dataset} has {len(result)}")
    return result
