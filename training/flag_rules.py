"""train.py's flags that would do nothing where they are given: each is refused in one line, never
silently dropped (a user who asks for 3 PGD steps on an FGSM run believes they got them).

A flag counts as given when its value differs from the parser's default (giving a default explicitly
changes nothing, so it needs no refusal)."""
from __future__ import annotations

import argparse


def refuse_ignored_flags(args: argparse.Namespace, defaults: argparse.Namespace) -> None:
    """Raise ValueError naming the first flag that the other flags make meaningless."""
    from attacks.registry import get_attack
    from training.adversarial import parse_attack_mix

    def given(name: str) -> bool:
        return getattr(args, name) != getattr(defaults, name)

    mix = set(parse_attack_mix(args.adv)) if args.adv else ({"pgd"} if args.advprop else set())
    if args.noise_snr is not None and not args.adv and not args.advprop:
        mix = {"noise"}
    attack = f"--adv {args.adv}" if args.adv else "--advprop" if args.advprop else "no attack"
    declared = {option for name in mix for option in get_attack(name).options}  # what the attacks take
    rules = [
        (given("parseval_rows") and args.parseval is None, "--parseval-rows needs --parseval"),
        *((given(name) and args.smoothness is None, f"--{name.replace('_', '-')} needs --smoothness")
          for name in ("smoothness_power", "smoothness_k", "smoothness_layers")),
        (given("synthetic_fraction") and not args.synthetic, "--synthetic-fraction needs --synthetic"),
        (given("adv_fraction") and not mix, "--adv-fraction needs an attack (--adv or --noise-snr)"),
        (given("adv_fraction") and args.advprop and not args.adv,
         "--advprop attacks the whole batch beside the clean one; --adv-fraction does not apply to it"),
        (given("pgd_steps") and "steps" not in declared,
         f"--pgd-steps applies to a PGD attack, and {attack} has none"),
        (args.pgd_step_size is not None and "step_size" not in declared,
         f"--pgd-step-size applies to a PGD attack, and {attack} has none"),
        (args.noise_snr is not None and "snr_db" not in declared,
         f"--noise-snr sets the noise attack's SNR, and {attack} has no noise: add noise:W to --adv"),
        (args.dual_bn and not mix, "--dual-bn routes adversarial images through their own BN statistics; "
                                   "with no attack (--adv, --noise-snr) nothing takes that route"),
    ]
    for broken, message in rules:
        if broken:
            raise ValueError(message)
