"""scikit-learn's handwritten digits (1797 images of 8×8 pixels), as centred unit vectors."""

from __future__ import annotations

from functools import lru_cache

import torch

from dltheory.errors import ConfigError

N_DIGITS, PIXELS = 1797, 64


@lru_cache(maxsize=8)
def _features(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float64)
    X = X - X.mean(0)
    if dim < PIXELS:
        # Principal components of the whole set (deterministic: no draw involved).
        _, _, Vh = torch.linalg.svd(X, full_matrices=False)
        X = X @ Vh[:dim].mT
    return X / X.norm(dim=1, keepdim=True), torch.tensor(y)


def digits(dim: int = PIXELS, *, dtype: torch.dtype = torch.float64,
           device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 digits as inputs ``X`` (1797, dim) and classes ``y`` (1797,) in 0..9.

    Pixels / 16, centred on the data mean, projected on the top ``dim`` principal components
    when ``dim < 64``, and scaled to unit norm (the ‖x‖ = 1 of the over-parametrization
    theorems, e.g. Du, Zhai, Póczos, Singh 2019). Needs scikit-learn, which ships the data.

    Examples
    --------
    >>> X, y = digits(16)
    >>> tuple(X.shape), int(y.max())
    ((1797, 16), 9)
    >>> bool(torch.allclose(X.norm(dim=1), torch.ones(1797, dtype=torch.float64)))
    True
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= PIXELS:
        raise ConfigError(f"dim must be an integer in [1, {PIXELS}], got {dim!r}")
    X, y = _features(dim)
    return X.to(dtype=dtype, device=device), y.to(device)
