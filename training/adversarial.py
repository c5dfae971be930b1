"""Adversarial training as parts of the training wrapper (TensorFlow backend).

`AttackMix` (input transform "attack_mix"): each batch, the first `fraction` of the images is replaced
by adversarial examples made from the current weights, on the replica's own device, through the
adversarial route, by attacks looked up in the attack registry (`attacks.registry`: any registered
attack, a plugin's included); when one of them declares `overfitting_guard`, the part brings the
`CatastrophicOverfittingGuard` callback. `LogitPairing` (loss term "logit_pairing").
`adversarial_parts(options)` turns train.py's adversarial options into the specs of both;
`AdversarialModel` is `wrap(base, make_parts(adversarial_parts(...)))` kept as a shorthand.
Evaluation (`test_step`) stays clean. Save `model.base`.
"""
from __future__ import annotations

import dataclasses
import math
import re

import keras
import numpy as np
import tensorflow as tf

from attacks.accuracy import accuracy
from attacks.registry import attack_names, get_attack, make_attack
from common import checks
from models import routes
from training.parts import InputTransform, LossTerm, RunContext, View, register_part
from training.wrapper import TrainingModel

ADVERSARY_PARTS = ("attack_mix", "logit_pairing")  # the parts train.py's adversarial flags make
GUARD_IMAGES = 256  # the fixed held-out batch the overfitting guard attacks after every epoch
# AdversarialConfig's field for each attack option (the registry's names) it fills.
ATTACK_SETTINGS = {"eps": "eps", "steps": "pgd_steps", "step_size": "pgd_step_size", "snr_db": "noise_snr_db"}


