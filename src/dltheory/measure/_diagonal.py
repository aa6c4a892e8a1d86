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
per layer (``N d³``), no Hessian-vector product at all.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad, hessian, jvp, vmap

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


def _activation_derivatives(module: nn.Module, u: torch.Tensor):
    """σ'(u) and σ''(u) of an elementwise module: its Jacobian is diagonal, so a JVP with a
    vector of ones returns the derivative at every entry."""
    ones = torch.ones_like(u)
    first = lambda t: jvp(module, (t,), (ones,))[1]
    return jvp(first, (u,), (ones,))


def _sequential_hessian_diagonal(loss: ModelLoss, params: dict) -> dict[str, torch.Tensor]:
    """∂²L/∂θ_i² for every parameter named in ``params`` (others are held at the model's)."""
    modules = list(loss.model.named_children())
    weights = {name: params.get(name, p) for name, p in loss.model.named_parameters()}
    first = next(i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Linear))
    diag = {name: torch.zeros_like(w) for name, w in weights.items()}

    def per_sample(z, t):
        return loss.criterion(z.unsqueeze(0), t.unsqueeze(0))

    width = max(m.in_features if isinstance(m, nn.Linear) else 0 for _, m in modules)
    width = max([width] + [m.out_features for _, m in modules if isinstance(m, nn.Linear)])
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
            g = w * vmap(grad(per_sample))(a, t)
            H = w * vmap(hessian(per_sample))(a, t)
            for (name, m), a_in in zip(reversed(modules[first:]), reversed(saved)):
                if isinstance(m, nn.Linear):
                    d = H.diagonal(dim1=1, dim2=2)
                    diag[f"{name}.weight"] = diag[f"{name}.weight"] + d.T @ a_in.square()
                    if m.bias is not None:
                        diag[f"{name}.bias"] = diag[f"{name}.bias"] + d.sum(0)
                    if m is modules[first][1]:
                        break
                    W = weights[f"{name}.weight"]
                    H = W.T @ (H @ W)
                    g = g @ W
                else:
                    d1, d2 = _activation_derivatives(m, a_in)
                    H = d1.unsqueeze(2) * H * d1.unsqueeze(1) + torch.diag_embed(d2 * g)
                    g = g * d1
    return {name: diag[name] for name in params}
