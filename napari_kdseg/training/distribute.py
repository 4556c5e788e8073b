"""Scaling beyond one device with TensorFlow's own engine: ``tf.distribute`` strategies.

- ``default``: one device (the first GPU if any, else the CPU);
- ``mirrored``: ``MirroredStrategy`` over every local GPU (synchronous data parallelism: each
  replica takes ``batch / replicas`` slices, gradients are all-reduced);
- ``multi-worker``: ``MultiWorkerMirroredStrategy`` over several processes or machines
  described by the ``TF_CONFIG`` environment variable (below).

With no GPU, ``KDSEG_LOGICAL_CPUS=N`` splits the CPU into ``N`` logical devices and
``mirrored`` spans them: the strategy path runs, and is tested, on any laptop. Mixed precision
(``mixed_float16``) is for GPUs; the models keep float32 logits and the losses run in float32.
This module is the only place training touches ``tf.*``; other backends get ``default`` only.

Multi-worker runs start the same command once per worker, each with its own ``TF_CONFIG``.
The batch size is global: Keras turns the ``PyDataset`` into a ``tf.data`` generator, and
``experimental_distribute_dataset`` splits every batch of ``batch_size`` slices into one part
per replica and auto-shards by data, so each worker builds the same batches (same seed, same
order and augmentations) and trains on its own share; a step consumes ``batch_size`` slices
over the whole cluster, and an epoch has as many steps as with one worker. Every worker runs
the callbacks and every save, since saving takes part in collective operations (measured: a
``.keras`` save of the compiled model made by the chief alone waits on the other workers and
fails when they end); only the chief (:func:`worker_role`) writes into the output folder, the
others write into a temporary folder removed at the end (:func:`worker_output`), TensorFlow's
own convention.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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
        return _multi_worker_strategy_class(tf)()
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


_MULTI_WORKER_CLASS: Any = None


def _multi_worker_strategy_class(tf: Any) -> Any:
    """``MultiWorkerMirroredStrategy`` with a ``reduce`` that Keras 3's ``fit`` can use.

    Keras 3 (3.15) calls ``reduce`` on this strategy in two ways it cannot take
    (keras-team/keras#20585): on the first ``(x, y)`` batch, a tuple of per-replica values, to
    build the model (``MirroredStrategy`` maps over the tuple, this one fails with "Attempt to
    convert a value (PerReplica ...) to a Tensor"); and on every step's scalar losses and
    metrics with ``axis=0`` ("Invalid reduction dimension 0 for input with 0 dimensions").
    This reduces leaf by leaf, and a scalar across replicas (``axis=None``).
    """
    global _MULTI_WORKER_CLASS
    if _MULTI_WORKER_CLASS is None:
        base = tf.distribute.MultiWorkerMirroredStrategy

        def scalar(value: Any) -> bool:
            parts = value.values if isinstance(value, tf.distribute.DistributedValues) else [value]
            return all(getattr(part, "shape", None) == () for part in parts)

        def reduce_leaf(strategy: Any, reduce_op: Any, value: Any, axis: Any) -> Any:
            if axis is not None and scalar(value):
                axis = None
            return base.reduce(strategy, reduce_op, value, axis)

        class KerasMultiWorkerStrategy(base):
            def reduce(self, reduce_op: Any, value: Any, axis: Any = None) -> Any:
                if isinstance(value, tf.distribute.DistributedValues):
                    return reduce_leaf(self, reduce_op, value, axis)
                return tf.nest.map_structure(
                    lambda leaf: reduce_leaf(self, reduce_op, leaf, axis), value
                )

        _MULTI_WORKER_CLASS = KerasMultiWorkerStrategy
    return _MULTI_WORKER_CLASS


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in the cluster: worker ``index`` of ``workers``; the chief is 0."""

    index: int = 0
    workers: int = 1

    @property
    def chief(self) -> bool:
        return self.index == 0


def worker_role() -> WorkerRole:
    """The role of this process under the strategy in scope (one worker outside multi-worker).

    The chief is the task of type ``chief`` or, when the cluster has none, worker 0; the other
    workers follow in ``TF_CONFIG`` order.
    """
    if keras.backend.backend() != "tensorflow":
        return WorkerRole()
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return WorkerRole()
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    chiefs = len(cluster.get("chief", ()))
    workers = chiefs + len(cluster.get("worker", ()))
    if resolver.task_type == "chief":
        index = 0
    elif resolver.task_type == "worker":
        index = chiefs + int(resolver.task_id)
    else:
        raise ValueError(
            f"TF_CONFIG task type {resolver.task_type!r}: multi-worker training runs on "
            "'chief' and 'worker' tasks only"
        )
    return WorkerRole(index=index, workers=workers)


@contextlib.contextmanager
def worker_output(out: Path, role: WorkerRole) -> Iterator[Path]:
    """Where this worker writes: ``out`` for the chief, else a temporary folder removed after."""
    if role.chief:
        yield out
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"kdseg-worker{role.index}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def same_on_every_worker(value: int) -> bool:
    """Whether every worker of a multi-worker run holds ``value`` (a collective: all must call)."""
    if worker_role().workers == 1:
        return True
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()

    def per_replica() -> Any:
        return strategy.run(lambda: tf.constant([value], dtype=tf.int64))

    local = tf.function(per_replica, autograph=False)()  # eagerly, TensorFlow warns
    every = keras.ops.convert_to_numpy(strategy.gather(local, axis=0))
    return bool((every == value).all())
