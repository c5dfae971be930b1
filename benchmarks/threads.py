"""What a second TensorFlow thread buys on a CPU: train_step.py's rows under 1 thread and under --threads.

    python benchmarks/threads.py [--threads 2] [--only "PGD-7-AT (50%)"] [--steps 3] [--repeats 4]

Runs benchmarks/train_step.py (resnet18_maxpool, 32×32, batch 128) twice, one process after the other: with
one TensorFlow thread (TF_NUM_INTRAOP_THREADS = TF_NUM_INTEROP_THREADS = 1) and with --threads. Prints, per
configuration, images/s (median wall time) and CPU ms per image under each, and the ratio of the CPU per
image, --threads ÷ 1 (the baseline): above 1, the threads spend CPU on each other, and the same cores do
more as single-threaded processes side by side (the bench's --jobs). The wall-time ratio is printed too,
but on a quota-throttled machine wall time snaps to scheduling periods, so the CPU ratio is the one to go
by. Writes results/benchmarks/train_step-threads.json with `ratios.<name>_cpu_<N>_threads_over_1` and
`ratios.<name>_speedup_<N>_threads` (wall, 1 ÷ N).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.cli import positive_int, run_cli  # noqa: E402
from common.run_folder import write_json  # noqa: E402

OUTPUT = REPO / "results" / "benchmarks" / "train_step-threads.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_int, default=2, help="threads to compare with 1 (default: 2)")
    parser.add_argument("--only", nargs="+", default=["PGD-7-AT (50%)"], metavar="NAME",
                        help="train_step.py configurations besides its two clean ones (default: PGD-7-AT (50%%))")
    parser.add_argument("--steps", type=positive_int, default=3, help="steps per timed epoch (default: 3)")
    parser.add_argument("--repeats", type=positive_int, default=4, help="timed epochs (default: 4)")
    parser.add_argument("--out", type=pathlib.Path, default=OUTPUT, help=f"JSON output (default: {OUTPUT})")
    return parser.parse_args(argv)


def measure(threads: int, arguments, folder: pathlib.Path) -> dict:
    """train_step.py's JSON under ``threads`` TensorFlow threads."""
    out = folder / f"threads-{threads}.json"
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, str(REPO / "benchmarks" / "train_step.py"), "--image-size", "32", "--batch-size",
               "128", "--steps", str(arguments.steps), "--repeats", str(arguments.repeats), "--only", *arguments.only,
               "--out", str(out)]
    print(f"measuring with {threads} thread(s) ...", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main(argv=None) -> int:
    arguments = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        one, many = (measure(threads, arguments, pathlib.Path(folder)) for threads in (1, arguments.threads))
    n = arguments.threads
    names = list(one["images_per_second"])
    ratios = {}
    print(f"\n| configuration | images/s, 1 thread | images/s, {n} | CPU ms/image, 1 | CPU ms/image, {n} | "
          f"CPU {n} ÷ 1 | speed-up (wall) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        cpu = many["cpu_seconds_per_image"][name] / one["cpu_seconds_per_image"][name]
        speedup = many["images_per_second"][name] / one["images_per_second"][name]
        ratios[f"{name}_cpu_{n}_threads_over_1"], ratios[f"{name}_speedup_{n}_threads"] = cpu, speedup
        print(f"| {name} | {one['images_per_second'][name]:.1f} | {many['images_per_second'][name]:.1f} | "
              f"{1000 * one['cpu_seconds_per_image'][name]:.2f} | {1000 * many['cpu_seconds_per_image'][name]:.2f} | "
              f"{cpu:.2f}x | {speedup:.2f}x |")
    payload = {"benchmark": "train_step_threads", "baseline": "1 TensorFlow thread", "threads": n,
               "machine": many["machine"],  # train_step.py's own description, at the end of the later run
               "runs": {"1": one, str(n): many}, "ratios": ratios,
               "command": "python benchmarks/threads.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_json(arguments.out, payload)
    print(f"\nwrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
