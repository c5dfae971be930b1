"""AutoAttack (Croce & Hein 2020): a fixed composition of attacks and a per-image worst-case ledger.

The standard version runs APGD-CE, APGD-T (9 targets) and Square (5000 queries), each only on the images
no earlier attack broke; an image counts as robust only if every attack failed on it. The ledger says
each attack's accuracy, how many images it was the first to break, and how long it took; the worst-case
images are checked again at the end (inside the eps-ball, in [0, 1], and re-predicted), so a book-keeping
bug cannot make a model look robust. FAB-T, optional in the reference, is not implemented and the result
says so. Square needs no gradient: if it breaks more images than the white-box attacks, the gradients
are probably masked, and the result is flagged.

On a CPU a pass on a robust model takes hours, so it can keep a checkpoint: where it stands is saved
after an attacked batch (at most once a minute), and a pass started again with the same model, images
and settings goes on from there, with the result an uninterrupted pass gives (each batch's attack has a
fixed seed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time
import zipfile

import numpy as np
import tensorflow as tf

from attacks.registry import make_attack
from common.checks import eps_label, non_negative_int, positive_int, real_in_range
from common.run_folder import atomic_path

VERSIONS = {"standard": ("apgd-ce", "apgd-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "square")
WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-t")
RAND_EOT = 20  # gradient samples per step in the "rand" version (the reference's eot_iter)
FAB_NOTE = "FAB-T not run (optional in the reference; not implemented here)"
# The reference's budgets; a run with less says so in its record.
STANDARD_BUDGET = {"steps": 100, "targets": 9, "queries": 5000}


def _describe(name, settings):
    steps, eot = settings["steps"], settings["eot"]
    suffix = f", EOT {eot}" if eot > 1 else ""
    return {"apgd-ce": f"APGD, cross-entropy, {steps} steps, 1 restart{suffix}",
            "apgd-dlr": f"APGD, DLR loss, {steps} steps, 1 restart{suffix}",
            "apgd-t": f"APGD-T, targeted DLR, {steps} steps, {settings['targets']} targets",
            "square": f"Square, {settings['queries']} queries, p_init {settings['p_init']:g}"}[name]


def _budget(names, settings):
    """"standard", or which budgets are below the reference's (APGD steps, APGD-T targets, Square queries)."""
    used = {"steps": any(name.startswith("apgd") for name in names), "targets": "apgd-t" in names,
            "queries": "square" in names}
    words = {"steps": "APGD steps", "targets": "APGD-T targets", "queries": "Square queries"}
    reduced = [f"{words[key]} {settings[key]} (standard {value})" for key, value in STANDARD_BUDGET.items()
               if used[key] and settings[key] < value]
    return "reduced: " + ", ".join(reduced) if reduced else "standard"


# Each component's own fixed seed: the search's seed plus this offset.
SEED_OFFSETS = {"apgd-ce": 0, "apgd-dlr": 1, "apgd-t": 2, "square": 3}


def _component(name, settings):
    """attack(model, x, y) for one component, looked up in the attack registry with its own fixed seed."""
    attack = make_attack(name, **{key: settings[key] for key in ("eps", "norm", "steps", "targets", "queries",
                                                                   "p_init", "eot")})
    seed = settings["seed"] + SEED_OFFSETS[name]
    return lambda model, x, y: attack(model, x, y, seed)


# A checkpoint is written at most this often (seconds): a killed pass loses little more than the batch under
# way, and saving the images costs nothing next to the attacks.
CHECKPOINT_EVERY = 60.0


def checkpoint_path(prefix: pathlib.Path, eps: float | str) -> pathlib.Path:
    """The checkpoint of the pass at ``eps`` (a radius, or its label as in the results: "2/255") for results
    written as ``prefix``.json (e.g. RUN/robustness)."""
    label = eps if isinstance(eps, str) else eps_label(eps)
    return prefix.with_name(f"{prefix.name}-autoattack-{label.replace('/', '_')}.partial.npz")


def remove_checkpoints(prefix: pathlib.Path, eps_values) -> None:
    """Delete the checkpoints of the passes at ``eps_values`` (radii or labels): once their results are
    written they are spent (another radius's, of a pass still to be finished, stays)."""
    for eps in eps_values:
        checkpoint_path(prefix, eps).unlink(missing_ok=True)


