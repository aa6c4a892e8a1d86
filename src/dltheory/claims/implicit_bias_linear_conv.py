"""Deep linear convolutional networks are biased toward sparsity in the Fourier domain.

Gunasekar, Lee, Soudry, Srebro, "Implicit Bias of Gradient Descent on Linear Convolutional
Networks", NeurIPS 2018. An L-layer linear network with full-width circular convolutions
computes ⟨β, x⟩ with the end-to-end filter β = w_1 ⊛ w_2 ⊛ ⋯ ⊛ w_L, so in the Fourier domain
β̂ = ŵ_1 ŵ_2 ⋯ ŵ_L. Theorem 2: on separable data, gradient descent on the exponential loss
converges in direction to a first-order stationary point of

    min ‖β̂‖_{2/L}   s.t.   y_i ⟨β, x_i⟩ ≥ 1,                                            (P_L)

— ℓ1 in the Fourier domain for L = 2 (convex: the stationary point is the minimum, solved
here by cvxpy, ``dltheory.reference.fourier_max_margin``) and a quasi-norm favouring ever
sparser β̂ as L grows. Theorem 1, the control: a fully connected linear network of any depth
converges to the ℓ2 max-margin separator, the limit of a plain linear model (L = 1).

Setup: Gaussian separable data (``dltheory.data.separable_gaussian``) with fewer points than
dimensions, where the ℓ2 and Fourier-ℓ1 SVMs differ; filters drawn i.i.d. N(0, init²/d).
The runs are normalized gradient descent on log Σ_i exp(−y_i⟨β, x_i⟩): the exponential loss
with its gradient ∇L/L = −Σ_i softmax(−m)_i y_i x_i (computed without underflow), each step
rescaled to length ‖Δθ‖ = lr (θ all the weights). A positive rescaling of each step is a
change of time along gradient flow, so the limit direction the theorems speak of is the
same; it makes the norm grow linearly and the direction settle within 10⁴ steps, where
plain GD's norm grows like log t. Convolutions are products of DFTs (``torch.fft``),
exponentials run on SIMD-padded rows, matrix–vector products are broadcast sums over the
last axis, so a seed's numbers do not depend on its batch-mates.

The convergence is slow (the margin gap closes like a power of 1/log t for GD, and only
the asymptote is a theorem), so the claim judges the trend: the Fourier-ℓ1 margin gap of the
L = 2 network still shrinks over the last decade of steps, and its direction is nearer the
Fourier-ℓ1 SVM than the ℓ2 SVM; the fully connected networks do the reverse. For L > 2 the
stationary point is not unique, so the claim requires only that sparsity grows with depth,
measured by ‖β̂‖_1/‖β̂‖_2 (1 for a single frequency, √d for a flat spectrum), and reports the
distance to the L = 2 solution.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims._implicit_bias import log_checkpoints, pad_to_simd
from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.data import separable_gaussian
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.models import DeepLinear
from dltheory.reference import fourier_l1, fourier_max_margin, max_margin

_PROFILES = {
    "smoke": dict(n=6, d=12, conv_depths=[1, 2, 3], fc_depths=[2, 3], steps=3_000, lr=0.02,
                  init=1.0, checkpoints=12),
    "quick": dict(n=10, d=16, conv_depths=[1, 2, 3, 4], fc_depths=[2, 3, 4], steps=20_000,
                  lr=0.02, init=1.0, checkpoints=20),
    "full": dict(n=20, d=32, conv_depths=[1, 2, 3, 4, 5], fc_depths=[2, 3, 4, 5],
                 steps=1_000_000, lr=0.01, init=1.0, checkpoints=40),
}
_SEEDS = {"smoke": 3, "quick": 6, "full": 32}
_LATE = 10          # "late" = the last decade of steps, [T/10, T]
_CONVERGED = 1e-4   # a margin gap below this counts as converged (need not shrink further)


def end_to_end_filter(filters: torch.Tensor) -> torch.Tensor:
    """β = w_1 ⊛ ⋯ ⊛ w_L (circular) for filters of shape (..., L, d): β̂ = ∏_l ŵ_l."""
    d = filters.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(filters, dim=-1).prod(-2), n=d, dim=-1)


def conv_gradients(filters: torch.Tensor, grad_beta: torch.Tensor) -> torch.Tensor:
    """∂L/∂w_l for every layer from ∇_β L (shape (..., d)), shape (..., L, d).

    β = w_l ⊛ r_l with r_l = ⊛_{j≠l} w_j, so ∂L/∂w_l = ∇_β L ⋆ r_l (circular correlation),
    whose DFT is conj(r̂_l) · DFT(∇_β L); r̂_l = ∏_{j≠l} ŵ_j from prefix and suffix products
    (no division: a filter's DFT may vanish).
    """
    d, L = filters.shape[-1], filters.shape[-2]
    spectra = torch.fft.rfft(filters, dim=-1)
    ones = torch.ones_like(spectra[..., :1, :])
    prefix = torch.cat([ones, spectra[..., :-1, :]], -2).cumprod(-2)
    suffix = torch.cat([ones, spectra.flip(-2)[..., :-1, :]], -2).cumprod(-2).flip(-2)
    rest = prefix * suffix if L > 1 else ones
    g = torch.fft.rfft(grad_beta, dim=-1)[..., None, :]
    return torch.fft.irfft(g * rest.conj(), n=d, dim=-1)


def fc_end_to_end(Ws: list[torch.Tensor], v: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """β = W_1ᵀ ⋯ W_{L−1}ᵀ v of a fully connected net x ↦ vᵀ W_{L−1} ⋯ W_1 x, shape (..., d).

    Also returns a_j = W_{j+1}ᵀ ⋯ W_{L−1}ᵀ v for j = 1..L−1, the back-propagated output weights.
    Matrix–vector products as broadcast sums over the last axis (batch-invariant).
    """
    a = [v]
    for W in reversed(Ws):
        a.append((W.mT * a[-1][..., None, :]).sum(-1))
    beta = a.pop()
    return beta, a[::-1]


def fc_gradients(Ws, a, grad_beta) -> list[torch.Tensor]:
    """∂L/∂W_j = a_j (W_{j−1} ⋯ W_1 ∇_β L)ᵀ and ∂L/∂v = W_{L−1} ⋯ W_1 ∇_β L."""
    u, grads = grad_beta, []
    for W, a_j in zip(Ws, a):
        grads.append(a_j[..., :, None] * u[..., None, :])
        u = (W * u[..., None, :]).sum(-1)
    return grads + [u]


def _sparsity(beta: np.ndarray) -> float:
    """‖β̂‖_1/‖β̂‖_2 ∈ [1, √d]: small when the DFT's mass sits on few frequencies."""
    spectrum = np.abs(np.fft.fft(beta))
    return float(spectrum.sum() / np.linalg.norm(spectrum))


def _unit(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w)


class ImplicitBiasLinearConv(Claim):
    id = "implicit-bias-linear-conv"
    title = "Linear conv nets → sparse Fourier max-margin; fully connected → ℓ2 SVM"
    source = ("S. Gunasekar, J. D. Lee, D. Soudry, N. Srebro, \"Implicit Bias of Gradient Descent "
              "on Linear Convolutional Networks\", NeurIPS 2018, Theorems 1 and 2.")
    statement = ("On separable data, GD on the exponential loss of an L-layer linear network with "
                 "full-width circular convolutions converges in direction to a stationary point "
                 "of min ‖β̂‖_{2/L} s.t. y_i⟨β, x_i⟩ ≥ 1 (ℓ1 of the DFT for L = 2): β̂ gets sparser "
                 "with depth, while a fully connected linear network of any depth converges to "
                 "the ℓ2 max-margin separator.")
    criterion = (
        "For every seed: the depth-2 conv net's Fourier-ℓ1 margin gap 1 − γ_F1(β_T)/γ*_F1 still "
        "shrinks over the last decade [T/10, T] (or is < 1e-4) and its direction β_T/‖β_T‖₂ is "
        "nearer the Fourier-ℓ1 SVM (cvxpy) than the ℓ2 SVM; every fully connected net (the "
        "control) has an ℓ2 margin gap that shrinks likewise and is nearer the ℓ2 SVM than the "
        "Fourier-ℓ1 SVM; no run beats either SVM's margin (a check of the references). The "
        "median ‖β̂‖_1/‖β̂‖_2 strictly falls from each conv depth to the next."
    )
    batched = True

    def sweep(self, profile: str) -> Sweep:
        return Sweep([dict(_PROFILES[profile])], list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        n, d = config["n"], config["d"]
        if not (isinstance(n, int) and isinstance(d, int) and 2 <= n < d):
            raise ConfigError(f"need integers 2 <= n < d (fewer points than dimensions, so the "
                              f"ℓ2 and Fourier-ℓ1 SVMs differ); got n={n}, d={d}")
        conv, fc = config["conv_depths"], config["fc_depths"]
        if sorted(set(conv)) != list(conv) or 2 not in conv or \
                any(not (isinstance(L, int) and 1 <= L <= 8) for L in conv):
            raise ConfigError(f"conv_depths must be increasing integers in [1, 8] containing 2 "
                              f"(got {conv})")
        if not fc or any(not (isinstance(L, int) and 2 <= L <= 8) for L in fc):
            raise ConfigError(f"fc_depths must be integers in [2, 8] (got {fc})")
        if config["steps"] < 10 * _LATE:
            raise ConfigError(f"steps must be >= {10 * _LATE} (got {config['steps']})")
        if not 0 < config["lr"] <= 0.5:
            raise ConfigError(f"lr must be in (0, 0.5] (got {config['lr']})")
        if not config["init"] > 0:
            raise ConfigError(f"init must be positive (got {config['init']})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # vectors of length d: threads cost more than they save
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def _run_batch(self, config, seeds, device):
        n, d = config["n"], config["d"]
        gens = [self.generator(config, s, device) for s in seeds]
        data = [separable_gaussian(n, d, generator=g, device=device)[:2] for g in gens]
        refs = [(max_margin(X.cpu(), y.cpu(), norm=2), fourier_max_margin(X.cpu(), y.cpu()))
                for X, y in data]
        Z = torch.stack([y[:, None] * X for X, y in data])[:, None]  # (S, 1, n, d): y_i x_i
        Zt = pad_to_simd(Z.mT.contiguous(), 3)  # (S, 1, d, n padded)
        inf_rows = pad_to_simd(torch.zeros(1, 1, n, dtype=torch.float64, device=device), 2,
                               value=math.inf)
        conv, fc = list(config["conv_depths"]), list(config["fc_depths"])
        # Every depth of a family in one tensor: a depth-L conv net is the deepest one with
        # its last layers frozen at the delta filter (DFT ≡ 1), a depth-L fully connected net
        # the deepest one with identity layers frozen; the masks zero the frozen gradients.
        std, S = config["init"] / math.sqrt(d), len(seeds)
        W_conv = torch.zeros(S, len(conv), max(conv), d, dtype=torch.float64, device=device)
        W_conv[..., 0] = 1.0
        for c, L in enumerate(conv):
            W_conv[:, c, :L] = torch.stack([std * torch.randn(L, d, generator=g, dtype=torch.float64,
                                                              device=device) for g in gens])
        conv_mask = torch.tensor([[[float(j < L)] for j in range(max(conv))] for L in conv],
                                 dtype=torch.float64, device=device)
        eye = torch.eye(d, dtype=torch.float64, device=device)
        fc_params = [eye.repeat(S, len(fc), 1, 1) for _ in range(max(fc) - 1)]
        fc_params.append(torch.zeros(S, len(fc), d, dtype=torch.float64, device=device))
        for f, L in enumerate(fc):
            net = DeepLinear([d] * L + [1], generators=gens, init="gaussian", scale=std,
                             device=device)
            for j, W in enumerate(net.weights[:-1]):
                fc_params[j][:, f] = W.detach()
            fc_params[-1][:, f] = net.weights[-1].detach()[:, 0, :]
        fc_masks = [torch.tensor([float(j < L - 1) for L in fc], dtype=torch.float64,
                                 device=device)[:, None, None] for j in range(max(fc) - 1)]
        fc_masks.append(torch.ones(len(fc), 1, dtype=torch.float64, device=device))

        def grad_log_loss(beta):
            """∇_β log Σ exp(−m_i) = −Σ_i softmax(−m)_i y_i x_i, shape (S, models, d)."""
            margins = pad_to_simd((Z * beta[:, :, None, :]).sum(-1), 2) + inf_rows
            weight = torch.exp(margins.amin(2, keepdim=True) - margins)
            return -(Zt * weight[:, :, None, :]).sum(-1) / weight.sum(2, keepdim=True)

        def normalized_step(params, grads):
            """θ − lr ∇/‖∇‖ per (seed, model): ‖Δθ‖ = lr (normalized GD)."""
            sq = sum(G.square().flatten(2).sum(2) for G in grads)
            step = config["lr"] / sq.sqrt()
            return [W - step.view(*step.shape, *[1] * (W.dim() - 2)) * G
                    for W, G in zip(params, grads)]

        marks = log_checkpoints(config["steps"], config["checkpoints"])
        curves = [{"t": []} for _ in seeds]
        t = 0
        for mark in marks:
            for _ in range(mark - t):
                g = grad_log_loss(end_to_end_filter(W_conv))
                (W_conv,) = normalized_step([W_conv], [conv_mask * conv_gradients(W_conv, g)])
                beta, a = fc_end_to_end(fc_params[:-1], fc_params[-1])
                grads = fc_gradients(fc_params[:-1], a, grad_log_loss(beta))
                fc_params = normalized_step(fc_params, [m * G for m, G in zip(fc_masks, grads)])
            beta_conv = end_to_end_filter(W_conv).cpu().numpy()
            beta_fc = fc_end_to_end(fc_params[:-1], fc_params[-1])[0].cpu().numpy()
            betas = {**{f"conv{L}": beta_conv[:, c] for c, L in enumerate(conv)},
                     **{f"fc{L}": beta_fc[:, f] for f, L in enumerate(fc)}}
            t = mark
            for i, (l2, f1) in enumerate(refs):
                curves[i]["t"].append(t)
                Zi = Z[i, 0].cpu().numpy()
                for name, b in betas.items():
                    bi = b[i]
                    gaps = (1 - float((Zi @ bi).min() / np.linalg.norm(bi)) / l2.margin,
                            1 - float((Zi @ bi).min() / fourier_l1(bi)) / f1.margin)
                    curves[i].setdefault(f"{name}_l2_gap", []).append(gaps[0])
                    curves[i].setdefault(f"{name}_f1_gap", []).append(gaps[1])
        return [self._summarize(refs[i], {name: b[i] for name, b in betas.items()}, curves[i])
                for i in range(len(seeds))]

    def _summarize(self, refs, betas, c) -> Outcome:
        l2, f1 = refs
        t = c["t"]
        i_late = next(i for i, s in enumerate(t) if s >= t[-1] / _LATE)
        metrics: dict[str, Any] = {"reference_kkt_residual": max(l2.kkt_residual, f1.kkt_residual),
                                   "svm_l2_sparsity": _sparsity(l2.w), "svm_f1_sparsity": _sparsity(f1.w)}
        for name, b in betas.items():
            for ref in ("l2", "f1"):
                gap = c[f"{name}_{ref}_gap"]
                metrics[f"{name}_{ref}_gap_T"] = gap[-1]
                metrics[f"{name}_{ref}_gap_T_over_10"] = gap[i_late]
                metrics[f"{name}_{ref}_min_gap"] = min(gap)
            metrics[f"{name}_distance_to_l2"] = float(np.linalg.norm(_unit(b) - _unit(l2.w)))
            metrics[f"{name}_distance_to_f1"] = float(np.linalg.norm(_unit(b) - _unit(f1.w)))
            metrics[f"{name}_sparsity"] = _sparsity(b)
        diverged = not all(np.isfinite(b).all() for b in betas.values())
        return Outcome(metrics, c, diverged=diverged)

    # -- judge -----------------------------------------------------------------------
    def judge(self, results: Results) -> Verdict:
        if not results:
            return Verdict.nothing_to_judge(self.criterion)
        cfg = results[0].config
        conv, fc = [f"conv{L}" for L in cfg["conv_depths"]], [f"fc{L}" for L in cfg["fc_depths"]]
        ms = [r.metrics for r in results]

        def shrinking(x, name, ref):
            return (x[f"{name}_{ref}_gap_T"] < x[f"{name}_{ref}_gap_T_over_10"]
                    or x[f"{name}_{ref}_gap_T"] < _CONVERGED)

        def med(key):
            return float(np.median([x[key] for x in ms]))

        sparsity = {name: med(f"{name}_sparsity") for name in conv + fc}
        checks = {
            "conv depth 2: Fourier-ℓ1 margin gap shrinking": all(shrinking(x, "conv2", "f1") for x in ms),
            "conv depth 2 nearer the Fourier-ℓ1 SVM": all(
                x["conv2_distance_to_f1"] < x["conv2_distance_to_l2"] for x in ms),
            "control: fully connected ℓ2 margin gap shrinking": all(
                shrinking(x, name, "l2") for x in ms for name in fc),
            "control: fully connected nearer the ℓ2 SVM": all(
                x[f"{name}_distance_to_l2"] < x[f"{name}_distance_to_f1"] for x in ms for name in fc),
            "no run beats an SVM margin": all(x[f"{name}_{ref}_min_gap"] >= -1e-9 for x in ms
                                             for name in conv + fc for ref in ("l2", "f1")),
            "Fourier sparsity grows with conv depth": all(
                sparsity[a] > sparsity[b] for a, b in zip(conv, conv[1:])),
        }
        failed = [k for k, ok in checks.items() if not ok]
        measured = (
            f"median of {len(ms)} seeds at T: ‖β̂‖₁/‖β̂‖₂ " +
            ", ".join(f"conv L={name[4:]} {sparsity[name]:.2f}" for name in conv) +
            f" (Fourier-ℓ1 SVM {med('svm_f1_sparsity'):.2f}, ℓ2 SVM {med('svm_l2_sparsity'):.2f}); "
            f"conv L=2 Fourier-ℓ1 margin gap {med('conv2_f1_gap_T'):.2g}, distance to Fourier-ℓ1 "
            f"SVM {med('conv2_distance_to_f1'):.3f} vs ℓ2 SVM {med('conv2_distance_to_l2'):.3f}; "
            "distance to the conv L=2 target for deeper conv: " +
            ", ".join(f"L={name[4:]} {med(f'{name}_distance_to_f1'):.3f}" for name in conv
                      if int(name[4:]) > 2) +
            "; fully connected ℓ2 margin gap / distance to ℓ2 SVM: " +
            ", ".join(f"L={name[2:]} {med(f'{name}_l2_gap_T'):.2g}/{med(f'{name}_distance_to_l2'):.3f}"
                      for name in fc))
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(ms),
                       details={"checks": checks, "sparsity": sparsity})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        cfg = results[0].config
        conv, fc = [f"conv{L}" for L in cfg["conv_depths"]], [f"fc{L}" for L in cfg["fc_depths"]]
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
        for j, name in enumerate(conv + fc):
            ref = "l2" if name in ("conv1",) or name.startswith("fc") else "f1"  # its prediction
            style = "-" if name.startswith("conv") else ":"
            for s, r in enumerate(results):
                gap = np.maximum(np.array(r.curves[f"{name}_{ref}_gap"], dtype=float), 1e-16)
                ax1.plot(r.curves["t"], gap, style, color=f"C{j}", alpha=0.5,
                         label=f"{name} vs {'Fourier-ℓ1' if ref == 'f1' else 'ℓ2'}" if s == 0 else None)
        ax1.set(xscale="log", yscale="log", xlabel="step t", ylabel="margin gap 1 − γ/γ*",
                title="margin gap to the predicted SVM")
        ax1.legend(fontsize=7)
        names = conv + fc
        x = np.arange(len(names))
        for k, key in enumerate(("distance_to_f1", "distance_to_l2")):
            ax2.bar(x + 0.4 * k - 0.2, [np.median([r.metrics[f"{nm}_{key}"] for r in results])
                                        for nm in names], 0.4,
                    label="to Fourier-ℓ1 SVM" if k == 0 else "to ℓ2 SVM")
        ax2.set(xticks=x, xticklabels=names, ylabel="‖u − û‖₂ (median)",
                title="direction at T vs the two SVMs")
        ax2.legend(fontsize=8)
        ax3.plot(x, [np.median([r.metrics[f"{nm}_sparsity"] for r in results]) for nm in names], "o")
        for key, label, color in (("svm_f1_sparsity", "Fourier-ℓ1 SVM", "C3"),
                                  ("svm_l2_sparsity", "ℓ2 SVM", "C0")):
            ax3.axhline(np.median([r.metrics[key] for r in results]), color=color, ls="--",
                        label=label)
        ax3.set(xticks=x, xticklabels=names, ylabel="‖β̂‖₁ / ‖β̂‖₂ (median)",
                title="Fourier sparsity of β (lower = sparser)")
        ax3.legend(fontsize=8)
        fig.tight_layout()
        return fig


CLAIM = ImplicitBiasLinearConv()
