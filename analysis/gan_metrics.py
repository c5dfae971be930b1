"""How good are generated images? Measures that need no downloaded weights.

FID and KID are computed in the penultimate feature space of a classifier trained in this project
(the input of its ``logits`` layer), not Inception-v3's: the numbers compare GANs scored with the same
classifier, never with published FIDs.

- FID (Heusel et al., 2017): ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between Gaussians
  fitted to the two feature sets. Biased for small sets: compare only at equal sample counts.
- KID (Bińkowski et al., 2018): the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged
  over random subsets; unbiased at any sample count.
- diversity: the mean pairwise distance of generated images' features within each class, over the
  same for real images; near 0 when a generator collapses to few images per class (mode collapse).
- GAN-test and GAN-train (Shmelkov et al., "How good is my GAN?", ECCV 2018): a classifier trained on
  real images tested on generated ones (for a conditional GAN, the accuracy with which the requested
  class is recognised), and a classifier trained on generated images tested on real val.
"""
from __future__ import annotations

import pathlib

import keras
import numpy as np

from common.checks import positive_int


def penultimate_model(classifier: keras.Model) -> keras.Model:
    """images float32 (B, H, W, 3) in [0, 1] -> the features the classifier's last layer (its logits
    Dense) reads, float32 (B, D)."""
    last = classifier.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"the classifier {classifier.name!r} does not end in a Dense logits layer "
                         f"(its last layer is {type(last).__name__}); FID needs its penultimate features")
    return keras.Model(classifier.inputs, last.input, name=f"{classifier.name}_features")


def features(extractor: keras.Model, images, batch_size: int = 256) -> np.ndarray:
    """float64 (N, D) features of float32 (N, H, W, 3) images in [0, 1] (resized to the extractor's input)."""
    return np.asarray(extractor.predict(fit_to(extractor, images), batch_size=batch_size, verbose=0),
                      np.float64).reshape(len(images), -1)


def fit_to(model: keras.Model, images) -> np.ndarray:
    """float32 images resized (bilinear) to ``model``'s input size when it has a fixed, different one:
    a 64x64 generator scored by a classifier trained at 32x32 (digits) or 72x72."""
    images = np.asarray(images, np.float32)
    size = tuple(model.inputs[0].shape[1:3])
    if None in size or size == images.shape[1:3]:
        return images
    return np.clip(keras.ops.convert_to_numpy(keras.ops.image.resize(images, size)), 0.0, 1.0)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two float (N, D) feature sets (N >= 2 each); 0 for identical sets."""
    features_a, features_b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if features_a.ndim != 2 or features_a.shape[1:] != features_b.shape[1:] or min(len(features_a),
                                                                                     len(features_b)) < 2:
        raise ValueError("FID needs two (N, D) feature sets of the same D with N >= 2. "
                         f"Received: {features_a.shape} and {features_b.shape}")
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    covariance_a, covariance_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    trace = np.trace(covariance_a) + np.trace(covariance_b) - 2.0 * _trace_sqrt_product(features_a, features_b)
    return float(max(np.sum((mean_a - mean_b) ** 2) + trace, 0.0))


def _trace_sqrt_product(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Tr (C_a C_b)^(1/2) for the sample covariances of two (N, D) sets, without a matrix square root.

    With centred X_a (m, D), X_b (n, D): C_a C_b = X_a' X_a X_b' X_b / ((m-1)(n-1)), whose non-zero
    eigenvalues are those of M M' for M = X_a X_b' / sqrt((m-1)(n-1)); so the trace is M's nuclear norm
    (an (m, n) SVD, cheap when a set is smaller than D, as per-epoch scores are). Otherwise it is the sum
    of sqrt(eigenvalues of C_a^(1/2) C_b C_a^(1/2)). Both are real by construction, unlike round-off in
    scipy.linalg.sqrtm, and many times faster than its Schur form of a 1024x1024 product."""
    centred_a, centred_b = features_a - features_a.mean(0), features_b - features_b.mean(0)
    m, n, dimensions = len(features_a), len(features_b), features_a.shape[1]
    if min(m, n) < dimensions:
        cross = centred_a @ centred_b.T / np.sqrt((m - 1) * (n - 1))
        return float(np.sum(np.linalg.svd(cross, compute_uv=False)))
    values, vectors = np.linalg.eigh(centred_a.T @ centred_a / (m - 1))
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ (centred_b.T @ centred_b / (n - 1)) @ root_a)
    return float(np.sum(np.sqrt(np.clip(middle, 0.0, None))))