@dataclasses.dataclass
class _Progress:
    """Where a pass stands: everything a killed pass needs to go on exactly where it stopped."""
    robust: np.ndarray  # per image: clean-correct and not broken by a finished attack
    worst: np.ndarray  # per image: its worst case so far (the clean image until an attack breaks it)
    ledger: list  # the finished attacks' rows
    position: int = 0  # the attack under way (index in the composition)
    begin: int = 0  # how many of its chosen images it has attacked ...
    adversarial: np.ndarray | None = None  # ... their adversarial images
    broken: np.ndarray | None = None  # ... and whether each is misclassified
    # What earlier processes spent: wall time on the attack under way and on the pass, CPU time on the pass.
    attack_seconds: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def save(self, path: pathlib.Path, fingerprint: str) -> None:
        meta = {key: getattr(self, key) for key in ("ledger", "position", "begin", "attack_seconds", "seconds",
                                                     "cpu_seconds")}
        partial = {} if self.adversarial is None else {"adversarial": self.adversarial, "broken": self.broken}
        with atomic_path(path) as temporary:
            np.savez(temporary, robust=self.robust, worst=self.worst, **partial,
                     meta=np.array(json.dumps({**meta, "fingerprint": fingerprint})))

    @classmethod
    def load(cls, path: pathlib.Path, fingerprint: str, log) -> "_Progress | None":
        """The progress saved at ``path``, or None (with a line to ``log``) when there is none that fits."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as saved:
                meta = json.loads(str(saved["meta"]))
                arrays = {key: saved[key] for key in saved.files if key != "meta"}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            _say(log, f"autoattack: checkpoint {path} is unreadable ({error}): starting afresh")
            return None
        if meta.pop("fingerprint") != fingerprint:
            _say(log, f"autoattack: checkpoint {path} is of another model, images or settings: starting afresh")
            return None
        return cls(**arrays, **meta)


def _say(log, line):
    if log:
        log(line)


def _fingerprint(model, images, labels, names, settings, standalone, batch_size) -> str:
    """What a pass's result depends on; the batch size too, as each batch is attacked with the same seed."""
    digest = hashlib.sha256(json.dumps([list(names), settings, standalone, batch_size], sort_keys=True).encode())
    for array in (images, labels, *model.get_weights()):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _predict(model, images, batch_size):
    return np.concatenate([np.argmax(model(tf.convert_to_tensor(images[start:start + batch_size]), training=False),
                                     axis=-1) for start in range(0, len(images), batch_size)])


