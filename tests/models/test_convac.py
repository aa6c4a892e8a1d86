import itertools

import pytest
import torch

from dltheory.errors import ConfigError, ShapeError
from dltheory.models.convac import ConvAC, matricize


def _gens(n, start=0):
    return [torch.Generator().manual_seed(start + k) for k in range(n)]


def _all_grid_points(grid, N):
    """Every (x⁽ᵏ¹⁾, ..., x⁽ᵏᴺ⁾) in row-major order of (k_1, ..., k_N): shape (M'^N, N, s)."""
    idx = torch.tensor(list(itertools.product(range(grid.shape[0]), repeat=N)))
    return grid[idx]


@pytest.mark.parametrize("kind, N, channels", [("deep", 4, 3), ("deep", 8, [2, 3, 2]),
                                               ("shallow", 4, 5), ("shallow", 6, 2)])
def test_grid_tensor_equals_the_network_on_the_grid(kind, N, channels):
    net = ConvAC(N, 3, channels, kind=kind, patch_dim=2, n_outputs=2, generators=_gens(2))
    grid = torch.randn(3, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    G = net.grid_tensor(grid)
    assert G.shape == (2, 2) + (3,) * N
    out = net(_all_grid_points(grid, N))  # (S, M'^N, Y)
    torch.testing.assert_close(G.reshape(2, 2, -1), out.mT)


def test_shallow_grid_tensor_has_matricization_rank_at_most_its_width():
    net = ConvAC(6, 3, 4, kind="shallow", generators=_gens(1))
    A = matricize(net.grid_tensor(net.templates[0])[0, 0], rows=[0, 2, 4])  # 27 × 27
    assert torch.linalg.matrix_rank(A) == 4


def test_deep_grid_tensor_has_odd_even_rank_r_to_the_n_over_2():
    # Cohen, Sharir, Shashua 2016, Theorem 1 with M = r: rank r^{N/2} almost surely.
    net = ConvAC(4, 3, 3, kind="deep", patch_dim=4, generators=_gens(1))
    A = matricize(net.grid_tensor(net.templates[0])[0, 0], rows=[0, 2])
    assert torch.linalg.matrix_rank(A) == 9


def test_batched_seeds_equal_each_seed_alone():
    x = torch.randn(5, 8, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for kind in ("deep", "shallow"):
        together = ConvAC(8, 3, 2, kind=kind, patch_dim=2, generators=_gens(3))
        for k in range(3):
            alone = ConvAC(8, 3, 2, kind=kind, patch_dim=2, generators=_gens(1, k))
            for p, q in zip(together.parameters(), alone.parameters()):
                assert torch.equal(p[k], q[0])
            assert torch.equal(together.templates[k], alone.templates[0])
            torch.testing.assert_close(together(x)[k], alone(x)[0], rtol=1e-13, atol=0)
            torch.testing.assert_close(together.grid_tensor(together.templates[0])[k],
                                       alone.grid_tensor(together.templates[0])[0],
                                       rtol=1e-13, atol=1e-300)


def test_matricize_orders_rows_and_columns_row_major():
    A = torch.arange(2 * 3 * 2 * 3).reshape(2, 3, 2, 3)
    B = matricize(A, rows=[0, 2])
    assert B.shape == (4, 9)
    assert B[1 * 2 + 1, 2 * 3 + 0] == A[1, 2, 1, 0]
    lead = matricize(A[None].expand(5, 2, 3, 2, 3), rows=[1, 3], n_modes=4)
    assert lead.shape == (5, 9, 4)


@pytest.mark.parametrize("kwargs, error", [
    (dict(n_inputs=6, kind="deep"), ConfigError),  # not a power of 2
    (dict(channels=[2, 2, 2]), ConfigError),  # N=4 has two layers
    (dict(kind="tucker"), ConfigError),
    (dict(bandwidth=0.0), ConfigError),
    (dict(kind="shallow", channels=[2]), ConfigError),
])
def test_bad_arguments_raise_user_errors(kwargs, error):
    args = {**dict(n_inputs=4, n_templates=2, channels=2, generators=_gens(1)), **kwargs}
    with pytest.raises(error):
        ConvAC(**args)


def test_bad_inputs_raise_shape_errors():
    net = ConvAC(4, 2, 2, patch_dim=3, generators=_gens(2))
    with pytest.raises(ShapeError):
        net(torch.zeros(5, 4, 2))
    with pytest.raises(ShapeError):
        net(torch.full((5, 4, 3), float("nan")))
    with pytest.raises(ShapeError):
        net.grid_tensor(torch.zeros(3, 2))
    with pytest.raises(ShapeError):
        matricize(torch.zeros(2, 2, 2), rows=[3])
