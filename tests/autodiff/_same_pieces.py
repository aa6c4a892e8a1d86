"""The check that two computations of a subgradient chose the same pieces, and that they
are the gradient of those pieces next to the point (float64, O(eps) away)."""

import torch

from dltheory.autodiff import active_pieces_gradient


def assert_same_pieces_and_limit(loss, params, v, got, report, want, want_report) -> None:
    assert report.n_ties > 0
    assert report.ties == want_report.ties
    for k in params:  # the same pieces chosen: the same backward
        assert torch.equal(got[k], want[k]), k
    # the smooth pieces' gradient next to the point: O(eps) away from the limit
    near = active_pieces_gradient(loss, params, v, eps=1e-9)
    for k in params:
        torch.testing.assert_close(got[k], near[k], rtol=1e-6, atol=1e-7)