def autoattack(model, images, labels, *, eps, norm="inf", version="standard", components=None, steps=100,
               targets=9, queries=5000, p_init=0.8, seed=0, batch_size=128, standalone=False, log=None,
               checkpoint=None) -> dict:
    """Run AutoAttack on float32 images (N, H, W, C) in [0, 1] with int labels (N,); returns a
    RobustBench-style dict (threat model, eps label, clean and robust accuracy, images, seconds, the
    attacks' versions) with the ledger.

    `version` "standard" (APGD-CE, APGD-T, Square), "rand" (APGD-CE and APGD-DLR with EOT over 20
    samples, for randomised models) or "custom" (`components`, in order). `standalone=True` runs every
    component on every clean-correct image, so each column is that attack's own accuracy (slower).
    `checkpoint` (a .npz path): save progress there, and go on from it when it holds a pass of this model,
    images and settings; the caller removes it once the result is stored (``remove_checkpoints``).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    if version not in (*VERSIONS, "custom"):
        raise ValueError(f'`version` must be "standard", "rand" or "custom". Received: version={version!r}')
    if version == "custom":
        if not components:
            raise ValueError("version='custom' needs `components`, e.g. ['apgd-ce', 'square']")
        unknown = [name for name in components if name not in COMPONENTS]
        if unknown or len(set(components)) != len(components):
            raise ValueError(f"`components` must be distinct names from {', '.join(COMPONENTS)}. "
                             f"Received: components={list(components)}")
        names = tuple(components)
    elif components:
        raise ValueError(f"`components` are only for version='custom'. Received: version={version!r}")
    else:
        names = VERSIONS[version]
    real_in_range("eps", eps, 0.0, 1.0)
    settings = dict(eps=float(eps), norm=norm, steps=positive_int("steps", steps),
                    targets=positive_int("targets", targets), queries=positive_int("queries", queries),
                    p_init=float(p_init), seed=non_negative_int("seed", seed), eot=RAND_EOT if version == "rand" else 1)
    batch_size = positive_int("batch_size", batch_size)
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels).astype(np.int32)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"images and labels must be non-empty and of one length. Received: {len(images)} images, "
                         f"{len(labels)} labels")

    clean_correct = _predict(model, images, batch_size) == labels
    loaded = None
    if checkpoint is not None:
        checkpoint = pathlib.Path(checkpoint)
        fingerprint = _fingerprint(model, images, labels, names, settings, standalone, batch_size)
        loaded = _Progress.load(checkpoint, fingerprint, log)
    progress = loaded or _Progress(robust=clean_correct.copy(), worst=images.copy(), ledger=[])
    earlier = {"seconds": progress.seconds, "cpu_seconds": progress.cpu_seconds}
    if loaded is not None:
        where = (f"{names[progress.position]} has attacked {progress.begin} images"
                 if progress.position < len(names) else "every attack has finished")
        _say(log, f"autoattack {eps_label(eps)}: going on from {checkpoint} ({where}; {progress.seconds:.0f} s of "
                  "earlier work)")
    started -= progress.seconds  # the pass's wall time counts its earlier processes'
    saved_at = time.perf_counter()

    def save_if_due(finished_attack=False):
        # A finished attack is always saved (a few per pass): a kill then never repeats a whole attack.
        nonlocal saved_at
        if checkpoint is None or (not finished_attack and time.perf_counter() - saved_at < CHECKPOINT_EVERY):
            return
        progress.seconds = time.perf_counter() - started
        progress.cpu_seconds = earlier["cpu_seconds"] + time.process_time() - cpu_started
        progress.save(checkpoint, fingerprint)
        saved_at = time.perf_counter()

    robust, worst, ledger = progress.robust, progress.worst, progress.ledger
    for position, name in enumerate(names):
        if position < progress.position:
            continue  # finished in an earlier process
        attack = _component(name, settings)
        start = time.perf_counter() - progress.attack_seconds
        chosen = np.flatnonzero(clean_correct if standalone else robust)
        if progress.adversarial is None:  # the attack starts now, not from a checkpoint
            progress.begin, progress.broken = 0, np.zeros(len(chosen), bool)
            progress.adversarial = np.empty((len(chosen), *images.shape[1:]), np.float32)
        adversarial, broken = progress.adversarial, progress.broken
        for begin in range(progress.begin, len(chosen), batch_size):
            index = chosen[begin:begin + batch_size]
            x_adv = np.asarray(attack(model, tf.convert_to_tensor(images[index]), tf.convert_to_tensor(labels[index])))
            adversarial[begin:begin + len(index)] = x_adv
            broken[begin:begin + len(index)] = _predict(model, x_adv, batch_size) != labels[index]
            progress.begin, progress.attack_seconds = begin + len(index), time.perf_counter() - start
            save_if_due()
        newly = broken & robust[chosen]
        worst[chosen[newly]] = adversarial[newly]
        robust[chosen[newly]] = False
        row = {"attack": name, "version": _describe(name, settings), "attacked": int(len(chosen)),
               "broken": int(broken.sum()), "first_broken": int(newly.sum()),
               "accuracy_after": float(robust.mean()), "seconds": time.perf_counter() - start}
        if standalone or not ledger:  # the first attack always sees every clean-correct image
            row["accuracy"] = float((clean_correct.sum() - broken.sum()) / len(images))
        ledger.append(row)
        progress.position, progress.begin, progress.attack_seconds = position + 1, 0, 0.0
        progress.adversarial = progress.broken = None
        save_if_due(finished_attack=True)
        _say(log, f"autoattack {eps_label(eps)}: {name} broke {row['first_broken']} more, robust "
                  f"{100 * row['accuracy_after']:.1f}% ({row['seconds']:.1f} s)")

    delta = np.abs(worst - images).reshape(len(images), -1)
    largest = float(delta.max()) if norm in ("inf", np.inf) else float(np.sqrt((delta ** 2).sum(axis=1)).max())
    verified = float(np.mean(_predict(model, worst, batch_size) == labels))
    white = sum(row["broken" if standalone else "first_broken"] for row in ledger if row["attack"] in WHITE_BOX)
    white_best = max((row["broken"] for row in ledger if row["attack"] in WHITE_BOX), default=0)
    square_rows = [row for row in ledger if row["attack"] == "square"]
    square_broken = square_rows[0]["broken" if standalone else "first_broken"] if square_rows else 0
    result = {
        "threat_model": "Linf" if norm in ("inf", np.inf) else "L2", "eps": eps_label(eps), "version": version,
        "components": list(names), "mode": "standalone" if standalone else "cascade",
        "clean_acc": float(clean_correct.mean()), "autoattack_acc": float(robust.mean()),
        "verified_acc": verified, "n_images": int(len(images)), "seconds": time.perf_counter() - started,
        "attack_versions": {name: _describe(name, settings) for name in names}, "ledger": ledger,
        "fab_t": FAB_NOTE, "max_perturbation": largest, "budget": _budget(names, settings),
        "within_threat_model": bool(largest <= eps + 1e-6 and worst.min() >= 0.0 and worst.max() <= 1.0),
        "possible_gradient_masking": bool(square_broken > (white_best if standalone else white)),
    }
    if loaded is not None:  # what earlier processes spent: their wall time is in "seconds" too, their CPU only here
        result["resumed"] = {"from": str(checkpoint), **earlier}
    return result
