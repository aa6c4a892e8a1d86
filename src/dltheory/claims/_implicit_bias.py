"""Helpers shared by the implicit-bias claims: checkpoints, ℓp norms by name, padding."""

from __future__ import annotations

import math

import numpy as np
import torch

from dltheory.models import VECTOR_BLOCK

# ℓp norms by the names configs use (JSON has no infinity).
NORMS = {"l1": 1.0, "l2": 2.0, "l3": 3.0, "l1.5": 1.5, "linf": math.inf}


def norm_exponent(name: str) -> float:
    return NORMS[name]


def dual_exponent(p: float) -> float:
    """q with 1/p + 1/q = 1."""
    return math.inf if p == 1 else (1.0 if math.isinf(p) else p / (p - 1))


def log_checkpoints(steps: int, count: int) -> list[int]:
    """About ``count`` log-spaced steps in [1, steps], always ending at ``steps``."""
    marks = np.unique(np.logspace(0, math.log10(steps), count).astype(int)).tolist()
    return sorted(set(marks) | {steps})


def pad_to_simd(t: torch.Tensor, dim: int, value: float = 0.0) -> torch.Tensor:
    """Pad ``dim`` with ``value`` to a whole number of :data:`~dltheory.models.VECTOR_BLOCK`
    bytes (16 float64 elements).

    Then every element of an elementwise kernel (exp, pow, sign) takes the vectorized path
    whatever the batch size, where an unpadded tensor sends a size-dependent tail through the
    scalar path, which rounds differently: a seed's numbers must not depend on its batch-mates.
    Measured on this AVX-512 host: padding to 8 float64 (one register) fails the steepest- and
    mirror-descent batched = alone tests, 16 passes them. (It padded to 64 elements before:
    4–13× the data of the smoke shapes, work every extra seed paid for.)
    """
    pad = -t.shape[dim] % (VECTOR_BLOCK // t.element_size())
    if pad == 0:
        return t
    widths = [0, 0] * (t.dim() - dim % t.dim() - 1) + [0, pad]
    return torch.nn.functional.pad(t, widths, value=value)
