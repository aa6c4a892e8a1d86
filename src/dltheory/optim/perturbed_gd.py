"""Perturbed gradient descent (Jin, Ge, Netrapalli, Kakade, Jordan 2017)."""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from dltheory.optim._common import (
    _add_flat,
    _check_generator,
    _check_nonnegative,
    _check_positive,
    _evaluate,
    _flat_grad,
    _require_closure,
    _SingleGroup,
)


def jin2017_parameters(dim: int, *, ell: float, rho: float, epsilon: float, delta_f: float,
                       delta: float = 0.1, c: float = 1.0) -> dict:
    r"""The hyperparameters of Algorithm 2 (PGD) of Jin et al. 2017.

    .. math::
        \chi = 3\max\{\log(d\ell\Delta_f/(c\varepsilon^2\delta)), 4\},\quad
        \eta = c/\ell,\quad r = \tfrac{\sqrt c}{\chi^2}\tfrac{\varepsilon}{\ell},\quad
        g_{thres} = \tfrac{\sqrt c}{\chi^2}\varepsilon,\quad
        f_{thres} = \tfrac{c}{\chi^3}\sqrt{\varepsilon^3/\rho},\quad
        t_{thres} = \tfrac{\chi}{c^2}\tfrac{\ell}{\sqrt{\rho\varepsilon}}

    Parameters
    ----------
    dim : d, the number of scalar parameters.
    ell : ℓ, Lipschitz constant of the gradient.
    rho : ρ, Lipschitz constant of the Hessian.
    epsilon : target ε of the ε-second-order stationary point
        (‖∇f‖ ≤ ε, λ_min(∇²f) ≥ −√(ρε)).
    delta_f : an upper bound Δ_f ≥ f(x₀) − f*.
    delta : failure probability δ.
    c : the absolute constant of the theorem (their analysis needs c small enough; c = 1
        is a practical choice).

    Returns
    -------
    dict with keys ``lr``, ``radius``, ``g_thres``, ``f_thres``, ``t_thres`` (an int, rounded up).

    References
    ----------
    Jin, Ge, Netrapalli, Kakade, Jordan, "How to escape saddle points efficiently", ICML 2017,
    Algorithm 2 and Theorem 3.
    """
    if not (isinstance(dim, int) and dim >= 1):
        raise ValueError(f"Invalid dim: {dim}")
    for name, value in [("ell", ell), ("rho", rho), ("epsilon", epsilon), ("delta_f", delta_f),
                        ("c", c)]:
        _check_positive(name, value)
    if not 0 < delta < 1:
        raise ValueError(f"Invalid delta: {delta} (a probability in (0, 1))")
    chi = 3 * max(math.log(dim * ell * delta_f / (c * epsilon ** 2 * delta)), 4.0)
    return dict(
        lr=c / ell,
        radius=math.sqrt(c) / chi ** 2 * epsilon / ell,
        g_thres=math.sqrt(c) / chi ** 2 * epsilon,
        f_thres=c / chi ** 3 * math.sqrt(epsilon ** 3 / rho),
        t_thres=math.ceil(chi / c ** 2 * ell / math.sqrt(rho * epsilon)),
    )


