"""Resumable checkpoints: full trainer state, refused across configurations, whole epochs only."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from napari_kdseg.training.checkpoint import (
    EpochCheckpoint,
    StopAtStepBoundary,
    StopRequest,
    load_state,
    save_state,
)
from napari_kdseg.training.config import TrainConfig
from napari_kdseg.training.run import _with_current_settings


def _model() -> keras.Model:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(keras.optimizers.Adam(0.1), "mse")
    return model


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((32, 4), dtype=np.float32), rng.random((32, 1), dtype=np.float32)


def test_state_round_trip_includes_optimizer(tmp_path: Path) -> None:
    trained = _model()
    trained.fit(*_data(), batch_size=8, epochs=2, verbose=0)
    save_state(trained, tmp_path, epochs_done=2, best_val_dice=0.5, config={"pairs": (1, 2)})
    fresh = _model()
    state = load_state(fresh, tmp_path, {"pairs": (1, 2)})
    assert state is not None
    assert state["epochs_done"] == 2
    for a, b in zip(trained.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations) == 8, "optimizer state (and step count) restored"
    with pytest.raises(ValueError, match="another configuration"):
        load_state(_model(), tmp_path, {"pairs": (1, 3)})
    assert load_state(_model(), tmp_path / "none", {}) is None


def test_cut_short_epoch_is_not_checkpointed(tmp_path: Path) -> None:
    request = StopRequest()
    checkpoint = EpochCheckpoint(tmp_path, {"run": 1})

    class StopFiveStepsIntoEpochTwo(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.epoch == 1 and batch == 4:
                request.signal = 15  # what the SIGTERM handler does

    model = _model()
    callbacks = [checkpoint, StopFiveStepsIntoEpochTwo(), StopAtStepBoundary(request)]
    model.fit(*_data(), batch_size=2, epochs=3, verbose=0, callbacks=callbacks)
    assert int(model.optimizer.iterations) == 16 + 5  # stopped five steps into epoch 2
    state = load_state(_model(), tmp_path, {"run": 1})
    assert state is not None
    assert state["epochs_done"] == 1, "epoch 2 was cut short; epoch 1 stays the checkpoint"


def test_a_checkpoint_from_before_a_new_setting_still_resumes(tmp_path: Path) -> None:
    """Settings added later (at their defaults) do not make an older checkpoint foreign."""
    config = TrainConfig(epochs=4)
    older = config.to_json()
    del older["preprocess"]["pixel_mm"], older["distillation"]["teacher_labels"]
    del older["distillation"]["distil_on"]
    save_state(_model(), tmp_path, 2, None, {"train": older, "sites": ["A"], "teacher": None})
    asked = {"train": config.to_json(), "sites": ["A"], "teacher": None}
    state = load_state(_model(), tmp_path, asked, _with_current_settings)
    assert state is not None
    assert state["epochs_done"] == 2
    longer = {**asked, "train": TrainConfig(epochs=5).to_json()}
    with pytest.raises(ValueError, match="another configuration"):
        load_state(_model(), tmp_path, longer, _with_current_settings)
