"""Ready-made model specs: a fully connected and a convolutional network."""

from __future__ import annotations

import math

from .spec import Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec


def fc(input_shape: tuple[int, ...], num_classes: int, hidden: int = 256, beta: float = 0.9,
       num_steps: int = 25, reset: str = "subtract", encoder: dict | None = None) -> ModelSpec:
    """Flatten -> Linear(n_in, hidden) -> Leaky -> Linear(hidden, classes) -> Leaky."""
    n_in = math.prod(input_shape)
    layers = ([Flatten()] if len(input_shape) > 1 else []) + [
        Linear(n_in, hidden), Leaky(beta=beta, reset=reset),
        Linear(hidden, num_classes), Leaky(beta=beta, reset=reset),
    ]
    return ModelSpec(layers=tuple(layers), input_shape=tuple(input_shape), num_steps=num_steps,
                     encoder=encoder or {"type": "rate", "gain": 1.0}, name="fc")


def conv(input_shape: tuple[int, int, int], num_classes: int, channels: tuple[int, int] = (12, 32),
         beta: float = 0.9, num_steps: int = 25, reset: str = "subtract",
         encoder: dict | None = None) -> ModelSpec:
    """Two conv blocks (Conv2d 3x3 'same' -> MaxPool 2 -> Leaky) then Linear -> Leaky.

    Works from 8x8 (digits) to 28x28 (MNIST-like) inputs."""
    c, h, w = input_shape
    c1, c2 = channels
    layers = [
        Conv2d(c, c1, 3, padding=1), MaxPool2d(2), Leaky(beta=beta, reset=reset),
        Conv2d(c1, c2, 3, padding=1), MaxPool2d(2), Leaky(beta=beta, reset=reset),
        Flatten(), Linear(c2 * (h // 4) * (w // 4), num_classes), Leaky(beta=beta, reset=reset),
    ]
    return ModelSpec(layers=tuple(layers), input_shape=(c, h, w), num_steps=num_steps,
                     encoder=encoder or {"type": "rate", "gain": 1.0}, name="conv")


PRESETS = {"fc": fc, "conv": conv}


def preset(name: str, input_shape, num_classes: int, **kwargs) -> ModelSpec:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)} (or pass a spec file)")
    return PRESETS[name](tuple(input_shape), num_classes, **kwargs)
