"""A plugin module, as a user would write one: it registers the attack "toy" and nothing else.

    ZOO_PLUGINS=tests/toy_attack_plugin.py python train.py ... --adv toy:1
"""
import tensorflow as tf

from attacks import register_attack


@register_attack("toy")
def toy(*, eps):
    """Brightens every pixel by eps (no gradient): enough to show a plugin attack trains and evaluates."""
    return lambda model, x, y, seed=None: tf.clip_by_value(tf.convert_to_tensor(x, tf.float32) + eps, 0.0, 1.0)
