"""Exact Hessian diagonal of a Sequential of Linear layers and elementwise activations.

Hessian backpropagation (Dangel, Harmeling, Hennig 2020; the recursion BackPACK's
``DiagHessian`` uses): with per-sample losses and no coupling between samples, the
Hessian of the loss w.r.t. the output ``z`` of a layer is block-diagonal over samples,
and one sample's block ``H_z`` obeys

    through a Linear layer  z' = W a + b:      H_a = W^T H_z' W
    through an activation   a  = σ(u):         H_u = diag(σ'(u)) H_a diag(σ'(u)) + diag(σ''(u) ⊙ ∂L/∂a)

starting from the Hessian of the criterion w.r.t. the network output. Since ``W_ij``
enters the loss only through ``z_i = Σ_j W_ij a_j + b_i`` and ``a`` does not depend on
``W``, ``∂²L/∂W_ij² = Σ_n a_nj² (H_z,n)_ii`` exactly. The cost is a few matrix products
per layer, no Hessian-vector product at all (see :class:`_Term` for the factored form).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jvp

from dltheory.measure.functional import ModelLoss

_ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus, nn.ELU,
                nn.LeakyReLU, nn.Identity, nn.Softsign, nn.CELU, nn.SELU, nn.Mish, nn.Tanhshrink)

# Per-sample Hessians take N·d² numbers; samples are processed in chunks below this size.
_CHUNK_ELEMENTS = 2**24


def _closed_form_supported(loss) -> bool:
    """True for a ModelLoss of an nn.Sequential: parameter-free input modules, then Linear
    layers and elementwise activations only (no BatchNorm, no dropout, no convolution)."""
    if not isinstance(loss, ModelLoss) or not isinstance(loss.model, nn.Sequential):
        return False
    modules = list(loss.model)
    linear = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    if not linear:
        return False
    head, body = modules[:linear[0]], modules[linear[0]:]
    # exact types: a subclass may override forward with something non-elementwise
    return (all(not any(True for _ in m.parameters()) and not isinstance(m, nn.Dropout)
                for m in head)
            and all(type(m) in (nn.Linear, *_ELEMENTWISE) for m in body))


def _output_derivatives(criterion, z: torch.Tensor, targets: torch.Tensor, weight: float):
    """Per-sample gradient (N, C) and Hessian (N, C, C) of ``weight · criterion(z, targets)``
    w.r.t. the outputs. The criterion adds independent per-sample terms, so the gradient of
    row ``i`` of the gradient, summed over samples, is row ``i`` of every sample's Hessian:
    C double-backward passes (``torch.func.hessian`` under vmap costs seconds on first use)."""
    differentiable = z.requires_grad
    z = z if differentiable else z.detach().requires_grad_()
    with torch.enable_grad():
        g = torch.autograd.grad(weight * criterion(z, targets), z, create_graph=True)[0]
        rows = [torch.autograd.grad(g[:, i].sum(), z, retain_graph=True, create_graph=differentiable)[0]
                for i in range(z.shape[1])]
    H = torch.stack(rows, dim=1)
    return (g, H) if differentiable else (g.detach(), H)


def _activation_derivatives(module: nn.Module, u: torch.Tensor):
    """σ'(u) and σ''(u) of an elementwise module: its Jacobian is diagonal, so a JVP with a
    vector of ones returns the derivative at every entry."""
    ones = torch.ones_like(u)
    first = lambda t: jvp(module, (t,), (ones,))[1]
    return jvp(first, (u,), (ones,))


class _Term:
    """One summand ``L_n C_n L_nᵀ`` of a per-sample Hessian block, kept factored.

    ``left`` is shared by all samples, shape (d, r), with an optional per-sample row scale
    ``scale`` (N, d), or per sample, shape (N, d, r); ``core`` is diagonal, (N, r), or full,
    (N, r, r). The Hessian w.r.t. the network output is one term with ``left = I``; every
    activation adds the diagonal term ``diag(σ'' ⊙ ∂L/∂a)``. Staying factored, a term costs
    ``N d r`` per layer instead of the ``N d³`` of the dense block: through an activation
    only the row scale changes, and a shared ``left`` crosses a Linear layer without N.
    """

    def __init__(self, left: torch.Tensor, core: torch.Tensor):
        self.left, self.core, self.scale = left, core, None

    def diagonal(self) -> torch.Tensor:
        L, C = self.left, self.core
        if C.dim() == 3:
            d = ((L @ C) * L).sum(-1)
        elif L.dim() == 2:
            d = C @ L.square().T
        else:
            d = (L.square() * C.unsqueeze(1)).sum(-1)
        return d if self.scale is None else d * self.scale.square()

    def through_activation(self, d1: torch.Tensor) -> None:
        if self.left.dim() == 3:
            self.left = d1.unsqueeze(2) * self.left
        else:
            self.scale = d1 if self.scale is None else self.scale * d1

    def through_linear(self, W: torch.Tensor) -> None:
        if self.scale is not None:
            self.left, self.scale = self.scale.unsqueeze(2) * self.left, None
        self.left = W.T @ self.left


def _sequential_hessian_diagonal(loss: ModelLoss, params: dict) -> dict[str, torch.Tensor]:
    """∂²L/∂θ_i² for every parameter named in ``params`` (others are held at the model's)."""
    modules = list(loss.model.named_children())
    weights = {name: params.get(name, p) for name, p in loss.model.named_parameters()}
    first = next(i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Linear))
    diag = {name: torch.zeros_like(w) for name, w in weights.items()}

    width = max(max(m.in_features, m.out_features) for _, m in modules if isinstance(m, nn.Linear))
    chunk = max(1, _CHUNK_ELEMENTS // (width * width))
    for (inputs, targets), w in zip(loss.batches, loss.weights):
        # the batch's criterion averages its samples: each one carries w / n_b
        w = w / inputs.shape[0] if loss.reduction == "mean" else w
        for x, t in zip(inputs.split(chunk), targets.split(chunk)):
            a = x
            for _, m in modules[:first]:
                a = m(a)
            saved = []
            for name, m in modules[first:]:
                saved.append(a)
                a = (torch.nn.functional.linear(a, weights[f"{name}.weight"], weights.get(f"{name}.bias"))
                     if isinstance(m, nn.Linear) else m(a))
            chunk_weight = w * x.shape[0] if loss.reduction == "mean" else w
            g, H = _output_derivatives(loss.criterion, a, t, chunk_weight)
            eye = torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
            terms = [_Term(eye, H)]
            for (name, m), a_in in zip(reversed(modules[first:]), reversed(saved)):
                if isinstance(m, nn.Linear):
                    d = sum(term.diagonal() for term in terms)
                    diag[f"{name}.weight"] = diag[f"{name}.weight"] + d.T @ a_in.square()
                    if m.bias is not None:
                        diag[f"{name}.bias"] = diag[f"{name}.bias"] + d.sum(0)
                    if m is modules[first][1]:
                        break
                    W = weights[f"{name}.weight"]
                    for term in terms:
                        term.through_linear(W)
                    g = g @ W
                else:
                    d1, d2 = _activation_derivatives(m, a_in)
                    for term in terms:
                        term.through_activation(d1)
                    eye = torch.eye(a_in.shape[1], dtype=a_in.dtype, device=a_in.device)
                    terms.append(_Term(eye, d2 * g))
                    g = g * d1
    return {name: diag[name] for name in params}
