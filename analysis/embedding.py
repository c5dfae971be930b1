"""t-SNE of a class sample (van der Maaten and Hinton 2008), from pixels or a trained model's features.

As in the seed report, the features are first reduced by PCA to a share of their variance (90% by
default), then embedded once per perplexity, so the grid search has a panel per value; each panel
carries its trustworthiness (Venna and Kaski 2001, ``sklearn.manifold.trustworthiness``: 1 when
every point's nearest neighbours in the embedding were near in the PCA input too), so the grid
search has a number to pick by. scikit-learn's Barnes-Hut t-SNE is used: on 2,500 Tiny ImageNet points
(413 PCA components, perplexity 30, one thread, the shared 2-core machine; benchmarks/tsne.py) it took
478 s against openTSNE's 537 s with trustworthiness 0.883 against 0.879, so openTSNE's FFT method,
which pays off on far larger samples, bought nothing here that justified a new dependency.
"""
from __future__ import annotations

import pathlib
import time

import numpy as np

TRUST_NEIGHBOURS = 10


def reduce(features: np.ndarray, variance: float = 0.9, seed: int = 0, threads: int = 1) -> np.ndarray:
    """float32 (N, k): ``features`` (N, D) projected on the fewest principal components keeping ``variance``.

    threads: BLAS threads (one by default, for the reason ``embed`` gives).
    """
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    features = np.asarray(features, np.float32).reshape(len(features), -1)
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1]. Received: variance={variance!r}")
    if variance == 1:
        return features
    with threadpool_limits(limits=threads):
        reduced = PCA(n_components=variance, svd_solver="full", random_state=seed).fit_transform(features)
    return reduced.astype(np.float32)


def embed(features: np.ndarray, perplexity: float, seed: int = 0, threads: int = 1) -> np.ndarray:
    """float32 (N, 2): the t-SNE embedding of ``features`` (N, k) at ``perplexity`` (< N).

    threads: OpenMP/BLAS threads. One by default: on the shared 2-core machine two OpenMP threads
    spin-waited for each other and one 50-point panel took 57 s instead of 3 s.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if not 0 < perplexity < len(features):
        raise ValueError(f"perplexity must be positive and below the number of points ({len(features)}). "
                         f"Received: perplexity={perplexity:g}")
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
                n_jobs=threads)
    with threadpool_limits(limits=threads):
        return tsne.fit_transform(features).astype(np.float32)


def trustworthiness(features: np.ndarray, embedding: np.ndarray, neighbours: int = TRUST_NEIGHBOURS) -> float:
    """How well the embedding keeps nearest neighbours, in [0, 1] (``sklearn.manifold.trustworthiness``)."""
    from sklearn.manifold import trustworthiness as score

    neighbours = min(neighbours, (len(features) - 1) // 2)
    return float(score(features, embedding, n_neighbors=neighbours))


def penultimate_features(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """float32 (N, F): the input of the model's last Dense layer (its logits layer) for uint8 or [0, 1] images."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(f"model {model.name!r} has no Dense layer whose input could serve as features")
    extractor = keras.Model(model.inputs, dense[-1].input, name=f"{model.name}_features")
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    return extractor.predict(images, batch_size=batch_size, verbose=0).reshape(len(images), -1)


def choose_classes(wnids: list, choice: list, seed: int = 0) -> list:
    """Class indices: ``choice`` is ["N"] (N classes drawn with ``seed``, sorted) or a list of wnids."""
    if len(choice) == 1 and choice[0].isdigit():  # a lone number is a count, even where names are digits
        count = int(choice[0])
        if not 1 <= count <= len(wnids):
            raise ValueError(f"--wnids {count}: draw between 1 and {len(wnids)} classes")
        return sorted(np.random.default_rng(seed).choice(len(wnids), count, replace=False).tolist())
    unknown = [wnid for wnid in choice if wnid not in wnids]
    if unknown:
        raise ValueError(f"unknown wnid {unknown[0]!r}; known: {', '.join(wnids[:12])}"
                         f"{', ...' if len(wnids) > 12 else ''}")
    return [wnids.index(wnid) for wnid in choice]


