"""Classification margins: unnormalized, normalized for homogeneous networks, distributions."""

from __future__ import annotations

import torch

from dltheory.errors import ShapeError, UserError
from dltheory.measure._pytree import Params, _Layout


def margins(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example margins.

    Binary (``outputs`` of shape (N,) or (N, 1), ``targets`` in {−1, +1}): ``y_n f(x_n)``.
    Multiclass (``outputs`` (N, C), ``targets`` class indices): ``f_y(x_n) − max_{j≠y} f_j(x_n)``.
    A point is classified correctly iff its margin is positive.

    Examples
    --------
    >>> import torch
    >>> margins(torch.tensor([2.0, -0.5]), torch.tensor([1, 1]))
    tensor([ 2.0000, -0.5000])
    >>> margins(torch.tensor([[3.0, 1.0, 2.5], [0.0, 1.0, 4.0]]), torch.tensor([0, 1]))
    tensor([ 0.5000, -3.0000])
    """
    if outputs.dim() == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    if outputs.shape[0] != targets.shape[0]:
        raise ShapeError(f"{outputs.shape[0]} outputs but {targets.shape[0]} targets")
    if not torch.isfinite(outputs).all():
        raise ShapeError("outputs contain NaN or inf")
    if outputs.dim() == 1:
        if not bool(((targets == 1) | (targets == -1)).all()):
            raise UserError("binary targets must be −1 or +1 (map {0, 1} labels by 2y − 1)")
        return targets.to(outputs.dtype) * outputs
    if outputs.dim() != 2 or targets.dim() != 1 or outputs.shape[1] < 2:
        raise ShapeError("multiclass margins need outputs (N, C ≥ 2) and class indices (N,)")
    if targets.is_floating_point() or targets.min() < 0 or targets.max() >= outputs.shape[1]:
        raise UserError(f"multiclass targets must be class indices in [0, {outputs.shape[1]})")
    correct = outputs.gather(1, targets[:, None])[:, 0]
    others = outputs.scatter(1, targets[:, None], float("-inf"))
    return correct - others.amax(1)


def normalized_margin(outputs: torch.Tensor, targets: torch.Tensor, params: Params, *,
                      degree: int, p: float = 2.0) -> torch.Tensor:
    """``min_n margin_n / ‖θ‖_p^L`` for an ``L``-homogeneous network (``f(cθ) = c^L f(θ)``).

    Invariant to rescaling ``θ``; gradient flow on the logistic or exponential loss
    increases it along the trajectory and converges in direction to a KKT point of the
    max-margin problem (Lyu & Li 2020, Theorems 4.1, 4.4). A bias-free ReLU network of
    depth L is L-homogeneous; with biases it is not.

    Parameters
    ----------
    outputs, targets : see :func:`margins`.
    params : Tensor or dict[str, Tensor]
        All the parameters, whose concatenation gives ``‖θ‖_p``.
    degree : int
        The homogeneity degree ``L``.
    p : float
        The norm (2 in Lyu & Li).

    References
    ----------
    K. Lyu, J. Li, "Gradient descent maximizes the margin of homogeneous neural networks",
    ICLR 2020.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([3.0, 4.0])
    >>> x, y = torch.tensor([[1.0, 1.0], [0.0, -1.0]]), torch.tensor([1, -1])
    >>> normalized_margin(x @ w, y, w, degree=1)
    tensor(0.8000)
    """
    if not isinstance(degree, int) or degree < 1:
        raise UserError(f"degree must be a positive integer, got {degree!r}")
    layout = _Layout(params)
    norm = torch.linalg.vector_norm(layout.flatten(params), ord=p)
    return margins(outputs, targets).min() / norm.pow(degree)


def margin_distribution(outputs: torch.Tensor, targets: torch.Tensor, normalizer=1.0) -> torch.Tensor:
    """The sorted margins divided by ``normalizer``, e.g. the spectral complexity ``R`` of
    Bartlett, Foster, Telgarsky (2017, Fig. 1), whose empirical CDF separates random from
    true labels.

    References
    ----------
    P. L. Bartlett, D. J. Foster, M. Telgarsky, "Spectrally-normalized margin bounds for
    neural networks", NeurIPS 2017.

    Examples
    --------
    >>> import torch
    >>> margin_distribution(torch.tensor([2.0, -1.0, 4.0]), torch.tensor([1, 1, 1]), 2.0)
    tensor([-0.5000,  1.0000,  2.0000])
    """
    if not float(normalizer) > 0:
        raise UserError(f"normalizer must be positive, got {float(normalizer)!r}")
    return margins(outputs, targets).sort().values / normalizer