class PerturbedGD(_SingleGroup, Optimizer):
    r"""Gradient descent that adds noise from a ball when the gradient is small.

    Algorithm 2 of Jin et al. 2017: with ``t_noise`` the step of the last perturbation,

    .. math::
        \text{if } \|\nabla f(x_t)\| \le g_{thres} \text{ and } t - t_{noise} > t_{thres}:\;
        \tilde x = x_t,\; t_{noise} = t,\; x_{t+1} = \tilde x + \xi,\;
        \xi \sim \mathrm{Unif}(B_0(r));

        \text{if } t - t_{noise} = t_{thres} \text{ and } f(x_t) - f(\tilde x) > -f_{thres}:
        \text{ return } \tilde x;

        \text{otherwise } x_{t+1} = x_t - \eta \nabla f(x_t).

    The perturbation takes the place of that iteration's gradient step, so the iterates are
    the paper's shifted by one index per perturbation. When the termination test fires the
    parameters are reset to ``x̃`` (an ε-second-order stationary point with probability
    ``1 − δ``), :attr:`converged` becomes True and later steps leave them unchanged. The
    ball is in the whole parameter vector (dimension d = total number of entries).
    :meth:`from_jin2017` sets the hyperparameters from (ℓ, ρ, ε, Δ_f, δ) as in the paper.

    Parameters
    ----------
    params : iterable of tensors (a single group).
    lr : step size η ≥ 0.
    radius : perturbation radius r > 0.
    g_thres : gradient-norm threshold below which to perturb.
    f_thres : decrease that a perturbation must produce within ``t_thres`` steps.
    t_thres : steps between perturbations (int ≥ 1).
    generator : the ``torch.Generator`` the perturbations are drawn from.

    References
    ----------
    Jin, Ge, Netrapalli, Kakade, Jordan, "How to escape saddle points efficiently", ICML 2017.
    Ge, Huang, Jin, Yuan, "Escaping from saddle points — online stochastic gradient for tensor
    decomposition", COLT 2015.
    """

    def __init__(self, params, lr: float, radius: float, g_thres: float, f_thres: float, t_thres: int,
                 *, generator: torch.Generator):
        _check_nonnegative("learning rate", lr)
        _check_positive("radius", radius)
        _check_nonnegative("g_thres", g_thres)
        _check_nonnegative("f_thres", f_thres)
        if not (isinstance(t_thres, int) and t_thres >= 1):
            raise ValueError(f"Invalid t_thres: {t_thres}")
        _check_generator(generator)
        self.generator = generator
        super().__init__(params, dict(lr=lr, radius=radius, g_thres=g_thres, f_thres=f_thres,
                                      t_thres=t_thres))

    @classmethod
    def from_jin2017(cls, params, *, ell: float, rho: float, epsilon: float, delta_f: float,
                     delta: float = 0.1, c: float = 1.0, generator: torch.Generator) -> PerturbedGD:
        """PerturbedGD with the hyperparameters of :func:`jin2017_parameters`."""
        params = list(params)
        dim = sum(p.numel() for p in params)
        return cls(params, **jin2017_parameters(dim, ell=ell, rho=rho, epsilon=epsilon, delta_f=delta_f,
                                                delta=delta, c=c), generator=generator)

    @property
    def converged(self) -> bool:
        """True once the termination test of Algorithm 2 has fired."""
        return self.state[self._params[0]].get("converged", False)

    def _ball_sample(self, dim: int, like: torch.Tensor) -> torch.Tensor:
        """Uniform in the ball of radius r: a uniform direction times r·U^{1/d}."""
        direction = torch.randn(dim, generator=self.generator, dtype=like.dtype, device=like.device)
        u = torch.rand((), generator=self.generator, dtype=like.dtype, device=like.device)
        return self.param_groups[0]["radius"] * u ** (1.0 / dim) * direction / direction.norm()

    @torch.no_grad()
    def step(self, closure=None):
        """One iteration of Algorithm 2; the closure (required) returns f(x_t) and sets ∇f(x_t)."""
        _require_closure(closure, "PerturbedGD")
        loss = _evaluate(closure)
        group, params = self.param_groups[0], self._params
        state = self.state[params[0]]
        if state.get("converged", False):
            return loss
        t = state.get("step", 0)
        t_noise = state.get("t_noise", -group["t_thres"] - 1)
        state["step"] = t + 1
        if t - t_noise == group["t_thres"] and float(loss) - state["f_tilde"] > -group["f_thres"]:
            for p, x in zip(params, state["x_tilde"]):
                p.copy_(x)
            state["converged"] = True
            return loss
        grad = _flat_grad(params)
        if grad.norm() <= group["g_thres"] and t - t_noise > group["t_thres"]:
            state.update(t_noise=t, f_tilde=float(loss), x_tilde=[p.detach().clone() for p in params])
            _add_flat(params, self._ball_sample(grad.numel(), grad))
        else:
            _add_flat(params, grad, alpha=-group["lr"])
        return loss
