"""Teacher–student data: labels from a random two-layer ReLU network."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from dltheory.errors import ConfigError


class TeacherData(NamedTuple):
    """Inputs ``X`` (n, d), labels ``y`` (n,) and the teacher's weights ``U`` (k0, d), ``v`` (k0,)."""

    X: torch.Tensor
    y: torch.Tensor
    U: torch.Tensor
    v: torch.Tensor


def teacher_student(n: int, d: int, k0: int, *, generator: torch.Generator, noise: float = 0.0,
                    dtype: torch.dtype = torch.float64,
                    device: str | torch.device = "cpu") -> TeacherData:
    r"""Labels from a two-layer ReLU teacher with ``k0`` hidden units.

    .. math:: y_i = \frac{1}{\sqrt{k_0}} \sum_{j=1}^{k_0} v_j\, \mathrm{relu}(u_j^\top x_i)
              + \varepsilon_i,\quad x_i \sim \mathrm{unif}(S^{d-1}),\ u_j \sim N(0, I_d),\
              v_j \sim \mathrm{unif}\{\pm 1\},\ \varepsilon_i \sim N(0, \mathrm{noise}^2)

    A student of width ``k ≥ k0`` can fit the labels exactly (realizable when
    ``noise = 0``); whether SGD finds such a fit from random initialization is the question
    of over-specification (Livni, Shalev-Shwartz, Shamir 2014). Draws, in order: U, v, X,
    ε from ``generator``.

    Parameters
    ----------
    n, d, k0 : sample size, input dimension, teacher width.
    generator : the run's ``torch.Generator`` (no global RNG).
    noise : standard deviation of additive label noise (≥ 0).

    References
    ----------
    R. Livni, S. Shalev-Shwartz, O. Shamir, "On the Computational Efficiency of Training
    Neural Networks", NeurIPS 2014.

    Examples
    --------
    >>> data = teacher_student(100, 5, 10, generator=torch.Generator().manual_seed(0))
    >>> data.X.shape, data.y.shape, data.U.shape
    (torch.Size([100, 5]), torch.Size([100]), torch.Size([10, 5]))
    >>> bool(torch.allclose(data.X.norm(dim=1), torch.ones(100, dtype=torch.float64)))
    True
    """
    for name, value in (("n", n), ("d", d), ("k0", k0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"teacher_student needs a positive integer {name}, got {value!r}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ConfigError(f"noise must be a finite number >= 0, got {noise!r}")
    U = torch.randn(k0, d, generator=generator, dtype=dtype, device=device)
    v = torch.randint(0, 2, (k0,), generator=generator, device=device).to(dtype) * 2 - 1
    X = torch.randn(n, d, generator=generator, dtype=dtype, device=device)
    X = X / X.norm(dim=1, keepdim=True)
    y = torch.relu(X @ U.T) @ v / math.sqrt(k0)
    if noise > 0:
        y = y + noise * torch.randn(n, generator=generator, dtype=dtype, device=device)
    return TeacherData(X, y, U, v)
