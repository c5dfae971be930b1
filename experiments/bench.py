"""The bench: train and evaluate the tables' configurations on one protocol, run by run, resumable.

    python -m experiments.bench imt --data ../shared/data/tiny-imagenet-200
    python -m experiments.bench imt xie robustness --seeds 0 1 2 --data ../shared/data/tiny-imagenet-200
    python -m experiments.bench imt xie robustness --table-only
    python -m experiments.bench imt xie robustness --plan

Configurations, tables and the protocol are in experiments/robust_methods.py. Every (configuration, seed)
is trained with train.py into runs/bench/<config>-s<seed> and evaluated with evaluate.py; its numbers
(never the model) go to the committed record results/bench/runs.json with the commands, the commit and
the CPU seconds of each stage. A stage with a record is never run again, so a later invocation on another
machine continues where this one stopped; an interrupted training resumes from its run folder, an
interrupted AutoAttack pass from its checkpoints. Order: seed by seed, the baseline first, each run through
all its stages (AutoAttack, far the costliest, is skipped with --no-autoattack) before the next.
Tables go to results/bench/<table>.md.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import hashlib
import os
import pathlib
import shlex
import subprocess
import sys
import zipfile

from analysis import results_table
from common import cli
from common.cli import run_cli
from common.run_folder import read_history, read_json, write_json, write_text
from experiments.preflight import check_experiment
from experiments.robust_methods import (CLASSES, CONFIGS, EPS, EVALUATIONS, PROTOCOL, TABLES, columns, render,
                                        render_claims)

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECORDS = ROOT / "results" / "bench" / "runs.json"
STAGES = ("train", "core", "autoattack")  # each needs the model of the one before


def run(command: list[str], log: pathlib.Path, threads: int | None = None) -> tuple[int, float]:
    """Run a project script from the repository root (output appended to ``log``), with ``threads`` TensorFlow
    threads if given: (status, its CPU seconds, exact even with other runs going on beside it)."""
    print("$ python " + shlex.join(command), flush=True)
    env = None if threads is None else {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads),
                                        "TF_NUM_INTEROP_THREADS": str(threads)}
    with open(log, "a") as handle:
        process = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                   env=env)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource use, not all children's
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime


def earlier_epochs_cpu(history: pathlib.Path) -> tuple[float, bool]:
    """(CPU seconds of the epochs a run folder's history.csv already holds, whether any was estimated): each
    row's epoch_cpu_seconds, or its epoch_seconds (wall time standing in for it) in a history written before
    CPU was logged. The partial epoch a stop cut short and each process's start-up are in no row."""
    rows = read_history(history)
    estimated = any("epoch_cpu_seconds" not in row for row in rows)
    return sum(row.get("epoch_cpu_seconds", row.get("epoch_seconds", 0.0)) for row in rows), estimated


def earlier_autoattack_cpu(result: dict) -> float:
    """CPU seconds that earlier, killed processes of an evaluation spent on the AutoAttack passes it went on
    from (each pass's checkpoint carries them into its record)."""
    records = (result.get("autoattack") or {}).values()
    return sum(record.get("resumed", {}).get("cpu_seconds", 0.0) for record in records)


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def train_command(config: str, seed: int, data: str, run_dir: str) -> list[str]:
    return ["train.py", *PROTOCOL, "--data", data, *CONFIGS[config][1], "--seed", str(seed), "--run-dir", run_dir]


def evaluations(config: str, run_dir: str, stage: str, data: str) -> list[tuple[str, list[str], pathlib.Path]]:
    """(model file, evaluate.py command, its result file) of each evaluation of ``stage`` on one run: "core" one
    per model file; "autoattack" one per model file and radius, each with its own result file, so that passes
    can run side by side (a pass on a robust model takes hours)."""
    files = CONFIGS[config][2]
    as_file = ["--data", data, "--classes", str(CLASSES)]  # a bare model file carries no data settings
    if stage == "core":  # the run folder for its own model; evaluate.py's default result names
        return [(file or "model.keras",
                 ["evaluate.py", *([f"{run_dir}/{file}", *as_file] if file else [run_dir]), *EVALUATIONS[stage]],
                 ROOT / run_dir / (f"{pathlib.Path(file).stem}-robustness.json" if file else "robustness.json"))
                for file in files]
    passes = []
    for eps in EPS:  # the smaller radius first: it leaves more images to attack, so it takes longest
        for file in files:  # the model file, not the run folder, which one evaluation at a time may hold
            model = file or "model.keras"
            result = f"{run_dir}/{pathlib.Path(model).stem}-autoattack-{eps.replace('/', '_')}.json"
            passes.append((model, ["evaluate.py", f"{run_dir}/{model}", *as_file, *EVALUATIONS[stage], "--eps", eps,
                                   "--results", result], ROOT / result))
    return passes


def save(key: str, record: dict, records: dict, runs: str) -> None:
    """Merge one run's record into RECORDS under a lock, so that benches running side by side (on different
    --configs) keep each other's records; ``records`` is refreshed from the file."""
    lock_path = ROOT / runs / ".records.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records.update(read_json(RECORDS) if RECORDS.exists() else {})
        records[key] = record
        write_json(RECORDS, records)


def trained(run_dir: pathlib.Path) -> bool:
    """Whether a run folder holds a finished training (train.py writes metrics.json last)."""
    return (run_dir / "metrics.json").exists()


def new_record(config: str, seed: int) -> dict:
    return {"config": config, "seed": seed, "commands": {}, "cpu_seconds": {}, "numbers": {}}


def weights_digest(run_dir: pathlib.Path) -> str:
    """sha256 of a run's trained weights (model.keras's weights member: its other members carry the save date),
    by which a run trained again is known to be the same model."""
    with zipfile.ZipFile(run_dir / "model.keras") as archive:
        return hashlib.sha256(archive.read("model.weights.h5")).hexdigest()


def tf_threads() -> int:
    """The TensorFlow threads this bench's children get (TF_NUM_INTRAOP_THREADS; 0, as in TensorFlow: its
    default). A training is reproducible only with the same count, as threads split the sums differently."""
    value = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    return int(value) if value.isdigit() else 0


def bench_run(config: str, seed: int, stage: str, args, records: dict, retrain: bool = False) -> None:
    """Bring one (config, seed) through ``stage`` ("train", "core" or "autoattack"), saving its record.

    The earlier stages run first where they have no record. A record whose model is gone (its run folder was
    on another machine) cannot take a later stage: the run is trained again (``retrain``) with its command,
    seed and thread count. When that reproduces the recorded weights (same digest), the record stands and only
    what it lacks is run (a stage's finished evaluations included); otherwise every stage is redone, so that
    all numbers of a row come from one model, and the earlier record is kept under "superseded" (the tables
    read only the current numbers)."""
    key = f"{config}-s{seed}"
    if RECORDS.exists():  # another bench may have recorded it meanwhile
        records.update(read_json(RECORDS))
    run_dir = f"{args.runs}/{key}"
    done = records.get(key, {}).get("cpu_seconds", {})
    if stage in done and not retrain:
        return
    if stage != "train":
        model_gone = "train" in done and not trained(ROOT / run_dir)
        for earlier in STAGES[:STAGES.index(stage)]:
            bench_run(config, seed, earlier, args, records, retrain=model_gone and earlier == "train")
    record = records.setdefault(key, new_record(config, seed))
    (ROOT / run_dir).parent.mkdir(parents=True, exist_ok=True)
    if stage == "train":
        train_stage(key, record, config, seed, args, records, retrain)
    else:
        evaluation_stage(key, record, config, stage, args, records)


def train_stage(key: str, record: dict, config: str, seed: int, args, records: dict, retrain: bool) -> None:
    """Train (or resume, or adopt a trained run folder) and record it; ``retrain``: see bench_run."""
    run_dir, log = f"{args.runs}/{key}", ROOT / f"{args.runs}/{key}.log"
    # Trained again with the recorded count (a record from before counts were kept, or adopted: this bench's).
    threads = record["tf_threads"] if retrain and record.get("tf_threads") is not None else tf_threads()
    if retrain:
        recorded = record
        record = new_record(config, seed) | {"superseded": recorded.get("superseded", [])}
    # A run folder trained before this bench saw it (adopted): its code and CPU time are not known here.
    seconds, record["commit"] = None, "adopted"
    if not trained(ROOT / run_dir):
        record["commit"] = commit()  # the code the run trains with
        resume = (ROOT / run_dir / "config.json").exists()
        command = ["train.py", "--resume", run_dir] if resume else train_command(config, seed, args.data, run_dir)
        # Earlier processes of a resumed run (stopped with their sitting) are counted by their epochs.
        earlier, estimated = earlier_epochs_cpu(ROOT / run_dir / "history.csv") if resume else (0.0, False)
        status, seconds = run(command, log, threads)
        if status != 0:
            raise RuntimeError(f"training {key} failed (status {status}); see {log}")
        seconds += earlier
        if estimated:
            record["cpu_estimated"] = "train: epochs of earlier processes without a CPU figure counted by wall time"
    digest = weights_digest(ROOT / run_dir)
    if retrain and recorded.get("weights_sha256") == digest:  # the same model again: its record stands
        recorded["retrained"] = [*recorded.get("retrained", []), {"commit": record["commit"],
                                                                  "cpu_seconds": round(seconds or 0.0, 1)}]
        save(key, recorded, records, args.runs)
        return
    if retrain:
        earlier = {name: value for name, value in recorded.items() if name != "superseded"}
        earlier["superseded_because"] = f"run folder {run_dir} gone when a later stage needed its model"
        record["superseded"] = [*record["superseded"], earlier]
    metrics = read_json(ROOT / run_dir / "metrics.json")
    record["commands"]["train"] = "python " + shlex.join(train_command(config, seed, args.data, run_dir))
    record["numbers"]["model.keras"] = {"val top-1": metrics["val_top1"]}
    record["training"] = {key: metrics[key] for key in ("epochs", "best_epoch", "final_train_accuracy")}
    record["weights_sha256"], record["tf_threads"] = digest, None if seconds is None else threads  # adopted: unknown
    record["cpu_seconds"]["train"] = None if seconds is None else round(seconds, 1)
    save(key, record, records, args.runs)


def evaluation_stage(key: str, record: dict, config: str, stage: str, args, records: dict) -> None:
    """Run the evaluations of ``stage`` that the record lacks, N at a time (--jobs), recording each as it
    ends: a sitting that stops between them keeps the finished ones (for a model trained again to the same
    weights). The stage is done, with its CPU, once all are."""
    run_dir = f"{args.runs}/{key}"
    partial = record.setdefault("partial", {}).setdefault(stage, {"finished": [], "cpu_seconds": 0.0})
    passes = [one for one in evaluations(config, run_dir, stage, args.data) if one[2].name not in partial["finished"]]
    for _, _, result in passes:  # only this stage's results may be read
        result.unlink(missing_ok=True)
    # Each logs beside its result, as with --jobs N they run N at a time, the cores shared out among them.
    jobs = max(1, min(args.jobs, len(passes)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        running = {pool.submit(run, command, result.with_suffix(".log"), threads): (file, command, result)
                   for file, command, result in passes}
        try:
            record_as_they_end(key, record, stage, running, args, records)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the passes not started never start; the running ones end first
            raise
    record["cpu_seconds"][stage] = round(record["partial"].pop(stage)["cpu_seconds"], 1)
    if not record["partial"]:
        del record["partial"]
    save(key, record, records, args.runs)


def record_as_they_end(key: str, record: dict, stage: str, running: dict, args, records: dict) -> None:
    """Merge each evaluation's result into the record (numbers, checks, command, CPU) and save it as it ends."""
    partial = record["partial"][stage]
    for future in concurrent.futures.as_completed(running):
        file, command, result = running[future]
        status, spent = future.result()
        # Exit status 1 is a failed sanity check: the record is written and kept, its checks say so.
        if status not in (0, 1) or not result.exists():
            raise RuntimeError(f"evaluation {stage} of {key}/{file} failed; see {result.with_suffix('.log')}")
        found = read_json(result)
        numbers = record["numbers"].setdefault(file, {})
        numbers.update(columns(stage, found))
        if file != "model.keras" and stage == "core":
            numbers["val top-1"] = found["clean"]
        checks = record.setdefault("checks_passed", {})
        checks[f"{file} {stage}"] = checks.get(f"{file} {stage}", True) and all(
            check["passed"] for check in found["checks"])
        record["commands"].setdefault(stage, []).append("python " + shlex.join(command))
        partial["finished"].append(result.name)
        partial["cpu_seconds"] += spent + earlier_autoattack_cpu(found)
        save(key, record, records, args.runs)


def check_arguments(args) -> None:
    """Everything a long bench needs, checked before its first run (seeds are checked by the parser)."""
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds repeats a seed. Received: {args.seeds}")
    known = {config for name in args.tables for config in TABLES[name]["rows"]}
    unknown = sorted(set(args.configs or ()) - known)
    if unknown:
        raise ValueError(f"--configs {' '.join(unknown)}: not in the tables {args.tables}; known: {', '.join(sorted(known))}")
    if not (args.table_only or args.plan):  # the runs read --data from the repository root, and so does the check
        check_experiment(dataset="tiny-imagenet", data=str(ROOT / args.data), classes=CLASSES, seeds=args.seeds)


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+", choices=sorted(TABLES), help="tables to run, in this order")
    parser.add_argument("--data", default="../shared/data/tiny-imagenet-200", help="Tiny ImageNet folder or zip")
    parser.add_argument("--seeds", type=cli.non_negative_int, nargs="+", default=[0, 1, 2],
                        help="seeds (default: 0 1 2)")
    parser.add_argument("--runs", default="runs/bench", help="parent of the run folders (default: runs/bench)")
    parser.add_argument("--configs", nargs="+", metavar="CONFIG",
                        help="run only these configurations of the tables (e.g. to share a bench between machines)")
    parser.add_argument("--no-autoattack", action="store_true", help="skip the AutoAttack pass")
    parser.add_argument("--jobs", type=cli.positive_int, default=1,
                        help="evaluations of a run (one per model file; for AutoAttack, one per model file and "
                             "radius) run this many at a time, the cores shared out among them (default: 1)")
    parser.add_argument("--table-only", action="store_true", help="rebuild the tables from the records; run nothing")
    parser.add_argument("--plan", action="store_true",
                        help="print what is recorded and what is left, with the measured CPU cost; run nothing")
    args = parser.parse_args(argv)
    check_arguments(args)
    records = read_json(RECORDS) if RECORDS.exists() else {}
    if args.plan:
        print(render_plan(selected_configs(args), args.seeds, records, autoattack=not args.no_autoattack,
                          runs=ROOT / args.runs))
        return 0
    if not args.table_only:
        # Each run goes through all its stages before the next starts: a model never waits for a later
        # sitting, whose machine may not have its run folder (the run would be trained again).
        last = "core" if args.no_autoattack else "autoattack"
        for seed in args.seeds:
            for config in selected_configs(args):
                bench_run(config, seed, last, args, records)
                write_tables(records)
    write_tables(records)
    return 0


def selected_configs(args) -> list[str]:
    """The configurations of ``args.tables`` in table order, each once, limited to ``args.configs``."""
    return [config for config in dict.fromkeys(config for name in args.tables for config in TABLES[name]["rows"])
            if not args.configs or config in args.configs]


def render_plan(configs: list[str], seeds: list[int], records: dict, autoattack: bool = True,
                runs: pathlib.Path | None = None) -> str:
    """Markdown: per configuration, the seeds each stage has a record for and the measured CPU minutes of one
    run (training plus core evaluation, mean over the records that have both; and of one AutoAttack pass);
    then what is left and what the measured part of it costs. A stage never run for a configuration has no
    cost to go by and is counted apart: an AutoAttack pass costs far more on a robust model than on another.
    Given ``runs`` (the parent of the run folders), a recorded run with a stage left whose run folder is not
    there is counted as trained again first (bench_run retrains it)."""
    stages = STAGES if autoattack else STAGES[:2]
    # The stages with a cost column: a missing "train" costs a training and its core evaluation.
    costed = {"train": ("CPU min per run (train + core)", "training"),
              "autoattack": ("CPU min per AutoAttack pass", "AutoAttack")}
    costed = {stage: costed[stage] for stage in stages if stage in costed}
    lines = ["| configuration | " + " | ".join([f"{stage} (seeds)" for stage in stages]
                                               + [header for header, _ in costed.values()]) + " |",
             "| --- |" + " --- |" * len(stages) + " ---: |" * len(costed)]
    left = {stage: 0 for stage in stages}
    retrain = 0
    minutes = {stage: 0.0 for stage in costed}
    unmeasured = {stage: [] for stage in costed}

    def mean_minutes(values):
        return sum(values) / len(values) / 60 if values else None

    for config in configs:
        found = {seed: records.get(f"{config}-s{seed}", {}).get("cpu_seconds", {}) for seed in seeds}
        spent = [record.get("cpu_seconds", {}) for record in records.values() if record.get("config") == config]
        cost = {"train": mean_minutes([run["train"] + run["core"] for run in spent
                                       if run.get("train") is not None and run.get("core") is not None]),
                "autoattack": mean_minutes([run["autoattack"] for run in spent if run.get("autoattack") is not None])}
        missing = {stage: sum(stage not in found[seed] for seed in seeds) for stage in stages}
        cells = [", ".join(str(seed) for seed in seeds if stage in found[seed]) or "–" for stage in stages]
        cells += [f"{cost[stage]:.0f}" if cost[stage] else "–" for stage in costed]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
        gone = 0 if runs is None else sum(
            "train" in found[seed] and any(stage not in found[seed] for stage in stages)
            and not trained(runs / f"{config}-s{seed}") for seed in seeds)
        retrain += gone
        minutes["train"] += gone * (cost["train"] or 0.0)
        if gone and cost["train"] is None:
            unmeasured["train"].append(config)
        for stage in stages:
            left[stage] += missing[stage]
        for stage in costed:
            if missing[stage] and cost[stage] is None:
                unmeasured[stage].append(config)
            minutes[stage] += missing[stage] * (cost[stage] or 0.0)
    summary = (f"Left: {left['train']} trainings, {left['core']} core evaluations"
               + (f", {left['autoattack']} AutoAttack passes" if autoattack else "")
               + (f"; {retrain} recorded run(s) to be trained again first, their run folders gone" if retrain else "")
               + f". Measured costs of what is left: about {minutes['train'] / 60:.1f} CPU hours of training with core "
               "evaluations" + (f", {minutes['autoattack'] / 60:.1f} of AutoAttack" if autoattack else "") + ".")
    for stage, (_, label) in costed.items():
        if unmeasured[stage]:
            summary += f" Not yet measured ({label}): {', '.join(dict.fromkeys(unmeasured[stage]))}."
    return "\n".join(lines) + "\n\n" + summary


def write_tables(records: dict) -> None:
    for name in TABLES:
        path = RECORDS.parent / f"{name}.md"
        write_text(path, render(name, records, f"python -m experiments.bench {name} --table-only"))
    results = RECORDS.parent.parent
    write_text(results / "claims.md", render_claims(records))
    write_text(results / "README.md", results_table.render(results))  # its front page shows the claims
    print(f"wrote {RECORDS.parent}/{{{','.join(TABLES)}}}.md, {results / 'claims.md'} and {results / 'README.md'}",
          flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
