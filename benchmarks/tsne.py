"""scikit-learn's t-SNE against openTSNE on the same points: time and trustworthiness.

    python benchmarks/tsne.py --data ../shared/data/tiny-imagenet-200 --out results/explain/tsne-backends.json

The points are the training images of --classes classes drawn with --seed (500 each: 2,500 for 5),
as pixels reduced by PCA to 90% of their variance, the input explain.py's t-SNE sees. Both libraries
run with the same perplexity, PCA initialisation and thread count. openTSNE is needed only here
(``pip install openTSNE``).
"""
from __future__ import annotations

import argparse
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from common.cli import positive_float, positive_int, run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="PATH", required=True, help="Tiny ImageNet folder or zip parts")
    parser.add_argument("--classes", type=positive_int, default=5, help="classes drawn (default: 5)")
    parser.add_argument("--perplexity", type=positive_float, default=30.0, help="t-SNE perplexity (default: 30)")
    parser.add_argument("--threads", type=positive_int, default=1, help="threads for both libraries (default: 1)")
    parser.add_argument("--seed", type=positive_int, default=1, help="seed of the class draw and both t-SNEs")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)

    import numpy as np
    import openTSNE
    import sklearn
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    import data
    from analysis import embedding
    from common.run_folder import write_json

    split = data.load_dataset("tiny-imagenet", "train", root=args.data)
    chosen = embedding.choose_classes(split.wnids, [str(args.classes)], args.seed)
    index = np.flatnonzero(np.isin(split.labels, chosen))
    points = embedding.reduce(split.images[index].reshape(len(index), -1).astype(np.float32) / 255.0, 0.9,
                              threads=args.threads)
    print(f"{len(points)} points, {points.shape[1]} PCA components")
    rows = {}
    with threadpool_limits(limits=args.threads):
        started = time.perf_counter()
        ours = TSNE(perplexity=args.perplexity, init="pca", learning_rate="auto", random_state=args.seed,
                    n_jobs=args.threads).fit_transform(points)
        rows[f"scikit-learn {sklearn.__version__} (Barnes-Hut)"] = (time.perf_counter() - started, ours)
        started = time.perf_counter()
        theirs = np.asarray(openTSNE.TSNE(perplexity=args.perplexity, initialization="pca", random_state=args.seed,
                                          n_jobs=args.threads).fit(points))
        rows[f"openTSNE {openTSNE.__version__} (FFT)"] = (time.perf_counter() - started, theirs)
    result = {"command": "python benchmarks/tsne.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, shared",
              "points": len(points), "pca_components": int(points.shape[1]), "perplexity": args.perplexity,
              "threads": args.threads, "libraries": {}}
    for name, (seconds, layout) in rows.items():
        trust = embedding.trustworthiness(points, layout)
        result["libraries"][name] = {"seconds": round(seconds, 1), "trustworthiness": round(trust, 4)}
        print(f"{name}: {seconds:.1f} s, trustworthiness {trust:.3f}")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
