"""Tiny versions of the five architectures (1/8 width, 64 x 64), built once per session."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from napari_kdseg.models import build_model


class TinyModels:
    """Cached 1/8-width models for 64 x 64 inputs; tests that train one build their own."""

    width = 0.125
    size = 64

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], keras.Model] = {}

    def model(self, name: str, channels: int = 1) -> keras.Model:
        if (name, channels) not in self._cache:
            self._cache[name, channels] = self.build(name, channels)
        return self._cache[name, channels]

    def build(self, name: str, channels: int = 1, **options: object) -> keras.Model:
        return build_model(name, (self.size, self.size, channels), 2, self.width, **options)

    def images(self, batch: int = 2, channels: int = 1, seed: int = 0) -> np.ndarray:
        shape = (batch, self.size, self.size, channels)
        return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.fixture(scope="session")
def tiny() -> TinyModels:
    return TinyModels()