def polynomial_kernel(features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """KID's kernel (x.y / D + 1)^3 between every row of (M, D) and (N, D): float64 (M, N)."""
    return (features_a @ features_b.T / features_a.shape[1] + 1.0) ** 3


def mmd2_unbiased(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The unbiased estimator of MMD^2 under ``polynomial_kernel`` (diagonal terms left out)."""
    m, n = len(features_a), len(features_b)
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set. Received: {m} and {n}")
    kernel_aa = polynomial_kernel(features_a, features_a)
    kernel_bb = polynomial_kernel(features_b, features_b)
    kernel_ab = polynomial_kernel(features_a, features_b)
    return float((kernel_aa.sum() - np.trace(kernel_aa)) / (m * (m - 1))
                 + (kernel_bb.sum() - np.trace(kernel_bb)) / (n * (n - 1)) - 2.0 * kernel_ab.mean())


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray, *, subsets: int = 10,
                              subset_size: int = 100, seed: int = 0) -> tuple[float, float]:
    """KID as (mean, std) of ``mmd2_unbiased`` over ``subsets`` random subsets of each set."""
    features_a, features_b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    size = min(positive_int("subset_size", subset_size), len(features_a), len(features_b))
    generator = np.random.default_rng(seed)
    values = [mmd2_unbiased(features_a[generator.choice(len(features_a), size, replace=False)],
                            features_b[generator.choice(len(features_b), size, replace=False)])
              for _ in range(positive_int("subsets", subsets))]
    return float(np.mean(values)), float(np.std(values))


def generator_signature(generator: keras.Model) -> tuple[int, bool]:
    """(latent_dim, conditional) of a generator built by models.gan."""
    return int(generator.inputs[0].shape[-1]), len(generator.inputs) == 2


def generate(generator: keras.Model, count: int, *, num_classes: int | None = None, seed: int = 0,
             batch_size: int = 256):
    """``count`` images float32 (count, S, S, 3) in [0, 1] and their int32 labels (classes drawn in turn,
    0, 1, ..., so every class gets count/num_classes), or None for an unconditional generator."""
    latent_dim, conditional = generator_signature(generator)
    noise = keras.ops.convert_to_numpy(keras.random.normal((positive_int("count", count), latent_dim), seed=seed))
    batch_size = min(batch_size, count)  # one batch size for every call: predict traces once
    if not conditional:
        return np.asarray(generator.predict(noise, batch_size=batch_size, verbose=0), np.float32), None
    if num_classes is None:
        num_classes = int(generator.get_layer("label_embedding").input_dim)
    labels = (np.arange(count) % num_classes).astype(np.int32)
    images = generator.predict([noise, labels], batch_size=batch_size, verbose=0)
    return np.asarray(images, np.float32), labels


def classifier_accuracy(classifier: keras.Model, images: np.ndarray, labels: np.ndarray,
                        batch_size: int = 256) -> float:
    """Top-1 accuracy of ``classifier`` on float32 [0, 1] images; on generated images with the requested
    classes as labels this is GAN-test."""
    logits = classifier.predict(fit_to(classifier, images), batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))


def mean_pairwise_distance(features: np.ndarray, labels: np.ndarray | None = None) -> float:
    """The mean Euclidean distance between the rows of float (N, D) ``features``; with int ``labels``,
    between rows of the same label, averaged over labels (those with at least 2 rows)."""
    features = np.asarray(features, np.float64)
    groups = [features] if labels is None else [features[np.asarray(labels) == label] for label in np.unique(labels)]
    means = []
    for group in (group for group in groups if len(group) >= 2):
        squared = np.sum(group ** 2, axis=1)
        distances = np.sqrt(np.clip(squared[:, None] + squared[None, :] - 2.0 * group @ group.T, 0.0, None))
        means.append(distances[np.triu_indices(len(group), 1)].mean())
    if not means:
        raise ValueError(f"diversity needs at least 2 images of one class. Received: {len(features)} images")
    return float(np.mean(means))


class FeatureScorer:
    """``scorer(generator) -> {"fid", "kid", "diversity", ["gan_test"]}`` against fixed real images: what
    the GAN trainer logs after each epoch. ``diversity`` is the generated images' mean pairwise feature
    distance within each class over the real images' (``real_labels``; over all images for a dcgan).
    One forward pass gives both the features and the logits, and the two-output model is built once,
    so no epoch retraces it."""

    def __init__(self, classifier: keras.Model, real_images: np.ndarray, *, real_labels: np.ndarray | None = None,
                 samples: int = 500, seed: int = 0, num_classes: int | None = None):
        self.classifier, self.seed, self.num_classes = classifier, seed, num_classes
        # A seeded subset, not the first images: a split stored class by class would give few classes.
        chosen = np.sort(np.random.default_rng(seed).permutation(len(real_images))[:positive_int("samples", samples)])
        self.samples = len(chosen)
        self.extractor = penultimate_model(classifier)
        self.both = keras.Model(classifier.inputs, [self.extractor.outputs[0], classifier.outputs[0]])
        self.real_features = features(self.extractor, np.asarray(real_images)[chosen])
        self.real_labels = None if real_labels is None else np.asarray(real_labels)[chosen]

    def __call__(self, generator: keras.Model) -> dict:
        images, labels = generate(generator, self.samples, num_classes=self.num_classes, seed=self.seed)
        fake_features, logits = self.both.predict(fit_to(self.both, images), batch_size=self.samples, verbose=0)
        fake_features = np.asarray(fake_features, np.float64).reshape(len(images), -1)
        kid_mean, _ = kernel_inception_distance(self.real_features, fake_features,
                                                subset_size=min(100, self.samples), seed=self.seed)
        per_class = labels is not None and self.real_labels is not None
        real_spread = mean_pairwise_distance(self.real_features, self.real_labels if per_class else None)
        fake_spread = mean_pairwise_distance(fake_features, labels if per_class else None)
        scores = {"fid": frechet_distance(self.real_features, fake_features), "kid": kid_mean,
                  "diversity": fake_spread / max(real_spread, 1e-12)}
        if labels is not None:
            scores["gan_test"] = float(np.mean(np.argmax(logits, axis=-1) == labels))
        return scores


def check_judge(judge, gan_config: dict, gan_run: str = "the GAN run") -> None:
    """A judging classifier (a ``loading.run_loader.LoadedRun``) must know the GAN's dataset and classes:
    ValueError naming both otherwise (a Tiny ImageNet judge scores digits at chance, meaninglessly)."""
    judge_dataset = (judge.config or {}).get("dataset")
    if judge_dataset is not None and judge_dataset != gan_config.get("dataset"):
        raise ValueError(f"the classifier {judge.name} was trained on {judge_dataset}, {gan_run} on "
                         f"{gan_config.get('dataset')}: pass a classifier of the same dataset")
    outputs, num_classes = int(judge.model.outputs[0].shape[-1]), gan_config.get("num_classes")
    if num_classes is not None and outputs != num_classes:
        raise ValueError(f"the classifier {judge.name} has {outputs} classes, {gan_run} {num_classes}: "
                         "train both on the same --classes")


def check_generator(generator: keras.Model, gan_config: dict, path) -> None:
    """A conditional generator must embed as many classes as its run's config names."""
    _, conditional = generator_signature(generator)
    num_classes = gan_config.get("num_classes")
    if conditional and num_classes is not None:
        embedded = int(generator.get_layer("label_embedding").input_dim)
        if embedded != num_classes:
            raise ValueError(f"{path} embeds {embedded} classes but its config.json names {num_classes}: "
                             "the run folder and its generator disagree")


def train_and_test(train_images, train_labels, val_images, val_labels, *, num_classes: int,
                   model_name: str = "alphanet_v4", epochs: int = 3, batch_size: int = 64, seed: int = 0) -> float:
    """Val accuracy of a zoo model trained from scratch on the given images (Adam 1e-3, no augmentation):
    GAN-train when the training images are generated, its real-data reference when they are real."""
    import models

    keras.utils.set_random_seed(seed)
    model = models.build(model_name, num_classes=num_classes, input_shape=tuple(train_images.shape[1:]))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(np.asarray(train_images, np.float32), np.asarray(train_labels), epochs=positive_int("epochs", epochs),
              batch_size=batch_size, shuffle=True, verbose=0)
    return classifier_accuracy(model, val_images, val_labels)


def score_gan_run(gan_run: str | pathlib.Path, classifier_run: str | pathlib.Path | None = None, *,
                  samples: int = 500, gan_train_model: str | None = None, gan_train_epochs: int = 3, seed: int = 0,
                  data_path: str | None = None) -> dict:
    """FID, KID, diversity and GAN-test of ``gan_run``'s generator against the val split of its own data,
    in ``classifier_run``'s feature space (default: the run's own judge/); with ``gan_train_model`` also
    GAN-train and its real reference (the same model trained on as many real training images)."""
    from common.run_folder import read_json
    from loading.run_loader import load_model, load_run, load_split

    gan_run = pathlib.Path(gan_run)
    if not (gan_run / "config.json").is_file():
        raise FileNotFoundError(f"{gan_run} is not a GAN run folder: it has no config.json")
    config = read_json(gan_run / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{gan_run / 'config.json'}: not a JSON object")
    if classifier_run is None:
        if not (gan_run / "judge" / "model.keras").is_file():
            raise ValueError(f"{gan_run} has no judge/ classifier: pass --classifier RUN_DIR")
        classifier_run = gan_run / "judge"
    generator = load_model(gan_run / "generator.keras")
    check_generator(generator, config, gan_run / "generator.keras")
    judge = load_run(classifier_run)
    check_judge(judge, config, str(gan_run))
    classifier = judge.model
    size = int(generator.outputs[0].shape[1])
    val = load_split(config, "val", image_size=(size, size), data_path=data_path)
    val_images = val.images.astype(np.float32) / 255.0
    scorer = FeatureScorer(classifier, val_images, real_labels=val.labels, samples=min(samples, len(val_images)),
                           seed=seed, num_classes=config.get("num_classes"))
    result = {"gan_run": str(gan_run), "classifier_run": str(classifier_run), "samples": scorer.samples,
              "real_reference": f"{scorer.samples} val images", **scorer(generator)}
    result["classifier_val_accuracy"] = classifier_accuracy(classifier, val_images, val.labels)
    if gan_train_model is not None and generator_signature(generator)[1]:
        train = load_split(config, "train", image_size=(size, size), data_path=data_path,
                           per_class=config.get("per_class"))
        images, labels = generate(generator, len(train), num_classes=val.num_classes, seed=seed + 1)
        options = dict(num_classes=val.num_classes, model_name=gan_train_model, epochs=gan_train_epochs, seed=seed)
        result["gan_train"] = train_and_test(images, labels, val_images, val.labels, **options)
        result["real_train"] = train_and_test(train.images.astype(np.float32) / 255.0, train.labels, val_images,
                                              val.labels, **options)
        result.update(gan_train_model=gan_train_model, gan_train_epochs=gan_train_epochs,
                      gan_train_images=len(train))
    return result
