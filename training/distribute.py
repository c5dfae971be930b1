"""tf.distribute strategies by name; batch sizes stay global whatever the strategy."""
from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi-worker")


def make_strategy(name: str, cpu_devices: int = 2) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, or ``cpu_devices`` logical CPUs
    when there is no GPU, which is how it is tested) or ``multi-worker`` (reads TF_CONFIG)."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Known strategies: {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    _split_cpu(cpu_devices)
    devices = [device.name for device in tf.config.list_logical_devices("CPU")][:cpu_devices]
    return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def _split_cpu(count: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) >= count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise ValueError(
            f"--strategy mirrored on a CPU needs {count} logical CPU devices, which must be set up "
            "before TensorFlow starts its runtime: run it in a fresh process"
        ) from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes the run folder; other workers would race it."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())
