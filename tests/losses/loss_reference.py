"""Plain NumPy (float64) versions of the losses, written from the formulas, for comparison."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from keras import ops


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def logits_kl(student: np.ndarray, teacher: np.ndarray, temperature: float = 1.0) -> float:
    """Paper eq. 7: mean over pixels of sum_c p_s (log p_s - log p_t), times T^2."""
    p_s, p_t = softmax(student / temperature), softmax(teacher / temperature)
    return float(np.mean(np.sum(p_s * (np.log(p_s) - np.log(p_t)), axis=-1)) * temperature**2)


def affinity_loss(
    logits: np.ndarray,
    labels: np.ndarray,
    sizes: Sequence[int] = (1, 2, 3),
    margin: float = 3.0,
    class_weights: np.ndarray | None = None,
    neighbour_first: bool = False,
) -> float:
    """Paper eqs. 1-4 pair by pair: loops over samples, pixels and the 8 neighbours per size."""
    probs = np.clip(softmax(logits), 1e-4, 1.0)
    batch, height, width, classes = logits.shape
    positive = np.zeros((len(sizes), classes))
    negative = np.zeros((len(sizes), classes))
    for s, size in enumerate(sizes):
        n_positive = n_negative = 0
        for b in range(batch):
            for y in range(height):
                for x in range(width):
                    for dy in (-size, 0, size):
                        for dx in (-size, 0, size):
                            ny, nx = y + dy, x + dx
                            if (dy, dx) == (0, 0) or not (0 <= ny < height and 0 <= nx < width):
                                continue
                            first, second = probs[b, y, x], probs[b, ny, nx]
                            if neighbour_first:
                                first, second = second, first
                            kl = np.sum(first * np.log(first / second))
                            centre_class = labels[b, y, x]
                            if labels[b, y, x] == labels[b, ny, nx]:
                                positive[s, centre_class] += kl
                                n_positive += 1
                            else:
                                negative[s, centre_class] += max(0.0, margin - kl)
                                n_negative += 1
        positive[s] /= max(n_positive, 1)
        negative[s] /= max(n_negative, 1)
    if class_weights is None:
        class_weights = np.full((len(sizes), classes), 1.0 / len(sizes))
    return float(np.sum(class_weights * (positive + negative)))


def kernel_matrix(features: np.ndarray) -> np.ndarray:
    """Paper eq. 5: Gram matrix of the flattened, L2-normalised samples."""
    rows = np.asarray(features, np.float64).reshape(len(features), -1)
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return rows @ rows.T


def kernel_matrix_loss(student: np.ndarray, teacher: np.ndarray) -> float:
    """Paper eq. 6 with both parts as means over the n x n entries."""
    difference = kernel_matrix(student) - kernel_matrix(teacher)
    return float(np.mean(difference**2) + np.mean(np.abs(difference)))


def dice_loss(
    labels: np.ndarray, logits: np.ndarray, smooth: float = 1e-5, include_background: bool = False
) -> float:
    """1 - mean over classes of (2 sum p g + s) / (sum p + sum g + s), sums over the batch."""
    probs = softmax(logits)
    classes = logits.shape[-1]
    dices = []
    for c in range(0 if include_background else 1, classes):
        p, g = probs[..., c], (labels == c).astype(np.float64)
        dices.append((2 * np.sum(p * g) + smooth) / (np.sum(p) + np.sum(g) + smooth))
    return float(1 - np.mean(dices))


def focal_loss(
    labels: np.ndarray, logits: np.ndarray, gamma: float = 2.0, alpha: Sequence[float] | None = None
) -> float:
    """Mean over pixels of -alpha_y (1 - p_y)^gamma log p_y."""
    probs = softmax(logits)
    p_true = np.take_along_axis(probs, labels[..., None].astype(int), axis=-1)[..., 0]
    weights = np.ones_like(p_true) if alpha is None else np.asarray(alpha)[labels]
    return float(np.mean(-weights * (1 - p_true) ** gamma * np.log(p_true)))


def cross_entropy(labels: np.ndarray, logits: np.ndarray) -> float:
    return focal_loss(labels, logits, gamma=0.0)


def directional_derivatives(
    fn: Callable[[np.ndarray], object],
    point: np.ndarray,
    gradient: np.ndarray,
    rng: np.random.Generator,
    step: float = 1e-6,
    directions: int = 4,
) -> list[tuple[float, float]]:
    """``(central finite difference, autodiff)`` derivatives of ``fn`` along random directions."""
    pairs = []
    for _ in range(directions):
        direction = rng.normal(size=point.shape)
        upper = float(ops.convert_to_numpy(fn(point + step * direction)))
        lower = float(ops.convert_to_numpy(fn(point - step * direction)))
        pairs.append(((upper - lower) / (2 * step), float(np.sum(gradient * direction))))
    return pairs
