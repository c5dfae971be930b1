"""Write results/README.md: one row per recorded run, next to the seed's number for that model.

    python -m analysis.results_table runs/alphanet_v4-20261123-101500 [RUN_DIR ...]

Each run given is recorded as results/runs/<run>.json (its config and metrics, small and
committed), then the table is rebuilt from every record, so README numbers always come from
a run someone can repeat with the command in the table.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from common.cli import run_cli
from common.run_folder import read_json, write_json, write_text

RESULTS = pathlib.Path("results")


def record_run(run_dir: str | pathlib.Path, results: pathlib.Path = RESULTS) -> pathlib.Path:
    run_dir = pathlib.Path(run_dir)
    config, metrics = read_json(run_dir / "config.json"), read_json(run_dir / "metrics.json")
    records = results / "runs"
    records.mkdir(parents=True, exist_ok=True)
    path = records / f"{run_dir.name}.json"
    write_json(path, {"run": run_dir.name, "config": config, "metrics": metrics})
    return path


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _data_label(config: dict) -> str:
    parts = [config["dataset"]]
    if config.get("classes"):
        parts.append(f"{config['classes']} classes")
    if config.get("per_class"):
        parts.append(f"{config['per_class']}/class")
    return ", ".join(parts)


def render(results: pathlib.Path = RESULTS) -> str:
    records = [read_json(path) for path in sorted((results / "runs").glob("*.json"))]
    lines = [
        "# Results",
        "",
        "Every row is a run of `train.py`; rebuild this page with",
        "`python -m analysis.results_table RUN_DIR...` (records live in `results/runs/`).",
        "The seed column is the accuracy the model's source report gives for full Tiny ImageNet-200",
        "(— where the report gives none); small-scale rows are not comparable to it one to one.",
        "Seconds per epoch are wall-clock on the machine that ran the command (a 2-core CPU here).",
        "",
        "| run | model | data | epochs | val top-1 % | top-3 % | top-5 % | s/epoch | seed top-1 % | command |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for record in records:
        config, metrics = record["config"], record["metrics"]
        recipe = config["recipe"]
        lines.append(
            f"| {record['run']} | {config['model']} | {_data_label(config)} | {metrics['epochs']} "
            f"| {_percent(metrics['val_top1'])} | {_percent(metrics['val_top3'])} | {_percent(metrics['val_top5'])} "
            f"| {metrics['seconds_per_epoch']:.1f} | {_percent(recipe.get('reported_val_accuracy'))} "
            f"| `{config.get('command', '')}` |"
        )
    claims = results / "claims.md"
    if claims.exists():  # the reports' claims belong on the front page; their file keeps the title
        body = claims.read_text().split("\n", 1)[-1].strip()
        lines += ["", "## The reports' claims, judged on the bench", "", body]
    extra = sorted(path for path in results.glob("*.md") if path.name != "README.md" and not path.name.startswith("."))
    if extra:
        lines += ["", "## More tables", ""] + [f"- [{path.stem}]({path.name})" for path in extra]
    # A folder of results (a table with its figures and commands) is listed by its own README or tables.
    folders = [(folder, sorted(folder.glob("*.md"))) for folder in sorted(results.iterdir())
               if folder.is_dir() and not folder.name.startswith(".")]
    folders = [(folder, pages) for folder, pages in folders if pages]
    if folders:
        lines += ["", "## Result folders", ""]
        for folder, pages in folders:
            readme = [page for page in pages if page.name == "README.md"]
            shown = readme or pages
            lines.append(f"- {folder.name}/: " + ", ".join(
                f"[{page.stem}]({folder.name}/{page.name})" for page in shown))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="finished runs to record")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS, help="results folder (default: results)")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        print(f"recorded {record_run(run_dir, args.results)}")
    page = render(args.results)
    write_text(args.results / "README.md", page)
    print(f"wrote {args.results / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
