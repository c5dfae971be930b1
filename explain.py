"""Explain models and data: saliency against the Tiny ImageNet boxes, PCA of the whole data set, t-SNE.

    python explain.py saliency runs/tiny10-vanilla runs/tiny10-fgsm-at --out results/explain
    python explain.py pca --data ../shared/data/tiny-imagenet-200 --out results/explain
    python explain.py tsne --data ../shared/data/tiny-imagenet-200 --wnids 5 --features pixels runs/tiny10-vanilla

Outputs go into the (first) run folder's explain/ or into --out.
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

from common import cli
from common.cli import add_data_arguments, dataset_of, fraction, non_negative_int, positive_float, positive_int, run_cli

METHODS = ("vanilla", "smoothgrad", "gradcam", "gradcam++")  # analysis.saliency.METHODS, without importing TF


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{saliency,pca,tsne}")

    saliency = commands.add_parser("saliency", help="saliency maps, figures and pointing-game scores of runs",
                                   description="Saliency maps of one or more runs on their validation images, "
                                   "scored against the ground-truth boxes; several runs share one table.")
    saliency.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or .keras files) to explain")
    which = saliency.add_mutually_exclusive_group()
    which.add_argument("--images", type=positive_int, default=8, metavar="N",
                       help="images in each figure, one per class in turn (default: 8)")
    which.add_argument("--wnids", nargs="+", metavar="WNID", help="draw the figure from these classes only")
    saliency.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS),
                          help="saliency methods (default: all four)")
    saliency.add_argument("--layer", metavar="NAME", help="layer Grad-CAM reads (default: the last convolution)")
    saliency.add_argument("--noise", type=fraction(low_open=False), default=0.2,
                          help="SmoothGrad noise: std as a share of the image's value range (default: 0.2)")
    saliency.add_argument("--samples", type=positive_int, default=20, help="SmoothGrad noisy samples (default: 20)")
    saliency.add_argument("--tolerance", type=non_negative_int, default=4,
                          help="pointing-game tolerance in pixels (default: 4, i.e. 15 px at 224 px scaled to 64)")
    saliency.add_argument("--limit", type=positive_int, metavar="N",
                          help="score the first N validation images (default: all of the run's classes)")
    saliency.add_argument("--data", metavar="PATH", help="Tiny ImageNet folder or zip parts (default: the run's)")
    saliency.add_argument("--batch-size", type=positive_int, default=64, help="images per gradient batch")
    saliency.add_argument("--seed", type=non_negative_int, default=0, help="SmoothGrad noise seed (default: 0)")
    saliency.add_argument("--out", type=pathlib.Path, help="output folder (default: RUN_DIR/explain; required "
                          "for several runs)")

    pca = commands.add_parser("pca", help="retained-variance curves of the whole training set and per image",
                              description="PCA of the training images: exact eigenvalues of the pixel covariance, "
                              "accumulated in chunks from the uint8 cache, per colour channel and across channels; "
                              "and the per-image, per-channel PCA of one image at a time.")
    add_data_arguments(pca)
    pca.add_argument("--components", type=positive_int, metavar="K",
                     help="leading components to keep in the curves' JSON and plot (default: all)")
    pca.add_argument("--limit", type=positive_int, metavar="N", help="use the first N training images only")
    pca.add_argument("--per-image-sample", type=positive_int, default=2000, metavar="N",
                     help="images drawn for the per-image PCA statistics (default: 2000)")
    pca.add_argument("--chunk", type=positive_int, default=1000, help="images per covariance chunk (default: 1000)")
    pca.add_argument("--seed", type=non_negative_int, default=0, help="seed of the per-image sample (default: 0)")
    pca.add_argument("--threads", type=positive_int,
                     help="BLAS threads for the covariance (default: OpenBLAS's; the eigensolver always uses one)")
    pca.add_argument("--out", type=pathlib.Path, default=pathlib.Path("explain-pca"),
                     help="output folder (default: explain-pca)")

    tsne = commands.add_parser("tsne", help="t-SNE of a class sample: pixels and trained features, per perplexity",
                               description="PCA to a variance share, then t-SNE, one panel per perplexity and a row "
                               "per feature source, each with its trustworthiness.")
    add_data_arguments(tsne)
    tsne.add_argument("--wnids", nargs="+", default=["5"], metavar="N|WNID",
                      help="a number of classes drawn with --seed (default: 5), or the wnids themselves")
    tsne.add_argument("--features", nargs="+", default=["pixels"], metavar="pixels|RUN_DIR",
                      help="feature sources, one row each: raw pixels and/or runs' penultimate features")
    tsne.add_argument("--perplexity", nargs="+", type=positive_float, default=[5, 10, 30, 50],
                      help="t-SNE perplexities, one panel each (default: 5 10 30 50)")
    tsne.add_argument("--variance", type=fraction(), default=0.9, help="PCA variance kept first (default: 0.9)")
    tsne.add_argument("--points", type=positive_int, metavar="N", help="at most N images in all (default: every "
                      "training image of the drawn classes)")
    tsne.add_argument("--seed", type=non_negative_int, default=0, help="seed of the class draw and t-SNE")
    tsne.add_argument("--threads", type=positive_int, default=1,
                      help="t-SNE threads (default: 1; on a busy shared CPU more threads spin-wait and run slower)")
    tsne.add_argument("--out", type=pathlib.Path, help="output folder (default: the first run's explain/, else "
                      "explain-tsne)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = "python explain.py " + shlex.join(argv)
    return {"saliency": saliency, "pca": pca, "tsne": tsne}[args.command](args, command)


def saliency(args, command: str) -> int:
    import contextlib

    from common.run_folder import check_writable, hold_run_folder

    runs = [pathlib.Path(run) for run in args.runs]
    for run in runs:
        if not run.exists():
            raise FileNotFoundError(f"run not found: {run}")
    if len(runs) > 1 and args.out is None:
        raise ValueError("several runs share one table: name its folder with --out DIR")
    out = args.out or (runs[0] / "explain" if runs[0].is_dir() else runs[0].parent / "explain")
    check_writable(out)  # refused now, not after every saliency map has been computed
    # Writing into a run folder (the default): hold its lock, which also refuses links inside it (explain/).
    with hold_run_folder(runs[0]) if args.out is None and runs[0].is_dir() else contextlib.nullcontext():
        return _saliency(args, command, runs, out)


def _saliency(args, command: str, runs: list[pathlib.Path], out: pathlib.Path) -> int:
    from analysis import saliency_report
    from common.run_folder import write_json, write_text

    options = dict(noise_level=args.noise, samples=args.samples, layer=args.layer, seed=args.seed)
    results = []
    for run in runs:
        figure = out / (f"saliency-{run.stem}.png" if len(runs) > 1 or args.out else "saliency.png")
        results.append(saliency_report.explain_run(
            run, args.method, figure_path=figure, figure_images=args.images, wnids=args.wnids, limit=args.limit,
            tolerance=args.tolerance, data_path=args.data, batch_size=args.batch_size, **options))
        print(f"figure: {figure}")
    table = saliency_report.render_table(results, tolerance=args.tolerance, command=command)
    write_json(out / "saliency.json", {"command": command, "tolerance_pixels": args.tolerance, "split": "val",
                                       "label": "true class", "smoothgrad": {"noise": args.noise,
                                                                             "samples": args.samples},
                                       "runs": [result.to_json() for result in results]})
    write_text(out / "saliency.md", "# Saliency against the ground-truth boxes\n\n" + table)
    print(table)
    print(f"table: {out / 'saliency.md'} and {out / 'saliency.json'}")
    return 0


def pca(args, command: str) -> int:
    from analysis import pca_report
    from common.run_folder import check_writable

    check_writable(args.out)  # refused now, not after the covariance of the whole set
    pca_report.explain_dataset(dataset_of(args), data_path=args.data, classes=args.classes,
                               per_class=args.per_class, limit=args.limit, components=args.components,
                               per_image_sample=args.per_image_sample, chunk=args.chunk, seed=args.seed,
                               threads=args.threads, out=args.out, command=command)
    return 0


def tsne(args, command: str) -> int:
    from analysis import embedding
    from common.run_folder import check_writable

    runs = [source for source in args.features if source != "pixels"]
    out = args.out or (pathlib.Path(runs[0]) / "explain" if runs else pathlib.Path("explain-tsne"))
    check_writable(out)
    if args.out is None and runs:
        from common.run_folder import refuse_symlinks

        refuse_symlinks(runs[0])
    embedding.explain_sample(dataset_of(args), data_path=args.data, classes=args.classes, per_class=args.per_class,
                             wnids=args.wnids, features=args.features, perplexities=args.perplexity,
                             variance=args.variance, points=args.points, seed=args.seed, threads=args.threads,
                             out=out, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