def parse_attack_mix(spec: str) -> dict[str, int]:
    """"fgsm:10,pgd:1" -> {"fgsm": 10, "pgd": 1}; a bare name weighs 1. Order is kept (it is the schedule's)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f'Attack mix must look like "fgsm:10,pgd:1". Received: spec={spec!r}')
    mix: dict[str, int] = {}
    for part in spec.split(","):
        match = re.fullmatch(r"\s*([a-z][a-z0-9_-]*)\s*(?::\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f'Attack mix entries look like "pgd:1". Received: {part!r} in spec={spec!r}')
        name, weight = match.group(1), int(match.group(2) or 1)
        if name not in attack_names():
            raise ValueError(f"Unknown attack {name!r} in spec={spec!r}; known: {', '.join(attack_names())}")
        if weight < 1 or name in mix:
            raise ValueError(f"Each attack appears once with weight >= 1. Received: {part!r} in spec={spec!r}")
        mix[name] = weight
    return mix


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
    """What `AdversarialModel` trains on.

    attacks: weights per registered attack (a dict, or a spec string for `parse_attack_mix`); batches
        cycle through them in order, e.g. {"fgsm": 10, "pgd": 1} = ten FGSM batches, then one PGD batch.
        "fast" is FGSM from a uniform random start in the eps-ball with step 1.25·eps (Wong et al.
        2020, "Fast is better than free: Revisiting adversarial training"); "noise" is Gaussian noise at
        `noise_snr_db`. Each attack gets the options it declares from eps, pgd_steps (its `steps`),
        pgd_step_size (its `step_size`) and noise_snr_db (its `snr_db`).
    fraction: share of each batch made adversarial: 0.5 is Kurakin et al. 2017 ("Adversarial Machine
        Learning at Scale") half-and-half, 1.0 is all-adversarial (Xie et al. 2019, "Feature Denoising
        for Improving Adversarial Robustness").
    eps: L∞ radius in [0, 1] pixel units.  pgd_steps / pgd_step_size: PGD iterations; a step size of
        None means 2.5·eps/steps (Madry et al.).
    logit_pairing: weight λ of adversarial logit pairing (Kannan et al. 2018, "Adversarial Logit
        Pairing"): λ · mean over images and logits of (clean logits − adversarial logits)².
    noise_snr_db: SNR of the "noise" attack (Gaussian-noise training).
    seed: seeds the random starts and noise; each batch folds in the step counter.
    keep_clean: add the adversarial images to the whole clean batch instead of replacing the clean
        ones they came from (with fraction 1.0: 100% adversarial + 100% clean, as AdvProp trains).
    """

    attacks: dict | str = dataclasses.field(default_factory=lambda: {"fgsm": 1})
    fraction: float = 0.5
    eps: float = 8 / 255
    pgd_steps: int = 7
    pgd_step_size: float | None = None
    logit_pairing: float = 0.0
    noise_snr_db: float | None = None
    seed: int = 0
    keep_clean: bool = False

    def __post_init__(self):
        mix = parse_attack_mix(self.attacks) if isinstance(self.attacks, str) else dict(self.attacks)
        if not mix:
            raise ValueError(f"`attacks` needs at least one attack. Received: attacks={self.attacks!r}")
        parse_attack_mix(",".join(f"{name}:{weight}" for name, weight in mix.items()))  # validates
        object.__setattr__(self, "attacks", mix)
        checks.real_in_range("fraction", self.fraction, 0.0, 1.0, low_open=True)
        checks.real_in_range("eps", self.eps, 0.0, 1.0)
        checks.positive_int("pgd_steps", self.pgd_steps)
        if self.pgd_step_size is not None:
            checks.positive_real("pgd_step_size", self.pgd_step_size)
        checks.real_in_range("logit_pairing", self.logit_pairing, 0.0, math.inf, high_open=True)
        if self.noise_snr_db is not None and math.isnan(self.noise_snr_db):
            object.__setattr__(self, "noise_snr_db", None)
        settings = self.attack_settings()
        for name in mix:
            missing = [key for key in get_attack(name).required if settings.get(key) is None]
            if missing:
                field = ATTACK_SETTINGS.get(missing[0], missing[0])
                raise ValueError(f"The {name} attack needs {field}. Received: {field}={getattr(self, field, None)!r}")

    def attack_settings(self) -> dict:
        """The settings every attack of the mix picks its declared options from."""
        return {option: getattr(self, field) for option, field in ATTACK_SETTINGS.items()}

    def schedule(self) -> tuple[str, ...]:
        """One cycle of attack names, batch by batch; weights are divided by their gcd first."""
        divisor = math.gcd(*self.attacks.values())
        return tuple(name for name, weight in self.attacks.items() for _ in range(weight // divisor))


@register_part("transform", "attack_mix")
class AttackMix(InputTransform):
    """Replaces the leading ``fraction`` of each batch by adversarial examples of this step's scheduled attack,
    made from the current weights on the replica's own device, through the adversarial route."""

    def __init__(self, **options):
        self.config = options.pop("config", None) or AdversarialConfig(**options)
        names = list(self.config.attacks)
        self._schedule_ids = [names.index(name) for name in self.config.schedule()]
        self._attacks = [make_attack(name, **self.config.attack_settings()) for name in names]
        # Counters advance once per global step whatever the number of replicas.
        self.attack_step = keras.Variable(0, dtype="int64", trainable=False, name="attack_step",
                                          aggregation="only_first_replica")
        self.attack_counts = keras.Variable([0] * len(names), dtype="int64", trainable=False,
                                            name="attack_counts", aggregation="only_first_replica")
        self.variables = [self.attack_step, self.attack_counts]

    def callbacks(self, run: RunContext) -> list:
        """The catastrophic-overfitting guard, when an attack of the mix declares that it needs one."""
        if run.val_split is None or not any(get_attack(name).overfitting_guard for name in self.config.attacks):
            return []
        # A fixed held-out batch: PGD accuracy on it collapses within an epoch when fast AT overfits.
        held_out = slice(0, min(GUARD_IMAGES, len(run.val_split)))
        return [CatastrophicOverfittingGuard(
            run.val_split.images[held_out].astype("float32") / 255.0, run.val_split.labels[held_out],
            eps=self.config.eps, step_size=self.config.eps / 4, steps=10, seed=self.config.seed)]

    def adversarial_examples(self, model, x, y):
        """Adversarial versions of (x, y) by this step's scheduled attack; advances the schedule."""
        step = self.attack_step.value
        names = list(self.config.attacks)
        schedule = tf.constant(self._schedule_ids, tf.int32)
        attack_id = tf.gather(schedule, tf.math.floormod(step, len(self._schedule_ids)))
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        seed = tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(tf.constant([self.config.seed, 0], tf.int64), step), replica_id
        )
        with routes.forward_route("adversarial"):  # the attack sees the statistics its view trains with
            branches = [lambda attack=attack: attack(model.base, x, y, seed) for attack in self._attacks]
            x_adv = tf.switch_case(attack_id, branches) if len(branches) > 1 else branches[0]()
        self.attack_counts.assign_add(tf.one_hot(attack_id, len(names), dtype="int64"))
        self.attack_step.assign_add(1)
        return tf.stop_gradient(x_adv)

    def views(self, model, x, y, step):
        batch = tf.shape(x)[0]
        count = tf.cast(tf.math.ceil(self.config.fraction * tf.cast(batch, tf.float32) - 1e-6), tf.int32)
        x_adv = self.adversarial_examples(model, x[:count], y[:count])
        replaces = 0 if self.config.keep_clean else count
        return [View("adversarial", x_adv, y[:count], route="adversarial", replaces=replaces)]


@register_part("loss", "logit_pairing")
class LogitPairing(LossTerm):
    """Adversarial logit pairing (Kannan et al. 2018, "Adversarial Logit Pairing"): λ · mean over images and
    logits of (clean logits − adversarial logits)², the clean logits those of the attacked images (taken
    from the "batch" view, which holds every clean image, the replaced ones included)."""

    views = ("adversarial", "batch")

    def __init__(self, weight: float):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError(f"`weight` must be > 0. Received: weight={weight!r}")
        self.weight = float(weight)

    def __call__(self, model, views, outputs):
        start = views["adversarial"].offset
        count = tf.shape(outputs["adversarial"])[0]
        clean_logits = outputs["batch"][start:start + count]
        difference = tf.cast(clean_logits, tf.float32) - tf.cast(outputs["adversarial"], tf.float32)
        return self.weight * tf.reduce_mean(tf.square(difference))


def adversarial_parts(options: dict) -> list[dict]:
    """Part specs for train.py's adversarial options (AdversarialConfig fields): the attack mix, and logit
    pairing when its weight is positive."""
    config = AdversarialConfig(**options)
    mix = {key: value for key, value in dataclasses.asdict(config).items() if key != "logit_pairing"}
    specs = [{"kind": "transform", "name": "attack_mix", **mix}]
    if config.logit_pairing > 0:
        specs.append({"kind": "loss", "name": "logit_pairing", "weight": config.logit_pairing})
    return specs


class AdversarialModel(TrainingModel):
    """``base`` trained on adversarial batches: the training wrapper with an attack mix (and logit pairing)."""

    def __init__(self, base: keras.Model, config: AdversarialConfig | None = None, **kwargs):
        config = config or AdversarialConfig()
        terms = [LogitPairing(config.logit_pairing)] if config.logit_pairing > 0 else []
        super().__init__(base, transforms=[AttackMix(config=config)], loss_terms=terms, **kwargs)
        self.config = config

    @property
    def attack_step(self):
        return self.transforms[0].attack_step

    @property
    def attack_counts(self):
        return self.transforms[0].attack_counts


class CatastrophicOverfittingGuard(keras.callbacks.Callback):
    """Watches PGD accuracy on a fixed held-out batch after every epoch and logs it as
    "val_pgd_accuracy" (put this callback before CSVLogger so the value lands in history.csv).

    Catastrophic overfitting (Wong et al. 2020): single-step adversarial training suddenly loses all
    PGD robustness while clean accuracy keeps rising.  A collapse is PGD accuracy below
    `collapse_ratio` × its best, or at most `near_zero` while clean accuracy is at least
    `clean_floor`.  The chosen remedy is to restore the best-robust weights (`restore_best`) and stop
    training; lowering eps instead would change the threat model mid-run.
    """

    def __init__(self, x, y, *, eps=8 / 255, step_size=2 / 255, steps=10, collapse_ratio=0.5, near_zero=0.01,
                 clean_floor=0.3, restore_best=True, seed=0, verbose=1):
        super().__init__()
        if not 0 < collapse_ratio < 1:
            raise ValueError(f"`collapse_ratio` must be in (0, 1). Received: collapse_ratio={collapse_ratio!r}")
        self.x = np.asarray(x, np.float32)
        self.y = np.asarray(y, np.int32)
        self.attack = make_attack("pgd", eps=eps, steps=steps, step_size=step_size)
        self.seed = seed
        self.collapse_ratio, self.near_zero, self.clean_floor = collapse_ratio, near_zero, clean_floor
        self.restore_best, self.verbose = restore_best, verbose
        self.best_accuracy, self.best_weights, self.best_epoch, self.collapsed_epoch = -1.0, None, None, None

    def resume_from(self, finished_epochs) -> None:
        """Take the best PGD accuracy a resumed run logged before its crash (history.csv rows), so a
        collapse right after ``--resume`` is still caught; that epoch's weights are gone."""
        logged = [(row["val_pgd_accuracy"], -row["epoch"]) for row in finished_epochs if "val_pgd_accuracy" in row]
        if logged:
            accuracy, negative_epoch = max(logged)  # the earliest epoch among equals, as in on_epoch_end
            self.best_accuracy, self.best_epoch, self.best_weights = accuracy, -negative_epoch, None

    def on_epoch_end(self, epoch, logs=None):
        # One batch: the held-out set is small, and one random start keeps the numbers as they were.
        robust = accuracy(self.model, self.x, self.y, self.attack, batch_size=len(self.x), seed=self.seed)
        clean = accuracy(self.model, self.x, self.y, batch_size=len(self.x))
        if logs is not None:
            logs["val_pgd_accuracy"] = robust
        fell = robust < self.collapse_ratio * self.best_accuracy
        vanished = robust <= self.near_zero and clean >= self.clean_floor
        collapsed = self.best_accuracy > 0 and (fell or vanished)
        if not collapsed:
            if robust > self.best_accuracy:
                self.best_accuracy, self.best_epoch = robust, epoch
                self.best_weights = self.model.get_weights() if self.restore_best else None
            return
        self.collapsed_epoch = epoch
        restored = self.restore_best and self.best_weights is not None
        if restored:
            self.model.set_weights(self.best_weights)
        self.model.stop_training = True
        if self.verbose:
            action = "restored those weights" if restored else "kept the current weights" + (
                " (the best came before the resume)" if self.restore_best else "")
            print(f"\nEpoch {epoch + 1}: PGD accuracy collapsed to {robust:.3f} (best {self.best_accuracy:.3f} "
                  f"at epoch {self.best_epoch + 1}); {action} and stopped training.")
