"""Exact Hessian diagonal of a Sequential of Linear/Conv2d layers and elementwise activations.

Hessian backpropagation (Dangel, Harmeling, Hennig 2020; the recursion BackPACK's
``DiagHessian`` uses): with per-sample losses and no coupling between samples, the
Hessian of the loss w.r.t. the (flattened) output ``z`` of a layer is block-diagonal over
samples, and one sample's block ``H_z`` obeys

    through a linear layer  z' = J a + b:      H_a = Jᵀ H_z' J
    through an activation   a  = σ(u):         H_u = diag(σ'(u)) H_a diag(σ'(u)) + diag(σ''(u) ⊙ ∂L/∂a)

starting from the Hessian of the criterion w.r.t. the network output. A Linear weight
``W_ij`` enters the loss only through ``z_i = Σ_j W_ij a_j + b_i`` (and ``a`` does not
depend on ``W``), so ``∂²L/∂W_ij² = Σ_n a_nj² (H_z,n)_ii``. A convolution weight enters
every output position ``p`` of its channel ``c``, through the patch entry ``U_kp``, so
``∂²L/∂W_ck² = Σ_n Σ_{p,p'} U_kp U_kp' (H_z,n)_{cp,cp'}``, a quadratic form in the patches.
No Hessian-vector product is taken (see :class:`_Term` for the factored form).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp

from dltheory.measure.functional import ModelLoss

_ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus, nn.ELU,
                nn.LeakyReLU, nn.Identity, nn.Softsign, nn.CELU, nn.SELU, nn.Mish, nn.Tanhshrink)

# Per-sample Hessians take N·d² numbers; samples are processed in chunks below this size.
_CHUNK_ELEMENTS = 2**24


def _conv_supported(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _closed_form_supported(loss) -> bool:
    """True for a ModelLoss of an nn.Sequential: parameter-free input modules, then Linear
    and Conv2d layers (zero padding, no groups), Flatten and elementwise activations only
    (no BatchNorm, no dropout, no pooling)."""
    if not isinstance(loss, ModelLoss) or not isinstance(loss.model, nn.Sequential):
        return False
    modules = list(loss.model)
    layers = [i for i, m in enumerate(modules) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        return False
    head, body = modules[:layers[0]], modules[layers[0]:]
    # exact types: a subclass may override forward with something non-elementwise
    return (all(not any(True for _ in m.parameters()) and not isinstance(m, nn.Dropout)
                for m in head)
            and all(type(m) in (nn.Linear, *_ELEMENTWISE) or _conv_supported(m)
                    or (type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1)
                    for m in body))


def _output_derivatives(criterion, z: torch.Tensor, targets: torch.Tensor, weight: float):
    """Per-sample gradient (N, d) and Hessian (N, d, d) of ``weight · criterion(z, targets)``
    w.r.t. the (flattened) outputs. The criterion adds independent per-sample terms, so the
    gradient of entry ``i`` of the gradient, summed over samples, is row ``i`` of every
    sample's Hessian: d double-backward passes (``torch.func.hessian`` under vmap costs
    seconds on first use)."""
    differentiable = z.requires_grad
    z = z if differentiable else z.detach().requires_grad_()
    with torch.enable_grad():
        g = torch.autograd.grad(weight * criterion(z, targets), z, create_graph=True)[0].reshape(len(z), -1)
        rows = [torch.autograd.grad(g[:, i].sum(), z, retain_graph=True, create_graph=differentiable)[0]
                for i in range(g.shape[1])]
    H = torch.stack([r.reshape(len(z), -1) for r in rows], dim=1)
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

    def through_map(self, transpose) -> None:
        """``left ← Jᵀ left`` for a linear map ``J``, given ``transpose(rows) = rows J``."""
        if self.scale is not None:
            self.left, self.scale = self.scale.unsqueeze(2) * self.left, None
        if self.left.dim() == 2:
            self.left = transpose(self.left.T).T
        else:
            n, _, r = self.left.shape
            rows = transpose(self.left.transpose(1, 2).reshape(n * r, -1))
            self.left = rows.reshape(n, r, -1).transpose(1, 2)

    def per_sample(self, n: int) -> torch.Tensor:
        if self.left.dim() == 3:
            return self.left
        if self.scale is None:
            return self.left.expand(n, *self.left.shape)
        return self.scale.unsqueeze(2) * self.left

    def quadratic(self, Q: torch.Tensor) -> torch.Tensor:
        """``q C qᵀ`` for every row ``q`` of ``Q`` (N, ..., r), per sample."""
        n, r = Q.shape[0], Q.shape[-1]
        flat = Q.reshape(n, -1, r)
        C = self.core
        out = ((flat @ C) * flat).sum(-1) if C.dim() == 3 else (flat.square() * C.unsqueeze(1)).sum(-1)
        return out.reshape(Q.shape[:-1])


def _linear_transpose(W: torch.Tensor):
    return lambda rows: rows @ W


def _conv_transpose(m: nn.Conv2d, W: torch.Tensor, input_shape, output_shape):
    def transpose(rows):
        grad = rows.reshape(rows.shape[0], *output_shape[1:])
        size = (rows.shape[0], *input_shape[1:])
        images = torch.nn.grad.conv2d_input(size, W, grad, m.stride, m.padding, m.dilation)
        return images.reshape(rows.shape[0], -1)
    return transpose


def _conv_weight_diagonal(terms, m: nn.Conv2d, a_in: torch.Tensor, c_out: int):
    """``Σ_n Σ_{p,p'} U_kp U_kp' (H_z)_{cp,cp'}`` (weights, (C_out, K)) and ``Σ_{p,p'} (H_z)_{cp,cp'}``
    (bias) from the factored terms; ``U`` are the unfolded input patches (N, K, positions)."""
    U = F.unfold(a_in, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    n, positions = a_in.shape[0], U.shape[2]
    weight, bias = 0.0, 0.0
    for term in terms:
        L = term.per_sample(n).reshape(n, c_out, positions, -1)
        weight = weight + term.quadratic(torch.einsum("nkp,ncpr->nckr", U, L)).sum(0)
        bias = bias + term.quadratic(L.sum(2)).sum(0)
    return weight, bias


def _sequential_hessian_diagonal(loss: ModelLoss, params: dict) -> dict[str, torch.Tensor]:
    """∂²L/∂θ_i² for every parameter named in ``params`` (others are held at the model's)."""
    modules = list(loss.model.named_children())
    weights = {name: params.get(name, p) for name, p in loss.model.named_parameters()}
    first = next(i for i, (_, m) in enumerate(modules) if isinstance(m, (nn.Linear, nn.Conv2d)))
    diag = {name: torch.zeros_like(w) for name, w in weights.items()}

    def forward(x):
        """The network's output, and the inputs of the modules from the first layer on
        followed by that output."""
        a = x
        for _, m in modules[:first]:
            a = m(a)
        saved = []
        for name, m in modules[first:]:
            saved.append(a)
            W, b = weights.get(f"{name}.weight"), weights.get(f"{name}.bias")
            if isinstance(m, nn.Linear):
                a = F.linear(a, W, b)
            elif isinstance(m, nn.Conv2d):
                a = F.conv2d(a, W, b, m.stride, m.padding, m.dilation)
            else:
                a = m(a)
        return a, saved + [a]

    # factored terms hold up to N·d² numbers, d the widest flattened activation
    widest = max(t[0].numel() for t in forward(loss.batches[0][0][:1])[1])
    chunk = max(1, _CHUNK_ELEMENTS // (widest * widest))
    for (inputs, targets), w in zip(loss.batches, loss.weights):
        # the batch's criterion averages its samples: each one carries w / n_b
        w = w / inputs.shape[0] if loss.reduction == "mean" else w
        for x, t in zip(inputs.split(chunk), targets.split(chunk)):
            a, saved = forward(x)
            chunk_weight = w * x.shape[0] if loss.reduction == "mean" else w
            g, H = _output_derivatives(loss.criterion, a, t, chunk_weight)
            eye = torch.eye(g.shape[1], dtype=g.dtype, device=g.device)
            terms = [_Term(eye, H)]
            n = x.shape[0]
            for (name, m), a_in, a_out in zip(reversed(modules[first:]), reversed(saved[:-1]),
                                              reversed(saved[1:])):
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    W = weights[f"{name}.weight"]
                    if isinstance(m, nn.Linear):
                        d = sum(term.diagonal() for term in terms)
                        w_diag, b_diag = d.T @ a_in.square(), d.sum(0)
                        transpose = _linear_transpose(W)
                    else:
                        w_diag, b_diag = _conv_weight_diagonal(terms, m, a_in, W.shape[0])
                        w_diag = w_diag.reshape(W.shape)
                        transpose = _conv_transpose(m, W, a_in.shape, a_out.shape)
                    diag[f"{name}.weight"] = diag[f"{name}.weight"] + w_diag
                    if m.bias is not None:
                        diag[f"{name}.bias"] = diag[f"{name}.bias"] + b_diag
                    if m is modules[first][1]:
                        break
                    for term in terms:
                        term.through_map(transpose)
                    g = transpose(g)
                elif isinstance(m, nn.Flatten):
                    continue   # terms already live in flattened coordinates
                else:
                    d1, d2 = (d.reshape(n, -1) for d in _activation_derivatives(m, a_in))
                    for term in terms:
                        term.through_activation(d1)
                    eye = torch.eye(d1.shape[1], dtype=d1.dtype, device=d1.device)
                    terms.append(_Term(eye, d2 * g))
                    g = g * d1
    return {name: diag[name] for name in params}
