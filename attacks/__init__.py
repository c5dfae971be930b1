"""Adversarial attacks (TensorFlow backend) and the registry every user of an attack looks them up in.

- ``attacks.core``: FGSM, PGD (L∞/L2, restarts), FGSM at an SNR, Gaussian noise, targeted-until-confident;
- ``attacks.apgd`` and ``attacks.square``: AutoAttack's attacks;
- ``attacks.registry``: attacks by name with declared options (``make_attack``, ``register_attack``);
- ``attacks.accuracy``: accuracy under an attack on held-out images.
"""
from attacks.core import fgsm, fgsm_snr, gaussian_noise, pgd, targeted_until_confident
from attacks.registry import AttackInfo, attack_names, get_attack, make_attack, register_attack

__all__ = ["AttackInfo", "attack_names", "fgsm", "fgsm_snr", "gaussian_noise", "get_attack", "make_attack", "pgd",
           "register_attack", "targeted_until_confident"]
