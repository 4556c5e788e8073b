"""Training configuration, the cyclic learning rate and the Dice metric."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest

from napari_kdseg.training.config import (
    DistillationConfig,
    TrainConfig,
    cpu_preset,
    paper_preset,
)
from napari_kdseg.training.metrics import ForegroundDice
from napari_kdseg.training.schedule import CyclicLearningRate


def test_paper_defaults() -> None:
    config = paper_preset()
    assert (config.learning_rate, config.min_learning_rate, config.cycle_step_size) == (
        0.01,
        1e-6,
        2000,
    )
    assert (config.epochs, config.batch_size) == (100, 16)
    assert (config.preprocess.size, config.preprocess.context) == (384, 3)
    assert config.distillation.lambdas == {"logits": 0.2, "kernel_matrix": 0.9, "affinity": 0.9}


def test_config_json_round_trip() -> None:
    config = cpu_preset("erfnet")
    again = TrainConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again == config


def test_the_distilled_scans_are_every_scan_or_those_without_a_mask() -> None:
    assert DistillationConfig().distil_on == "all"
    config = dataclasses.replace(
        cpu_preset(), distillation=DistillationConfig(distil_on="unlabelled")
    )
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(ValueError, match=r"distil_on must be one of \('all', 'unlabelled'\)"):
        DistillationConfig(distil_on="labelled")


def test_ablation_switches() -> None:
    only_aam = DistillationConfig().only(["affinity"])
    assert only_aam.enabled == ["affinity"]
    assert only_aam.lambdas["affinity"] == 0.9
    assert DistillationConfig().only([]).enabled == []
    with pytest.raises(ValueError, match="unknown distillation losses"):
        DistillationConfig(lambdas={"style": 1.0})


def test_cyclic_rate_is_triangular_and_decays() -> None:
    schedule = CyclicLearningRate(maximum=0.01, minimum=1e-6, step_size=2000)
    rate = lambda t: float(keras.ops.convert_to_numpy(schedule(t)))  # noqa: E731
    assert rate(0) == pytest.approx(1e-6)
    assert rate(1000) == pytest.approx((0.01 - 1e-6) / 2 + 1e-6, rel=1e-5)
    assert rate(2000) == pytest.approx(0.01, rel=1e-5)
    assert rate(4000) == pytest.approx(1e-6)
    assert rate(6000) == pytest.approx((0.01 - 1e-6) / 2 + 1e-6, rel=1e-5)  # amplitude halved
    assert rate(10000) == pytest.approx((0.01 - 1e-6) / 4 + 1e-6, rel=1e-5)
    late = [rate(t) for t in range(80000, 84000, 500)]
    assert max(late) < 1e-4, "after many cycles the rate has decayed towards its minimum"
    assert (
        CyclicLearningRate.from_config(schedule.get_config()).get_config() == schedule.get_config()
    )
    with pytest.raises(ValueError, match="minimum <= maximum"):
        CyclicLearningRate(maximum=1e-7, minimum=1e-6)


def test_foreground_dice_pools_over_batches() -> None:
    metric = ForegroundDice()
    labels = np.zeros((2, 4, 4), np.int32)
    labels[0, :2] = 1
    logits = np.zeros((2, 4, 4, 2), np.float32)
    logits[0, :1, :, 1] = 5.0  # predicts half of the gland of slice 0
    metric.update_state(labels[:1], logits[:1])
    metric.update_state(labels[1:], logits[1:])  # an empty slice predicted empty
    assert float(metric.result()) == pytest.approx(2 * 4 / (8 + 4))
    metric.reset_state()
    metric.update_state(np.zeros((1, 4, 4), np.int32), np.zeros((1, 4, 4, 2), np.float32))
    assert float(metric.result()) == 1.0


def test_foreground_dice_leaves_out_samples_weighted_zero() -> None:
    """Scans without a mask (weight 0) do not count; with no scan counted the Dice is
    undefined rather than a perfect 1 (an epoch of unlabelled scans only)."""
    metric = ForegroundDice()
    labels = np.zeros((2, 4, 4), np.int32)
    labels[0, :2] = 1
    logits = np.zeros((2, 4, 4, 2), np.float32)
    logits[:, :1, :, 1] = 5.0  # half the gland of slice 0; a false row on slice 1
    metric.update_state(labels, logits, np.array([1.0, 0.0], np.float32))
    assert float(metric.result()) == pytest.approx(2 * 4 / (8 + 4))
    metric.reset_state()
    metric.update_state(labels, logits, np.zeros(2, np.float32))
    assert np.isnan(float(metric.result()))


def test_distiller_under_mixed_precision_keeps_float32_losses() -> None:
    from napari_kdseg.losses import SegmentationLoss
    from napari_kdseg.models import build_model
    from napari_kdseg.training.distiller import Distiller
    from napari_kdseg.training.distribute import strategy_scope

    with strategy_scope("default", mixed_precision=True) as replicas:
        assert replicas == 1
        assert keras.config.dtype_policy().name == "mixed_float16"
        teacher = build_model("unetpp", (32, 32, 3), 2, 0.125)
        student = build_model("enet", (32, 32, 3), 2, 0.125)
        distiller = Distiller(teacher, student, DistillationConfig(), SegmentationLoss())
        x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
        y = np.zeros((2, 32, 32), np.int32)
        outputs = distiller(x, training=True)
        assert outputs["logits"].dtype == "float32"
        loss = distiller.compute_loss(x, y, outputs)
    assert keras.config.dtype_policy().name == "float32", "the policy is restored"
    assert loss.dtype == "float32"
    assert np.isfinite(float(loss))
