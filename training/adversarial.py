"""Adversarial training inside `model.fit` (TensorFlow backend).

`AdversarialModel` wraps a plain classifier and overrides `train_step`: each batch, the first
`fraction` of the images is replaced by adversarial examples made from the current weights, on the
replica's own device, and the model trains on the mix.  Evaluation (`test_step`) stays clean.

Saving: `AdversarialModel` is a training-time wrapper without a config of its own; save and load
`adversarial_model.base`, the plain functional model that holds every weight.
"""
from __future__ import annotations

import dataclasses
import math
import re

import keras
import tensorflow as tf

from augment import attacks

ATTACKS = ("fgsm", "pgd", "fast", "noise")


def parse_attack_mix(spec: str) -> dict[str, int]:
    """"fgsm:10,pgd:1" -> {"fgsm": 10, "pgd": 1}; a bare name weighs 1. Order is kept (it is the schedule's)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f'Attack mix must look like "fgsm:10,pgd:1". Received: spec={spec!r}')
    mix: dict[str, int] = {}
    for part in spec.split(","):
        match = re.fullmatch(r"\s*([a-z]+)\s*(?::\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f'Attack mix entries look like "pgd:1". Received: {part!r} in spec={spec!r}')
        name, weight = match.group(1), int(match.group(2) or 1)
        if name not in ATTACKS:
            raise ValueError(f"Unknown attack {name!r} in spec={spec!r}; known: {', '.join(ATTACKS)}")
        if weight < 1 or name in mix:
            raise ValueError(f"Each attack appears once with weight >= 1. Received: {part!r} in spec={spec!r}")
        mix[name] = weight
    return mix


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
    """What `AdversarialModel` trains on.

    attacks: weights per attack (a dict, or a spec string for `parse_attack_mix`); batches cycle
        through them in order, e.g. {"fgsm": 10, "pgd": 1} = ten FGSM batches, then one PGD batch.
        "fast" is FGSM from a uniform random start in the eps-ball with step 1.25·eps (Wong et al.
        2020, "Fast is better than free: Revisiting adversarial training"); "noise" is Gaussian noise at
        `noise_snr_db`.
    fraction: share of each batch made adversarial: 0.5 is Kurakin et al. 2017 ("Adversarial Machine
        Learning at Scale") half-and-half, 1.0 is all-adversarial (Xie et al. 2019, "Feature Denoising
        for Improving Adversarial Robustness").
    eps: L∞ radius in [0, 1] pixel units.  pgd_steps / pgd_step_size: PGD iterations; a step size of
        None means 2.5·eps/steps (Madry et al.).
    logit_pairing: weight λ of adversarial logit pairing (Kannan et al. 2018, "Adversarial Logit
        Pairing"): λ · mean over images and logits of (clean logits − adversarial logits)².
    noise_snr_db: SNR of the "noise" attack (Gaussian-noise training).
    seed: seeds the random starts and noise; each batch folds in the step counter.
    """

    attacks: dict | str = dataclasses.field(default_factory=lambda: {"fgsm": 1})
    fraction: float = 0.5
    eps: float = 8 / 255
    pgd_steps: int = 7
    pgd_step_size: float | None = None
    logit_pairing: float = 0.0
    noise_snr_db: float | None = None
    seed: int = 0

    def __post_init__(self):
        mix = parse_attack_mix(self.attacks) if isinstance(self.attacks, str) else dict(self.attacks)
        if not mix:
            raise ValueError(f"`attacks` needs at least one attack. Received: attacks={self.attacks!r}")
        parse_attack_mix(",".join(f"{name}:{weight}" for name, weight in mix.items()))  # validates
        object.__setattr__(self, "attacks", mix)
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ValueError(f"`fraction` must be in (0, 1]. Received: fraction={self.fraction!r}")
        if not (isinstance(self.eps, (int, float)) and 0 <= self.eps <= 1):
            raise ValueError(f"`eps` must be in [0, 1]. Received: eps={self.eps!r}")
        if not (isinstance(self.pgd_steps, int) and self.pgd_steps >= 1):
            raise ValueError(f"`pgd_steps` must be an integer >= 1. Received: pgd_steps={self.pgd_steps!r}")
        if self.pgd_step_size is not None and not self.pgd_step_size > 0:
            raise ValueError(f"`pgd_step_size` must be > 0 or None. Received: pgd_step_size={self.pgd_step_size!r}")
        if not (isinstance(self.logit_pairing, (int, float)) and self.logit_pairing >= 0):
            raise ValueError(f"`logit_pairing` must be >= 0. Received: logit_pairing={self.logit_pairing!r}")
        if "noise" in mix and (self.noise_snr_db is None or math.isnan(self.noise_snr_db)):
            raise ValueError(f"The noise attack needs noise_snr_db. Received: noise_snr_db={self.noise_snr_db!r}")

    @property
    def step_size(self) -> float:
        return self.pgd_step_size if self.pgd_step_size is not None else 2.5 * self.eps / self.pgd_steps

    def schedule(self) -> tuple[str, ...]:
        """One cycle of attack names, batch by batch; weights are divided by their gcd first."""
        divisor = math.gcd(*self.attacks.values())
        return tuple(name for name, weight in self.attacks.items() for _ in range(weight // divisor))


class AdversarialModel(keras.Model):
    """`base` trained on adversarial batches; `call` is `base`'s, so predict/evaluate are unchanged."""

    def __init__(self, base: keras.Model, config: AdversarialConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(base, keras.Model):
            raise ValueError(f"`base` must be a keras.Model. Received: base={base!r}")
        self.base = base
        self.config = config or AdversarialConfig()
        names = list(self.config.attacks)
        self._schedule_ids = [names.index(name) for name in self.config.schedule()]
        # Counters advance once per global step whatever the number of replicas.
        self.attack_step = keras.Variable(0, dtype="int64", trainable=False, name="attack_step",
                                          aggregation="only_first_replica")
        self.attack_counts = keras.Variable([0] * len(names), dtype="int64", trainable=False,
                                            name="attack_counts", aggregation="only_first_replica")

    def call(self, inputs, training=False):
        return self.base(inputs, training=training)

    # ------------------------------------------------------------------------------- attacks
    def _attack(self, name, x, y, seed):
        config = self.config
        if name == "noise":
            return attacks.gaussian_noise(x, snr_db=config.noise_snr_db, seed=seed)
        if name == "fgsm":
            return attacks.fgsm(self.base, x, y, eps=config.eps)
        if name == "fast":
            return attacks.pgd(self.base, x, y, eps=config.eps, step_size=1.25 * config.eps, steps=1, seed=seed)
        return attacks.pgd(self.base, x, y, eps=config.eps, step_size=config.step_size,
                           steps=config.pgd_steps, seed=seed)

    def adversarial_examples(self, x, y):
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
        branches = [lambda name=name: self._attack(name, x, y, seed) for name in names]
        x_adv = tf.switch_case(attack_id, branches) if len(branches) > 1 else branches[0]()
        self.attack_counts.assign_add(tf.one_hot(attack_id, len(names), dtype="int64"))
        self.attack_step.assign_add(1)
        return tf.stop_gradient(x_adv)

    # ---------------------------------------------------------------------------- train step
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        batch = tf.shape(x)[0]
        count = tf.cast(tf.math.ceil(self.config.fraction * tf.cast(batch, tf.float32) - 1e-6), tf.int32)
        x_adv = self.adversarial_examples(x[:count], y[:count])
        pairing = self.config.logit_pairing > 0
        # With pairing, the clean versions of the attacked images go through the same forward pass.
        inputs = tf.concat([x_adv, x] if pairing else [x_adv, x[count:]], axis=0)
        with tf.GradientTape() as tape:
            logits = self(inputs, training=True)
            y_pred = tf.concat([logits[:count], logits[2 * count:]], 0) if pairing else logits
            loss = self.compute_loss(x=inputs, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            if pairing:
                loss += self.pairing_loss(logits[count:2 * count], logits[:count])
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:
            if metric.name == "loss":
                # compute_loss divided by the replica count (global-batch mean); the metric wants the mean.
                metric.update_state(loss * replicas, sample_weight=batch)
        return self.compute_metrics(inputs, y, y_pred, sample_weight=sample_weight)

    def pairing_loss(self, clean_logits, adversarial_logits):
        """λ · mean squared logit difference, divided by the replica count like keras' losses."""
        difference = tf.cast(clean_logits, tf.float32) - tf.cast(adversarial_logits, tf.float32)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return self.config.logit_pairing * tf.reduce_mean(tf.square(difference)) / replicas


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
        self.x = tf.convert_to_tensor(x, tf.float32)
        self.y = tf.convert_to_tensor(y, tf.int32)
        self.attack = dict(eps=eps, step_size=step_size, steps=steps, seed=seed)
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

    def _accuracy(self, images):
        predicted = tf.argmax(self.model(images, training=False), axis=-1, output_type=tf.int32)
        return float(tf.reduce_mean(tf.cast(predicted == self.y, tf.float32)))

    def on_epoch_end(self, epoch, logs=None):
        robust = self._accuracy(attacks.pgd(self.model, self.x, self.y, **self.attack))
        clean = self._accuracy(self.x)
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
