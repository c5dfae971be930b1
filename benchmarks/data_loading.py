"""How long Tiny ImageNet takes to extract, decode once, and reload from the uint8 cache.

    ZOO_CACHE_DIR=/tmp/zoo-bench-cache .venv/bin/python benchmarks/data_loading.py \
        --data /work/shared/data/tiny-imagenet-200 [--split train] [--per-class K]

Each phase runs in its own process so its peak memory (ru_maxrss; GNU time's too where
/usr/bin/time exists) is that phase's alone. The extracted files and cached arrays of this
split are removed first, so "first decode" really decodes. Writes
results/benchmarks/data_loading.json. TensorFlow is never imported: loading does not need it.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUTPUT = REPO / "results" / "benchmarks" / "data_loading.json"
TARGETS = {"first decode": "<= 30 s", "cached reload": "<= 3 s"}
MEMORY_TARGET_MB = 2500


def _phase(name: str, data: str, split: str, per_class) -> dict:
    """Run one phase in this process and return its measurements."""
    from data import tiny_imagenet

    start = time.perf_counter()
    if name == "extract":
        layout = tiny_imagenet.resolve(data, split, per_class)
        images = None  # val is extracted with the metadata; the decode row supplies its count
        if split == "train":
            images = sum(1 for root in layout.train_roots for _ in (root / "train").glob("*/images/*.JPEG"))
    else:
        images = len(tiny_imagenet.load(data, split, per_class=per_class))
    seconds = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    # CPU seconds of this process and its decode workers: unlike wall time, barely moved by
    # other work sharing the machine; cpu_seconds / cores bounds the wall time on idle cores.
    return {"seconds": seconds, "cpu_seconds": sum(use.ru_utime + use.ru_stime for use in usage), "images": images,
            "maxrss_mb": usage[0].ru_maxrss / 1024, "maxrss_workers_mb": usage[1].ru_maxrss / 1024}


def _run_phase(name: str, arguments) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--data", arguments.data, "--split", arguments.split]
    if arguments.per_class:
        command += ["--per-class", str(arguments.per_class)]
    gnu_time = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    if gnu_time:
        command = [gnu_time, "-v", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"phase {name} failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    row["time_v_maxrss_mb"] = int(match.group(1)) / 1024 if match else None
    return row


def _clear(cache: pathlib.Path):
    # Only what this benchmark creates: extracted files and decoded arrays under the cache.
    for name in ("tiny-imagenet-200-parts", "tiny-imagenet-200-extracted", "tiny-imagenet-200-arrays"):
        shutil.rmtree(cache / name, ignore_errors=True)


def _machine() -> dict:
    import numpy
    import PIL

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "numpy": numpy.__version__, "pillow": PIL.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("TINY_IMAGENET_SHARED",
                                                         str(REPO.parent / "shared/data/tiny-imagenet-200")),
                        help="Tiny ImageNet folder, official zip or zip parts "
                             "(default: $TINY_IMAGENET_SHARED or ../shared)")
    parser.add_argument("--split", default="train", choices=("train", "val"), help="split to load (default: train)")
    parser.add_argument("--per-class", type=int, default=None, help="images per class (default: all)")
    parser.add_argument("--phase", choices=("extract", "decode", "reload"), help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(OUTPUT),
                        help="JSON report (default: results/benchmarks/data_loading.json)")
    arguments = parser.parse_args(argv)
    os.environ.setdefault("ZOO_CACHE_DIR", "/tmp/zoo-bench-cache")
    if arguments.phase:
        print(json.dumps(_phase(arguments.phase, arguments.data, arguments.split, arguments.per_class)))
        return 0

    from data import cache_dir
    from data.decode import default_workers

    _clear(cache_dir())
    load_before = " ".join(f"{value:.1f}" for value in os.getloadavg())  # others' work skews wall time
    labels = {"extract": "extract zip parts", "decode": "first decode", "reload": "cached reload"}
    rows = []
    for phase in ("extract", "decode", "reload"):
        row = {"phase": labels[phase], **_run_phase(phase, arguments), "target": TARGETS.get(labels[phase], "")}
        rows.append(row)
    if rows[0]["images"] is None:
        rows[0]["images"] = rows[1]["images"]

    header = (f"{'phase':<18} {'seconds':>8} {'cpu s':>7} {'images':>8} {'img/s':>8} {'maxrss MB':>10} "
              f"{'workers MB':>11} {'time -v MB':>11}  target")
    print(header)
    print("-" * len(header))
    for row in rows:
        rate = row["images"] / row["seconds"] if row["seconds"] else 0
        gnu = f"{row['time_v_maxrss_mb']:.0f}" if row["time_v_maxrss_mb"] else "n/a"
        print(f"{row['phase']:<18} {row['seconds']:>8.2f} {row['cpu_seconds']:>7.1f} {row['images']:>8} {rate:>8.0f} "
              f"{row['maxrss_mb']:>10.0f} {row['maxrss_workers_mb']:>11.0f} {gnu:>11}  {row['target']}")
    print(f"peak memory target: <= {MEMORY_TARGET_MB} MB per loading process; load average before: {load_before}")

    report = {
        "benchmark": "data_loading",
        "machine": _machine(),
        "settings": {"data": arguments.data, "split": arguments.split, "per_class": arguments.per_class,
                     "cache_dir": str(cache_dir()), "decode_workers": default_workers(),
                     "load_average_before": load_before,
                     "note": "each phase in a fresh process; extracted files are in the page cache when decoding"},
        "rows": rows,
    }
    from common.run_folder import write_json

    output = pathlib.Path(arguments.output)
    write_json(output, report)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
