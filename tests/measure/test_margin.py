import pytest
import torch

from dltheory.errors import ShapeError, UserError
from dltheory.measure import margin_distribution, margins, normalized_margin


def test_binary_and_multiclass_margins_by_hand():
    torch.testing.assert_close(margins(torch.tensor([[1.5], [-2.0]]), torch.tensor([-1, -1])),
                               torch.tensor([-1.5, 2.0]))
    out = torch.tensor([[1.0, 4.0, 2.0], [5.0, 5.0, 0.0], [0.0, -1.0, 3.0]])
    torch.testing.assert_close(margins(out, torch.tensor([1, 0, 2])), torch.tensor([2.0, 0.0, 3.0]))


def test_normalized_margin_is_scale_invariant_for_a_homogeneous_net():
    g = torch.Generator().manual_seed(0)
    W, a = torch.randn(8, 3, generator=g), torch.randn(8, generator=g)
    x = torch.randn(10, 3, generator=g)
    f = lambda p: torch.relu(x @ p["W"].T) @ p["a"]   # 2-homogeneous
    y = torch.sign(f({"W": W, "a": a})).long()
    base = normalized_margin(f({"W": W, "a": a}), y, {"W": W, "a": a}, degree=2)
    scaled = {"W": 3.0 * W, "a": 3.0 * a}
    torch.testing.assert_close(normalized_margin(f(scaled), y, scaled, degree=2), base)
    expected = margins(f({"W": W, "a": a}), y).min() / (W.square().sum() + a.square().sum())
    assert float(base) == pytest.approx(float(expected))
    unscaled_deg1 = normalized_margin(f({"W": W, "a": a}), y, {"W": W, "a": a}, degree=1)
    assert float(normalized_margin(f(scaled), y, scaled, degree=1)) == pytest.approx(3 * float(unscaled_deg1))


def test_margin_distribution_is_sorted_and_normalized():
    out = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.5]])
    torch.testing.assert_close(margin_distribution(out, torch.tensor([0, 1, 1]), 0.5),
                               torch.tensor([1.0, 2.0, 6.0]))


def test_margin_inputs_are_validated():
    with pytest.raises(UserError, match="−1 or \\+1"):
        margins(torch.ones(3), torch.tensor([0, 1, 1]))
    with pytest.raises(UserError):
        margins(torch.ones(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ShapeError):
        margins(torch.ones(2, 3), torch.tensor([0]))
    with pytest.raises(UserError):
        margin_distribution(torch.ones(2), torch.ones(2, dtype=torch.long), 0.0)
