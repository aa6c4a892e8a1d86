"""Linearly separable data with a planted margin."""

from __future__ import annotations

import torch

from dltheory.errors import ConfigError


def separable_gaussian(n: int, d: int, *, margin: float = 0.1, generator: torch.Generator,
                       dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
    """Gaussian points labelled by a random hyperplane through 0, pushed ``margin`` off it.

    ``x_i ~ N(0, I_d)``, ``y_i = sign(<w*, x_i>)`` for a uniformly random unit ``w*``, then
    ``x_i += y_i * margin * w*``: the data are separable by ``w*`` with margin at least
    ``margin`` (no bias term: the separator passes through the origin).

    Parameters
    ----------
    n, d : number of points and dimension.
    margin : the planted geometric margin (> 0).
    generator : the run's ``torch.Generator`` (no global RNG).

    Returns
    -------
    X : (n, d) tensor, y : (n,) tensor of ±1, w_star : (d,) unit tensor.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> X, y, w = separable_gaussian(50, 5, generator=g)
    >>> bool(((X @ w) * y).min() >= 0.1)
    True
    """
    if n < 2 or d < 1:
        raise ConfigError(f"separable data needs n >= 2 and d >= 1, got n={n}, d={d}")
    if not margin > 0:
        raise ConfigError(f"margin must be positive, got {margin}")
    w_star = torch.randn(d, generator=generator, dtype=dtype, device=device)
    w_star = w_star / w_star.norm()
    X = torch.randn(n, d, generator=generator, dtype=dtype, device=device)
    y = torch.sign(X @ w_star)
    y[y == 0] = 1.0
    X = X + margin * y[:, None] * w_star
    return X, y, w_star
