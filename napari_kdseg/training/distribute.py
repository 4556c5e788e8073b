"""Scaling beyond one device with TensorFlow's own engine: ``tf.distribute`` strategies.

- ``default``: one device (the first GPU if any, else the CPU);
- ``mirrored``: ``MirroredStrategy`` over every local GPU (synchronous data parallelism: each
  replica takes ``batch / replicas`` slices, gradients are all-reduced);
- ``multi-worker``: ``MultiWorkerMirroredStrategy`` over several machines described by the
  ``TF_CONFIG`` environment variable.

With no GPU, ``KDSEG_LOGICAL_CPUS=N`` splits the CPU into ``N`` logical devices and
``mirrored`` spans them: the strategy path runs, and is tested, on any laptop. Mixed precision
(``mixed_float16``) is for GPUs; the models keep float32 logits and the losses run in float32.
This module is the only place training touches ``tf.*``; other backends get ``default`` only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import keras

STRATEGIES = ("default", "mirrored", "multi-worker")


def make_strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy called ``name`` (see the module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if keras.backend.backend() != "tensorflow":
        if name != "default":
            raise ValueError(
                f"strategy {name!r} needs the TensorFlow backend; "
                f"KERAS_BACKEND is {keras.backend.backend()!r}"
            )
        return None
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi-worker' needs TF_CONFIG describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = _mirrored_devices(tf)
    return tf.distribute.MirroredStrategy(devices=devices)


def _mirrored_devices(tf: Any) -> list[str] | None:
    if tf.config.list_physical_devices("GPU"):
        return None  # every GPU, TensorFlow's default
    wanted = int(os.environ.get("KDSEG_LOGICAL_CPUS", "1"))
    cpu = tf.config.list_physical_devices("CPU")[0]
    if wanted > 1 and len(tf.config.get_logical_device_configuration(cpu) or ()) != wanted:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(wanted)]
            )
        except RuntimeError as error:  # TensorFlow already placed something on the CPU
            raise ValueError(
                "KDSEG_LOGICAL_CPUS must take effect before TensorFlow initialises its "
                f"devices ({error})"
            ) from error
    return [device.name for device in tf.config.list_logical_devices("CPU")]


@contextlib.contextmanager
def strategy_scope(name: str, mixed_precision: bool = False) -> Iterator[int]:
    """Build and compile models inside this; yields the number of replicas in sync."""
    strategy = make_strategy(name)
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        if strategy is None:
            yield 1
        else:
            with strategy.scope():
                yield int(strategy.num_replicas_in_sync)
    finally:
        keras.config.set_dtype_policy(previous)
