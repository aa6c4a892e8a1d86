import pytest
import torch

from dltheory.data import separable_gaussian
from dltheory.errors import ConfigError


def test_separable_gaussian_has_the_planted_margin_and_is_reproducible():
    a = separable_gaussian(100, 7, margin=0.3, generator=torch.Generator().manual_seed(1))
    b = separable_gaussian(100, 7, margin=0.3, generator=torch.Generator().manual_seed(1))
    X, y, w = a
    assert torch.equal(X, b[0]) and torch.equal(y, b[1])
    assert float((y * (X @ w)).min()) >= 0.3 - 1e-12
    assert float(w.norm()) == pytest.approx(1.0)


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError):
        separable_gaussian(1, 3, generator=torch.Generator())
    with pytest.raises(ConfigError):
        separable_gaussian(10, 3, margin=0.0, generator=torch.Generator())
