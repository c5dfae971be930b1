"""The CIS680 report's adversarial images: push an image toward a wrong class until the model gives that
class 99%, then retrain with such images of the training set added under their true labels.

Images are float32 (N, H, W, 3) in [0, 1]; labels and targets int32 (N,).
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from experiments.cis680_runs import run_state

TARGET_MODES = ("next", "random")


def choose_targets(labels, num_classes: int, mode: str = "next", seed: int = 0) -> np.ndarray:
    """A wrong class per image: the next class (the report's airplane→automobile→bird chain) or a random one."""
    labels = np.asarray(labels, dtype=np.int64)
    if mode not in TARGET_MODES:
        raise ValueError(f"--target must be one of {TARGET_MODES}. Received: target={mode!r}")
    if num_classes < 2:
        raise ValueError(f"A wrong target class needs at least 2 classes. Received: num_classes={num_classes}")
    if mode == "next":
        return ((labels + 1) % num_classes).astype(np.int32)
    offsets = np.random.default_rng(seed).integers(1, num_classes, size=len(labels))
    return ((labels + offsets) % num_classes).astype(np.int32)


@dataclasses.dataclass
class Generated:
    """The adversarial images of a batch and what it took to make them."""

    images: np.ndarray  # float32 (N, H, W, 3) in [0, 1]
    steps: np.ndarray  # int32 (N,): sign steps taken
    success: np.ndarray  # bool (N,): p(target) >= confidence at the end
    p_true: np.ndarray  # float (N,): p(true class) on the original
    p_target: np.ndarray  # float (N,): p(target) on the adversarial image
    linf: np.ndarray  # float (N,): max |adversarial - original|, in [0, 1] units
    l2: np.ndarray  # float (N,): ||adversarial - original||_2, in [0, 1] units


def generate(model, images, labels, targets, *, confidence: float, step_size: float, max_steps: int,
             batch_size: int = 256) -> Generated:
    """``attacks.core.targeted_until_confident`` over ``images`` in batches, with the sizes it needed."""
    import tensorflow as tf

    from attacks.core import targeted_until_confident

    pieces = []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        target = tf.convert_to_tensor(targets[start:start + batch_size], tf.int32)
        label = np.asarray(labels[start:start + batch_size])
        before = tf.nn.softmax(model(x, training=False)).numpy()
        adversarial, steps, success = targeted_until_confident(model, x, target, confidence=confidence,
                                                               step_size=step_size, max_steps=max_steps)
        after = tf.nn.softmax(model(adversarial, training=False)).numpy()
        difference = (adversarial - x).numpy().reshape(len(label), -1)
        rows = np.arange(len(label))
        pieces.append((adversarial.numpy(), steps.numpy(), success.numpy(), before[rows, label],
                       after[rows, target.numpy()], np.abs(difference).max(1), np.linalg.norm(difference, axis=1)))
    return Generated(*(np.concatenate(column) for column in zip(*pieces)))


def with_added_images(split, images, labels):
    """``split`` with float [0, 1] ``images`` (stored as uint8, like every split) added under ``labels``."""
    from data.split import Split

    stored = np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
    return Split(np.concatenate([split.images, stored]), np.concatenate([split.labels, labels]).astype(np.int32),
                 split.wnids, split.class_names)


def train_on_split(config, train_split, val_split, run_dir: pathlib.Path, label: str) -> pathlib.Path:
    """``training.trainer.train`` on a given training split, resumable, reusing a finished run."""
    state = run_state(config, run_dir)
    if state == "finished":
        print(f"{label}: reusing the finished run {run_dir}", flush=True)
        return run_dir
    print(f"{label}: {'resuming' if state == 'unfinished' else 'training'} {run_dir}", flush=True)
    from training import trainer

    trainer.train(config, run_dir, resume=state == "unfinished", splits=(train_split, val_split),
                  plot_title=f"{config.model} on {config.dataset} + adversarial images")
    return run_dir


def robustness(model, images, labels, *, eps: float, pgd_steps: int, seed: int) -> dict:
    """Clean and L∞ PGD accuracy on held-out images (``attacks.accuracy``)."""
    from attacks.accuracy import accuracy

    return {"clean": accuracy(model, images, labels),
            "pgd": accuracy(model, images, labels, "pgd", seed=seed, eps=eps, steps=pgd_steps)}


def _shown_images(model, split, count: int):
    """Indices of the first ``count`` held-out images the model classifies correctly (the report shows
    images it got right before the attack)."""
    images = split.images.astype("float32") / 255.0
    predicted = np.argmax(model.predict(images, batch_size=256, verbose=0), axis=-1)
    correct = np.flatnonzero(predicted == split.labels)
    if len(correct) == 0:
        raise ValueError("The trained model classifies no held-out image correctly: train it longer (--epochs)")
    return correct[:count]


def _pair_rows(split, indices, targets, made: Generated) -> list[list[str]]:
    names = split.class_names
    return [[str(index), names[split.labels[index]], names[target], f"{p_true:.3f}", str(steps),
             "yes" if success else "**no**", f"{p_target:.3f}", f"{255 * linf:.1f}", f"{l2:.3f}"]
            for index, target, p_true, steps, success, p_target, linf, l2 in zip(
                indices, targets, made.p_true, made.steps, made.success, made.p_target, made.linf, made.l2)]


def _size_summary(made: Generated) -> dict:
    reached = made.success
    return {"images": int(len(reached)), "reached": int(reached.sum()),
            "median_steps": float(np.median(made.steps[reached])) if reached.any() else None,
            "mean_linf_255": float(255 * made.linf[reached].mean()) if reached.any() else None,
            "mean_l2": float(made.l2[reached].mean()) if reached.any() else None}


def run_experiment(args, scale, out: pathlib.Path, runs_dir: pathlib.Path, command: str) -> None:
    """Per seed: a baseline run, adversarial images of N test images (figures, first seed) and of the training
    set, a retrain with the latter added, and clean/PGD test accuracy of both; then the tables."""
    from loading.run_loader import load_model
    from common.run_folder import write_json
    from experiments import cis680_figures as figures
    from experiments.cis680_runs import cell, make_config, markdown_table, train_run, write_report
    from training import run_setup

    attack = dict(confidence=args.confidence, step_size=args.step_size, max_steps=args.max_steps)
    pair_rows, sizes, scores = [], {"test": [], "train": []}, {"baseline": [], "with adversarial images": []}
    added_counts = []
    for seed in args.seeds:
        config = make_config(args.model, scale, seed, command=command)
        baseline_dir = train_run(config, runs_dir / f"baseline-seed{seed}", f"[baseline, seed {seed}]")
        model = load_model(baseline_dir / "model.keras")
        train_split, val_split = run_setup.load_splits(config)
        shown = _shown_images(model, val_split, args.images)
        shown_targets = choose_targets(val_split.labels[shown], val_split.num_classes, args.target, seed)
        print(f"[seed {seed}] adversarial images of {len(shown)} test images", flush=True)
        made = generate(model, val_split.images[shown] / 255.0, val_split.labels[shown], shown_targets, **attack)
        sizes["test"].append(_size_summary(made))
        if seed == args.seeds[0]:
            pair_rows = _pair_rows(val_split, shown, shown_targets, made)
            for number, (index, target) in enumerate(zip(shown, shown_targets)):
                figures.pair_figure(val_split.images[index] / 255.0, made.images[number],
                                    true_name=val_split.class_names[val_split.labels[index]],
                                    target_name=val_split.class_names[target], p_true=made.p_true[number],
                                    p_target=made.p_target[number], steps=int(made.steps[number]),
                                    success=bool(made.success[number]), out_png=out / "pairs" / f"pair-{number}.png")
        count = min(args.train_images or len(train_split), len(train_split))
        chosen = np.sort(np.random.default_rng(seed).permutation(len(train_split))[:count])
        train_targets = choose_targets(train_split.labels[chosen], train_split.num_classes, args.target, seed)
        print(f"[seed {seed}] adversarial images of {count} training images", flush=True)
        made_train = generate(model, train_split.images[chosen] / 255.0, train_split.labels[chosen], train_targets,
                              **attack)
        sizes["train"].append(_size_summary(made_train))
        reached = made_train.success
        added_counts.append(int(reached.sum()))
        augmented = with_added_images(train_split, made_train.images[reached], train_split.labels[chosen][reached])
        retrained_dir = train_on_split(config, augmented, val_split, runs_dir / f"with-adversarial-seed{seed}",
                                       f"[with adversarial images, seed {seed}]")
        write_json(retrained_dir / "added_images.json", {**attack, "target": args.target,
                                                         "baseline": str(baseline_dir), **sizes["train"][-1]})
        images, labels = val_split.images / 255.0, val_split.labels
        for name, folder in (("baseline", baseline_dir), ("with adversarial images", retrained_dir)):
            print(f"[seed {seed}] clean and PGD-{args.pgd_steps} accuracy of {name}", flush=True)
            scores[name].append(robustness(load_model(folder / "model.keras"), images, labels, eps=args.eps,
                                           pgd_steps=args.pgd_steps, seed=seed))
    _write_tables(args, scale, out, command, pair_rows, sizes, scores, added_counts, cell, markdown_table,
                  write_report)


def _write_tables(args, scale, out, command, pair_rows, sizes, scores, added_counts, cell, markdown_table,
                  write_report) -> None:
    eps_label = f"{round(args.eps * 255)}/255"
    pairs = markdown_table(["test image", "class", "target", "p(class) before", "steps", f"p ≥ {args.confidence}",
                            "p(target) after", "L∞ (/255)", "L2"], pair_rows)
    size_rows = [[where, f"{sum(s['reached'] for s in group)} / {sum(s['images'] for s in group)}",
                  cell([s["median_steps"] for s in group], "number"),
                  cell([s["mean_linf_255"] for s in group], "number"),
                  cell([s["mean_l2"] for s in group], "number")] for where, group in sizes.items()]
    size_table = markdown_table(["images", "reached the target", "median steps", "mean L∞ (/255)", "mean L2"],
                                size_rows)
    score_rows = [[name, cell([s["clean"] for s in group]), cell([s["pgd"] for s in group])]
                  for name, group in scores.items()]
    score_table = markdown_table(["model", "clean test accuracy (%)", f"PGD-{args.pgd_steps} accuracy at "
                                  f"{eps_label} (%)"], score_rows)
    seeds = ", ".join(str(seed) for seed in args.seeds)
    table = (f"Shown pairs (seed {args.seeds[0]}; figures in [pairs/](pairs/)):\n\n{pairs}\n"
             f"Size of the perturbations that reached the target (seeds {seeds}):\n\n{size_table}\n"
             f"Retraining with the training set's adversarial images added under their true labels "
             f"({', '.join(map(str, added_counts))} images added; seeds {seeds}; best checkpoint by test accuracy):"
             f"\n\n{score_table}")
    notes = (f"Targets: {'the next class' if args.target == 'next' else 'a random wrong class'}; sign steps of "
             f"{round(args.step_size * 255, 2)}/255 until p(target) ≥ {args.confidence} (at most {args.max_steps} "
             "steps; an image that never gets there is reported as failed and not added). Added images are "
             "stored as uint8 like every training image. The report (CIFAR-10) saw test accuracy fall from "
             "69.17% to 68.4% after adding its adversarial images.\n")
    write_report(out, "adversarial-images", f"Targeted adversarial images ({args.model})", scale, command, table,
                 notes, {"pairs": pair_rows, "sizes": sizes, "scores": scores, "added": added_counts})
