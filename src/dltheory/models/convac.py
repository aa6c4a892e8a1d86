"""Convolutional arithmetic circuits: deep (hierarchical Tucker) and shallow (CP) ConvACs.

A ConvAC maps ``N`` patches ``x_1, ..., x_N ∈ R^s`` through a representation layer of
``M`` functions ``f_d`` (here Gaussians ``f_d(x) = exp(−‖x − μ_d‖²/2σ²)``), 1×1
convolutions (a linear map of the channels at each location, weights not shared) and
product pooling. Its output is a multilinear form of the representations,

    h_y(x_1, ..., x_N) = Σ_{d_1..d_N} A^y_{d_1..d_N} Π_i f_{d_i}(x_i),

with a coefficient tensor ``A^y`` that the deep network builds as a hierarchical Tucker
decomposition (size-2 pooling windows, log₂N levels) and the shallow one as a CP
decomposition (one global pooling; its width Z bounds the CP rank). On a grid of ``M'``
template points ``x⁽¹⁾..x⁽ᴹ'⁾`` the function is the *grid tensor*
``G_{k_1..k_N} = h_y(x⁽ᵏ¹⁾, ..., x⁽ᵏᴺ⁾) = A^y ×_1 F ⋯ ×_N F`` with ``F_{kd} = f_d(x⁽ᵏ⁾)``:
for an invertible ``F`` its matricization ranks are those of ``A^y``.

References
----------
N. Cohen, O. Sharir, A. Shashua, "On the Expressive Power of Deep Learning: A Tensor
Analysis", COLT 2016 (the CP and hierarchical Tucker networks, Theorem 1).
N. Cohen, A. Shashua, "Convolutional Rectifier Networks as Generalized Tensor
Decompositions", ICML 2016 (grid tensors).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from dltheory.errors import ConfigError, ShapeError
from dltheory.models._batched import SeedBatched, check_positive_int

KINDS = ("deep", "shallow")


class ConvAC(SeedBatched):
    r"""A convolutional arithmetic circuit, ``S`` seeds at once.

    Deep (hierarchical Tucker; ``L = log₂ N``):

    .. math:: \mathrm{conv}_0(j, \gamma) = \langle a^{0,j,\gamma}, \mathrm{rep}(j, :)\rangle,\quad
              \mathrm{pool}_l(j, \gamma) = \mathrm{conv}_l(2j{-}1, \gamma)\,\mathrm{conv}_l(2j, \gamma),

    ``conv_l(j, γ) = ⟨a^{l,j,γ}, pool_{l−1}(j, :)⟩`` for ``l = 1..L−1`` and
    ``y = ⟨a^{L,y}, pool_{L−1}(1, :)⟩``. Shallow (CP): ``conv_0`` with Z channels, one
    product pooling over all N locations, then ``y = ⟨a^{1,y}, pool⟩``. Every weight and
    every template ``μ_d`` is N(0, 1), the continuous distribution of the theorem.

    Parameters
    ----------
    n_inputs : N, the number of patches (a power of 2 for the deep network).
    n_templates : M, the number of representation functions.
    channels : deep: r (every layer) or the list ``[r_0, ..., r_{L−1}]``; shallow: Z.
    kind : ``"deep"`` or ``"shallow"``.
    generators : one ``torch.Generator`` per seed; seed k draws μ, then the weights of
        layer 0, 1, ..., then the output layer.
    patch_dim : s, the dimension of a patch.
    bandwidth : σ of the Gaussian representation functions.
    n_outputs : Y.

    Attributes
    ----------
    templates : (S, M, s) means μ_d. ``conv`` : ``ParameterList`` of (S, J_l, r_l, r_{l−1})
    weights (``r_{−1} = M``, ``J_l`` locations). ``out`` : (S, Y, r_last).

    References
    ----------
    N. Cohen, O. Sharir, A. Shashua, "On the Expressive Power of Deep Learning: A Tensor
    Analysis", COLT 2016, the shallow (CP) and deep (hierarchical Tucker) networks, Theorem 1.

    Examples
    --------
    >>> net = ConvAC(4, 2, 2, generators=[torch.Generator().manual_seed(0)])
    >>> grid = net.grid_tensor(net.templates[0])
    >>> tuple(grid.shape)
    (1, 1, 2, 2, 2, 2)
    >>> x = net.templates[0][[0, 1, 1, 0]][None]          # one point of the grid
    >>> bool(torch.isclose(net(x)[0, 0, 0], grid[0, 0, 0, 1, 1, 0]))
    True
    """

    def __init__(self, n_inputs: int, n_templates: int, channels: int | Sequence[int], *,
                 generators: Sequence[torch.Generator], kind: str = "deep", patch_dim: int = 1,
                 bandwidth: float = 1.0, n_outputs: int = 1, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu"):
        super().__init__(generators, dtype, device)
        if kind not in KINDS:
            raise ConfigError(f"unknown ConvAC kind {kind!r}; choose one of: {', '.join(KINDS)}")
        self.N = check_positive_int("n_inputs", n_inputs)
        self.M = check_positive_int("n_templates", n_templates)
        self.d = check_positive_int("patch_dim", patch_dim)
        self.n_outputs = check_positive_int("n_outputs", n_outputs)
        if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
            raise ConfigError(f"bandwidth must be a positive number, got {bandwidth!r}")
        self.kind, self.bandwidth = kind, float(bandwidth)
        self.channels = self._channels(channels)
        # Locations per layer: N, N/2, ..., 2 (deep); N (shallow).
        locations = [self.N >> level for level in range(len(self.channels))]
        fan_in = [self.M] + self.channels[:-1]
        shapes = [(self.M, self.d)] + [(J, r, f) for J, r, f in
                                       zip(locations, self.channels, fan_in)]
        templates, *conv, out = self._draw(*shapes, (self.n_outputs, self.channels[-1]))
        self.register_buffer("templates", templates)
        self.conv = nn.ParameterList(conv)
        self.out = nn.Parameter(out)

    def _channels(self, channels: int | Sequence[int]) -> list[int]:
        if self.kind == "shallow":
            return [check_positive_int("channels (Z of a shallow ConvAC)", channels)]
        levels = self.N.bit_length() - 1
        if self.N < 2 or self.N != 1 << levels:
            raise ConfigError(f"a deep ConvAC pools in windows of 2: n_inputs must be a power "
                              f"of 2 (>= 2), got {self.N}")
        if isinstance(channels, int):
            channels = [channels] * levels
        channels = list(channels)
        if len(channels) != levels:
            raise ConfigError(f"a deep ConvAC with {self.N} inputs has log2(N) = {levels} "
                              f"hidden layers; got {len(channels)} channel counts")
        return [check_positive_int("every channel count", r) for r in channels]

    # -- the network -------------------------------------------------------------------
    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """``rep(i, d) = f_d(x_i)`` of shape (S, n, N, M) for ``x`` of shape (n, N, s) or
        (S, n, N, s)."""
        return self._features(self._check_input(x))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """``f_d(x)`` for ``x`` of shape (S, ..., s): shape (S, ..., M)."""
        mu = self.templates.reshape(self.n_seeds, *[1] * (x.dim() - 2), self.M, self.d)
        sq = ((x[..., None, :] - mu) ** 2).sum(-1)
        return torch.exp(-sq / (2 * self.bandwidth ** 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of shape (S, n, Y) for ``x`` of shape (n, N, s) or (S, n, N, s)."""
        h = torch.einsum("sbjm,sjrm->sbjr", self.representation(x), self.conv[0])
        if self.kind == "shallow":
            return torch.einsum("sbr,syr->sby", h.prod(2), self.out)
        for a in self.conv[1:]:
            h = torch.einsum("sbjr,sjgr->sbjg", _pool(h), a)
        return torch.einsum("sbr,syr->sby", _pool(h)[:, :, 0], self.out)

    # -- the function as a tensor ------------------------------------------------------
    def grid_tensor(self, grid: torch.Tensor) -> torch.Tensor:
        """The grid tensor ``G[s, y, k_1, ..., k_N] = h_y(x⁽ᵏ¹⁾, ..., x⁽ᵏᴺ⁾)``, shape
        (S, Y, M', ..., M') for grid points ``grid`` of shape (M', s) or (S, M', s).

        Computed by contracting the decomposition (no network evaluation at the M'^N
        points): the level-0 vectors ``v^{j,α}_k = conv_0(j, α)`` at ``x_j = x⁽ᵏ⁾`` are
        combined by outer products and the weights of each layer, as in the hierarchical
        Tucker (deep) and CP (shallow) decompositions of Cohen et al. 2016.
        """
        if not isinstance(grid, torch.Tensor) or grid.dim() not in (2, 3) or \
                grid.shape[-1] != self.d or (grid.dim() == 3 and grid.shape[0] != self.n_seeds):
            got = tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid).__name__
            raise ShapeError(f"grid must have shape (M', {self.d}) or ({self.n_seeds}, M', "
                             f"{self.d}), got {got}")
        points = grid.to(self.dtype)
        points = points.expand(self.n_seeds, *points.shape) if grid.dim() == 2 else points
        F = self._features(points)  # F[s, k, d] = f_d(x⁽ᵏ⁾)
        v = torch.einsum("skm,sjrm->sjrk", F, self.conv[0])  # (S, N, r_0, M')
        S, size = self.n_seeds, v.shape[-1]
        if self.kind == "shallow":
            phi = v[:, 0]
            for j in range(1, self.N):
                phi = (phi[..., :, None] * v[:, j, :, None, :]).reshape(S, phi.shape[1], -1)
            flat = torch.einsum("srk,syr->syk", phi, self.out)
        else:
            phi = v
            for a in self.conv[1:]:
                phi = torch.einsum("sjgr,sjrk->sjgk", a, _pair(phi))
            flat = torch.einsum("syr,srk->syk", self.out, _pair(phi)[:, 0])
        return flat.reshape(S, self.n_outputs, *([size] * self.N))

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (3, 4) or tuple(x.shape[-2:]) != (self.N, self.d):
            raise ShapeError(f"input must have shape (n, {self.N}, {self.d}) or ({self.n_seeds}, "
                             f"n, {self.N}, {self.d}), got {tuple(x.shape)}")
        if x.dim() == 4 and x.shape[0] != self.n_seeds:
            raise ShapeError(f"a batched input needs {self.n_seeds} seeds on dim 0, got "
                             f"{x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ShapeError("input contains NaN or inf")
        x = x.to(self.dtype)
        return x.expand(self.n_seeds, *x.shape) if x.dim() == 3 else x


def _pool(h: torch.Tensor) -> torch.Tensor:
    """Product pooling over windows of 2 locations: (S, n, J, r) → (S, n, J/2, r)."""
    return h.reshape(*h.shape[:2], h.shape[2] // 2, 2, h.shape[3]).prod(3)


def _pair(phi: torch.Tensor) -> torch.Tensor:
    """Outer products of neighbouring locations, channel by channel:
    (S, J, r, K) → (S, J/2, r, K²), ``[k₁K + k₂] = φ[2j][k₁] φ[2j+1][k₂]`` (row-major, so
    the modes stay in order)."""
    S, J, r, K = phi.shape
    left, right = phi[:, 0::2], phi[:, 1::2]
    return (left[..., :, None] * right[..., None, :]).reshape(S, J // 2, r, K * K)


def matricize(tensor: torch.Tensor, rows: Sequence[int], n_modes: int | None = None):
    """The matricization ``[A]_{rows, rest}`` of the last ``n_modes`` axes of ``tensor``.

    The leading axes (seeds, outputs) are kept; ``n_modes`` defaults to all axes.
    ``rows = range(0, N, 2)`` gives the odd/even matricization of Cohen et al. 2016 (their
    modes are 1-based: odd modes 1, 3, ... are our 0, 2, ...).

    Examples
    --------
    >>> A = torch.arange(16.).reshape(2, 2, 2, 2)
    >>> matricize(A, rows=[0, 2]).shape
    torch.Size([4, 4])
    """
    order = tensor.dim() if n_modes is None else n_modes
    rows = list(rows)
    if not 0 < order <= tensor.dim():
        raise ShapeError(f"n_modes must be in [1, {tensor.dim()}], got {n_modes}")
    if len(set(rows)) != len(rows) or not all(0 <= r < order for r in rows):
        raise ShapeError(f"rows must be distinct mode indices in [0, {order}), got {rows}")
    offset = tensor.dim() - order
    cols = [m for m in range(order) if m not in rows]
    t = tensor.permute(list(range(offset)) + [offset + m for m in rows + cols])
    n_rows = math.prod(tensor.shape[offset + m] for m in rows)
    return t.reshape(*t.shape[:offset], n_rows, -1)
