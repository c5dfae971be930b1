"""Augmentation: ImageDataGenerator-compatible policies applied as batched, seeded transforms.

Attacks (adversarial examples) are a package of their own: `attacks`.
"""
from augment.layers import PolicyAugmentation, augment_batch, make_augmenter
from augment.policies import Policy, draw_params, get_policy, policy_names, register_policy
from augment.transforms import apply_transform

__all__ = [
    "Policy",
    "PolicyAugmentation",
    "apply_transform",
    "augment_batch",
    "draw_params",
    "get_policy",
    "make_augmenter",
    "policy_names",
    "register_policy",
]
