"""What keying the Tiny ImageNet cache on the data costs on every load, once the split is decoded.

    ZOO_CACHE_DIR=/tmp/zoo-bench-cache .venv/bin/python benchmarks/data_cache_key.py \
        --data /work/shared/data/tiny-imagenet-200 [FOLDER ...] [--repeats 5]

For a folder source the key stats every image file (size and mtime, never its bytes) and
hashes wnids.txt and val_annotations.txt; for zips it records each zip's size and mtime and
hashes the two text files. This times each part on a cache hit, next to the whole cached load
and the old key (the path alone), for both splits. For zips, the listing, the stats and a
folder-style key are timed on the extracted files too: what a folder of the same images costs.
Loads each split once first, so the extracted files and arrays are in the cache. Writes
results/benchmarks/data_cache_key.json. TensorFlow is never imported.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUTPUT = REPO / "results" / "benchmarks" / "data_cache_key.json"


def _timed(function, repeats: int):
    """The result of the last call and the wall seconds of every call."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def _rows(data: str, split: str, repeats: int) -> list:
    from data import cache, tiny_imagenet

    tiny_imagenet.load(data, split)  # extracted and decoded before anything is timed
    layout, resolve_seconds = _timed(lambda: tiny_imagenet.resolve(data, split, None), repeats)
    wnids = tiny_imagenet._wnids(layout, None)
    if split == "train":
        list_files = lambda: [path for _, path in tiny_imagenet._train_files(layout, wnids, None)]  # noqa: E731
    else:
        list_files = lambda: tiny_imagenet._val_index(layout.meta, wnids, len(wnids), None)[0]  # noqa: E731
    paths, list_seconds = _timed(list_files, repeats)
    _, stat_seconds = _timed(lambda: cache.files_digest(paths), repeats)
    _, key_seconds = _timed(lambda: tiny_imagenet.data_identity(layout, split, wnids, None), repeats)
    # What the key costs where these same files are a plain folder (each image listed and stat-ed).
    as_folder = dataclasses.replace(layout, from_zips=False)
    _, folder_key_seconds = _timed(lambda: tiny_imagenet.data_identity(as_folder, split, wnids, None), repeats)
    _, old_seconds = _timed(lambda: cache.cache_key(source=layout.identity), repeats)
    _, load_seconds = _timed(lambda: tiny_imagenet.load(data, split), repeats)
    parts = [
        ("find the data (resolve)", resolve_seconds),
        ("list the split's image files", list_seconds),
        ("stat every image (size, mtime)", stat_seconds),
        ("the whole data identity in the key", key_seconds),
        ("the same, were these files a folder", folder_key_seconds),
        ("old key: the source path alone", old_seconds),
        ("whole cached load (key + np.load)", load_seconds),
    ]
    source = "zip parts" if layout.from_zips else "folder"
    return [{"source": source, "split": split, "part": name, "images": len(paths),
             "median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds)}
            for name, seconds in parts]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = os.environ.get("TINY_IMAGENET_SHARED", str(REPO.parent / "shared/data/tiny-imagenet-200"))
    parser.add_argument("--data", nargs="+", default=[shared],
                        help="Tiny ImageNet folders, official zips or folders of zip parts, timed in turn "
                             "(default: $TINY_IMAGENET_SHARED or ../shared)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each part (default: 5)")
    parser.add_argument("--output", default=str(OUTPUT),
                        help="JSON report (default: results/benchmarks/data_cache_key.json)")
    arguments = parser.parse_args(argv)
    if arguments.repeats < 1:
        parser.error(f"--repeats must be positive. Received: {arguments.repeats}")
    os.environ.setdefault("ZOO_CACHE_DIR", "/tmp/zoo-bench-cache")
    load_before = " ".join(f"{value:.1f}" for value in os.getloadavg())  # others' work skews wall time
    rows = []
    for data in arguments.data:
        for split in ("val", "train"):
            print(f"timing {data} {split} ({arguments.repeats} calls per part)", file=sys.stderr, flush=True)
            rows += _rows(data, split, arguments.repeats)
    header = f"{'source':<10} {'split':<6} {'part':<36} {'images':>7} {'median ms':>10} {'min ms':>8} {'max ms':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['source']:<10} {row['split']:<6} {row['part']:<36} {row['images']:>7} "
              f"{1000 * row['median_s']:>10.1f} {1000 * row['min_s']:>8.1f} {1000 * row['max_s']:>8.1f}")
    print(f"load average before: {load_before}")

    import numpy
    import PIL

    from data import cache_dir

    report = {
        "benchmark": "data_cache_key",
        "command": "ZOO_CACHE_DIR=... python benchmarks/data_cache_key.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "numpy": numpy.__version__, "pillow": PIL.__version__},
        "settings": {"data": arguments.data, "repeats": arguments.repeats, "cache_dir": str(cache_dir()),
                     "load_average_before": load_before,
                     "note": "warm file-system caches (the split was just loaded); wall seconds per call"},
        "rows": rows,
    }
    from common.run_folder import write_json

    output = pathlib.Path(arguments.output)
    write_json(output, report)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
