"""The flags for the ways of training (train.py's and tune.py's), and what they become: part specs and
builder options. A new way of training adds its flags and its translation here, next to its part;
the trainer, the wrapper and the run's config stay as they are."""
from __future__ import annotations

import argparse

from common import cli

# AdvProp (Xie et al. 2020, "Adversarial examples improve image recognition"): a weak PGD attacker is
# enough to help clean accuracy; the paper's smallest attacker, eps 1 grey level, step 1, 2 iterations.
ADVPROP = {"attacks": "pgd:1", "eps": 1 / 255, "pgd_steps": 2, "pgd_step_size": 1 / 255}
ADVERSARIAL_FLAGS = ("adv", "adv_fraction", "keep_clean", "eps", "pgd_steps", "pgd_step_size", "logit_pairing",
                     "noise_snr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    adversarial = parser.add_argument_group("adversarial and noise training")
    adversarial.add_argument("--adv", metavar="MIX", help='attack mix by weight, e.g. "fgsm:10,pgd:1" or "fast:1"')
    adversarial.add_argument("--adv-fraction", type=cli.fraction(), default=0.5,
                             help="share of each batch made adversarial, in (0, 1] (default: 0.5)")
    adversarial.add_argument("--keep-clean", action="store_true",
                             help="add the adversarial images to the whole clean batch instead of replacing some")
    adversarial.add_argument("--eps", type=cli.pixel_value, help="L-inf radius in pixels, e.g. 2/255 (default: 2/255)")
    adversarial.add_argument("--pgd-steps", type=cli.positive_int, default=7, help="PGD iterations when training")
    adversarial.add_argument("--pgd-step-size", type=cli.pixel_value, help="default: 2.5 * eps / steps")
    adversarial.add_argument("--logit-pairing", type=cli.non_negative_float, default=0.0,
                             help="adversarial logit pairing weight")
    adversarial.add_argument("--noise-snr", type=cli.finite_float, metavar="DB",
                             help="truncated-Gaussian noise training at this SNR")
    methods = parser.add_argument_group("robustness methods")
    methods.add_argument("--parseval", type=cli.positive_float, metavar="BETA",
                         help="Parseval networks: retract every kernel towards a tight frame with this beta (0.01) "
                              "and merge residual branches convexly")
    methods.add_argument("--parseval-rows", type=cli.fraction(), default=1.0,
                         help="share of kernel rows retracted per update (default: 1.0)")
    methods.add_argument("--smoothness", type=cli.positive_float, metavar="GAMMA",
                         help="Laplacian smoothness loss weight")
    methods.add_argument("--smoothness-power", type=cli.positive_int, default=2, metavar="M",
                         help="power of the Laplacian (default: 2)")
    methods.add_argument("--smoothness-k", type=cli.positive_int, metavar="K",
                         help="keep the K most similar neighbours per image (default: all)")
    methods.add_argument("--smoothness-layers", nargs="+", metavar="LAYER",
                         help="layers whose outputs enter the smoothness term (default: every block output)")
    methods.add_argument("--dual-bn", action="store_true",
                         help="dual BatchNorm: clean images use the main statistics, adversarial ones the auxiliary")
    methods.add_argument("--save-bn", choices=("main", "adv"), default="main",
                         help="with --dual-bn, adv also writes model-adv-bn.keras with the auxiliary statistics")
    methods.add_argument("--advprop", action="store_true",
                         help="AdvProp: dual BN, clean plus PGD-2 at 1/255 through the auxiliary BN (flags override)")
    monitors = parser.add_argument_group("monitors and data mixes")
    monitors.add_argument("--log-gradients", nargs="*", metavar="LAYER",
                          help="record mean |gradient| of these layers' kernels (default: first and last conv) "
                               "into gradients.csv / gradients.png")
    monitors.add_argument("--synthetic", metavar="RUN_DIR", help="a conditional-GAN run whose images join training")
    monitors.add_argument("--synthetic-fraction", type=cli.fraction(), default=0.1,
                          help="share of each batch replaced by generated images (default: 0.1)")


def adversarial_options(args) -> dict | None:
    """AdversarialConfig fields from the flags (None: clean training); refuses --eps without an attack."""
    advprop = ADVPROP if args.advprop else {}
    attacks = args.adv or advprop.get("attacks") or ("noise:1" if args.noise_snr is not None else None)
    if attacks is None:
        given = [flag for flag, value in (("--eps", args.eps), ("--keep-clean", args.keep_clean),
                                          ("--pgd-step-size", args.pgd_step_size),
                                          ("--logit-pairing", args.logit_pairing or None)) if value]
        if given:
            raise ValueError(f"{', '.join(given)} set the adversary, but no --adv, --noise-snr or --advprop is given")
        return None
    return {"attacks": attacks, "fraction": 1.0 if args.advprop else args.adv_fraction,
            "keep_clean": args.keep_clean or bool(args.advprop),
            "eps": args.eps if args.eps is not None else advprop.get("eps", 2 / 255),
            "pgd_steps": args.pgd_steps if args.adv else advprop.get("pgd_steps", args.pgd_steps),
            "pgd_step_size": args.pgd_step_size or advprop.get("pgd_step_size"),
            "logit_pairing": args.logit_pairing, "noise_snr_db": args.noise_snr, "seed": args.seed}


def part_specs(args, adversarial: bool = True) -> list[dict]:
    """The transforms, loss terms and hooks the flags ask for, the attack mix (and logit pairing) first unless
    ``adversarial`` is False (the caller then makes them from ``adversarial_options``)."""
    specs = []
    options = adversarial_options(args) if adversarial else None
    if options:
        from training.adversarial import adversarial_parts

        specs += adversarial_parts(options)
    if args.smoothness is not None:
        specs.append({"kind": "loss", "name": "laplacian_smoothness", "gamma": args.smoothness,
                      "power": args.smoothness_power, "k": args.smoothness_k,
                      "layers": list(args.smoothness_layers or [])})
    if args.log_gradients is not None:
        specs.append({"kind": "hook", "name": "gradient_monitor", "layers": list(args.log_gradients)})
    if args.synthetic:
        specs.append({"kind": "transform", "name": "synthetic", "run_dir": args.synthetic,
                      "fraction": args.synthetic_fraction, "seed": args.seed})
    if args.save_bn == "adv":
        specs.append({"kind": "hook", "name": "auxiliary_bn_model"})
    return specs


def builder_options(args) -> dict:
    """JSON-friendly builder options for the methods that change the model itself."""
    options = {}
    if args.parseval is not None:
        import keras

        from models.parseval import ParsevalConstraint

        options["conv_constraint"] = keras.constraints.serialize(
            ParsevalConstraint(beta=args.parseval, rows=args.parseval_rows, seed=args.seed))
        options["residual_merge"] = "convex"
    if args.dual_bn or args.advprop:
        options["norm_layer"] = "dual_batch_norm"
    if args.save_bn == "adv" and "norm_layer" not in options:
        raise ValueError("--save-bn adv needs --dual-bn (or --advprop)")
    return options