def explain_sample(dataset: str, *, data_path=None, classes=None, per_class=None, wnids=("5",),
                   features=("pixels",), perplexities=(5, 10, 30, 50), variance: float = 0.9, points=None,
                   seed: int = 0, threads: int = 1, out, command: str = "", progress=print) -> dict:
    """Embed the training images of the chosen classes once per (feature source, perplexity); write tsne.png/json."""
    import data
    from analysis import embedding_figures
    from common.run_folder import write_json
    from loading.run_loader import load_run

    runs = {source: load_run(source) for source in features if source != "pixels"}
    if runs and classes is None:
        # A run only knows its own classes: draw from those.
        classes = min(int(run.config.get("classes") or 200) for run in runs.values())
    split = data.load_dataset(dataset, "train", root=data_path, classes=classes, per_class=per_class)
    chosen = choose_classes(split.wnids, list(wnids), seed)
    index = np.flatnonzero(np.isin(split.labels, chosen))
    if points is not None and points < len(index):
        index = np.sort(np.random.default_rng(seed).choice(index, points, replace=False))
    images, labels = split.images[index], split.labels[index]
    names = {label: split.class_names[label].split(",")[0] for label in chosen}
    progress(f"{len(images)} training images of {len(chosen)} classes: {', '.join(names.values())}")
    rows = []
    for source in features:
        if source == "pixels":
            raw, title = images.reshape(len(images), -1).astype(np.float32) / 255.0, "pixels"
        else:
            run = runs[source]
            size = tuple(int(value) for value in run.model.inputs[0].shape[1:3])
            if size != images.shape[1:3]:
                raise ValueError(f"{source} takes {size[0]}x{size[1]} images; the data is "
                                 f"{images.shape[1]}x{images.shape[2]}")
            raw, title = penultimate_features(run.model, images), f"{run.name} features"
        reduced = reduce(raw, variance, seed, threads)
        progress(f"{title}: {raw.shape[1]} dimensions, {reduced.shape[1]} after PCA to {variance:.0%} variance")
        panels = []
        for perplexity in perplexities:
            started = time.perf_counter()
            embedding = embed(reduced, perplexity, seed, threads)
            trust = trustworthiness(reduced, embedding)
            seconds = time.perf_counter() - started
            progress(f"  perplexity {perplexity:g}: trustworthiness {trust:.3f} ({seconds:.0f} s)")
            panels.append({"perplexity": perplexity, "trustworthiness": round(trust, 4), "seconds": round(seconds, 1),
                           "embedding": embedding})
        rows.append({"features": title, "source": source, "dimensions": int(raw.shape[1]),
                     "pca_components": int(reduced.shape[1]), "panels": panels})
    out = pathlib.Path(out)
    figure = embedding_figures.draw(rows, labels, names, out / "tsne.png")
    summary = {"command": command, "dataset": dataset, "classes": [split.wnids[label] for label in chosen],
               "class_names": list(names.values()), "points": int(len(images)), "variance": variance,
               "trustworthiness_neighbours": TRUST_NEIGHBOURS, "figure": str(figure),
               "rows": [{key: value for key, value in row.items() if key != "panels"}
                        | {"panels": [{key: value for key, value in panel.items() if key != "embedding"}
                                      for panel in row["panels"]]} for row in rows]}
    write_json(out / "tsne.json", summary)
    for row in summary["rows"]:
        best = max(row["panels"], key=lambda panel: panel["trustworthiness"])
        progress(f"{row['features']}: best perplexity {best['perplexity']:g} "
                 f"(trustworthiness {best['trustworthiness']:.3f})")
    progress(f"wrote {figure} and {out / 'tsne.json'}")
    return summary
