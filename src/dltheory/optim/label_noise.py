"""Label noise: a loss whose targets are perturbed afresh at every evaluation."""

from __future__ import annotations

import torch

from dltheory.optim._common import _check_generator, _check_nonnegative


class LabelNoise:
    r"""``loss(params, targets)`` evaluated at ``targets + σ ε`` with fresh ``ε ~ N(0, I)`` per call.

    Label-noise SGD is a data-dependent perturbation, not an update rule: any optimizer
    stepping on this callable runs it — :class:`~dltheory.optim.GD` gives label-noise GD,

    .. math:: w_{t+1} = w_t - \eta \nabla_w L(w_t;\, y + \sigma\varepsilon_t),

    and a ``loss`` that subsamples examples gives label-noise SGD. Near a manifold of global
    minimizers the noise drives the iterates toward flatter minimizers (smaller Hessian
    trace), the implicit regularizer of Blanc et al. 2020 and Damian et al. 2021.

    Parameters
    ----------
    loss : callable ``loss(params, targets) -> scalar tensor``.
    targets : the clean targets y.
    sigma : noise level σ ≥ 0.
    generator : the ``torch.Generator`` the noise is drawn from.

    Attributes
    ----------
    last_noise : the ε of the latest call (None before the first).

    References
    ----------
    Blanc, Gupta, Valiant, Valiant, "Implicit regularization for deep neural networks driven by
    an Ornstein–Uhlenbeck like process", COLT 2020.
    HaoChen, Wei, Lee, Ma, "Shape matters: understanding the implicit bias of the noise
    covariance", COLT 2021.
    Damian, Ma, Lee, "Label noise SGD provably prefers flat global minimizers", NeurIPS 2021.
    """

    def __init__(self, loss, targets: torch.Tensor, sigma: float, *, generator: torch.Generator):
        if not callable(loss):
            raise ValueError(f"Invalid loss: {loss!r} (a callable loss(params, targets))")
        _check_nonnegative("sigma", sigma)
        _check_generator(generator)
        self.loss, self.targets, self.sigma, self.generator = loss, targets, sigma, generator
        self.last_noise = None

    def __call__(self, params) -> torch.Tensor:
        self.last_noise = torch.randn(self.targets.shape, generator=self.generator,
                                      dtype=self.targets.dtype, device=self.targets.device)
        return self.loss(params, self.targets + self.sigma * self.last_noise)

    def clean(self, params) -> torch.Tensor:
        """The loss at the clean targets."""
        return self.loss(params, self.targets)
