"""Lazy training of a deep ResNet: every layer moves O(1/√m) relative to its own scale.

Du, Lee, Li, Wang, Zhai 2019 (Section 6, Theorem 6.1 and its Lemmas): for the ResNet
x⁽¹⁾ = √(c_σ/m) σ(W₁x), x⁽ˡ⁾ = x⁽ˡ⁻¹⁾ + c_res/(L√m) σ(W_l x⁽ˡ⁻¹⁾) (l = 2..L), f(x) = aᵀx⁽ᴸ⁾
with N(0, 1) weights and a smooth σ, GD on the square loss reaches zero training loss at a
linear rate once m is polynomial in n, 1/λ0 and L, and every weight matrix stays within
‖W_l(t) − W_l(0)‖_F ≤ R'√m with R' = O(1/√m): the change of each layer is O(1) in Frobenius
norm while its operator norm at initialization is ≈ 2√m, so the relative change of every
layer map, ‖W_l(t) − W_l(0)‖_F / ‖W_l(0)‖₂, falls as m^{-1/2}. Chizat, Oyallon, Bach 2019:
this is an effect of the output scale; with f/√m and the step ×m (their α = m^{-1/2}) the
same network is trained far from its initialization.

Setup: n random points on the unit sphere, random ±1 labels, the ResNet of
:class:`dltheory.models.ResNet` with σ = softplus (Du et al.'s smoothness assumption),
depth L, fixed outer layer a (as in the two-layer claim), full-batch GD on ½Σ_i(f(x_i) − y_i)²
on W_1..W_L with step η = 1/λmax(K(0)), K(0) = JJᵀ the empirical NTK Gram of the trained
weights at initialization (per seed, float64). Widths m on a geometric grid; all seeds of a
width run as one batched computation (float32 steps, float64 measurements). Negative
control: the same runs with the output scaled by 1/√m and the step by m.

At the quick scale (n = 12, m = 32…512, L = 3) the residual layers follow m^{-1/2}, but the
input layer W_1 is not yet lazy at the small widths (it moves about its own spectral norm
at m = 32), so its fitted slope over the whole grid is shallower than −½; the verdict
reports the slope over the widest three widths as well (not judged).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dltheory.claims.base import Claim, Outcome, Results, Verdict
from dltheory.claims.lazy_training import loglog_slope
from dltheory.engine import Sweep
from dltheory.errors import ConfigError
from dltheory.models import ResNet, seed_map, seed_matmul

_PROFILES = {
    "smoke": dict(n=6, d=4, depth=3, steps=150, widths=[16, 64, 256]),
    "quick": dict(n=12, d=5, depth=3, steps=1200, widths=[32, 64, 128, 256, 512]),
    "full": dict(n=50, d=10, depth=6, steps=5000, widths=[2 ** k for k in range(5, 13)]),
}
_SEEDS = {"smoke": 2, "quick": 4, "full": 16}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Criterion constants, fixed from the theorems before running (not tuned on results).
LOSS_RATIO = 1e-3  # "reaches zero loss": L(T) ≤ 1e-3 · L(0) at every width
EXPONENT = -0.5  # Du et al. 2019: ‖W_l(t) − W_l(0)‖_F / ‖W_l(0)‖₂ = O(m^{-1/2})
EXPONENT_TOL = 0.1  # finite-width corrections to the exponent allowed on our grid
CONTROL_EXPONENT = -0.25  # control: slope above the midpoint between lazy (−½) and O(1) (0)


class LazyTrainingResNet(Claim):
    id = "lazy-training-resnet"
    title = "A wide ResNet reaches zero loss while every layer moves O(1/√m)"
    source = ("S. S. Du, J. D. Lee, H. Li, L. Wang, X. Zhai, \"Gradient Descent Finds Global "
              "Minima of Deep Neural Networks\", ICML 2019, Section 6 (Theorem 6.1); "
              "L. Chizat, E. Oyallon, F. Bach, \"On Lazy Training in Differentiable "
              "Programming\", NeurIPS 2019.")
    statement = ("Gradient descent on a wide ResNet in the scaling of Du et al. reaches zero "
                 "training loss while every weight matrix moves O(1) in Frobenius norm, "
                 "i.e. O(m^{-1/2}) relative to its operator norm; with the output scaled "
                 "down by √m (and the step up by m) the layers move O(1) relative to it.")
    criterion = (
        f"Du et al. scaling, every width and seed: L(T) ≤ {LOSS_RATIO:g}·L(0). For every "
        f"layer l (the input layer W_1 and each residual W_l), the log-log slope against m of "
        f"the median ‖W_l(T) − W_l(0)‖_F / ‖W_l(0)‖₂ is within ±{EXPONENT_TOL} of {EXPONENT}. "
        f"Control (output ×1/√m, step ×m): the slope of that quantity is above "
        f"{CONTROL_EXPONENT} for every layer (layers move O(1) relative to their scale)."
    )
    batched = True

    # -- setup -----------------------------------------------------------------------
    def sweep(self, profile: str) -> Sweep:
        base = dict(_PROFILES[profile])
        widths = base.pop("widths")
        return Sweep(Sweep.grid(base, {"m": widths, "scaling": ["ntk", "mean-field"]}),
                     list(range(_SEEDS[profile])), profile, self.id)

    def validate(self, config: Mapping[str, Any]) -> None:
        for key in ("n", "d", "m", "steps"):
            if config[key] < 1:
                raise ConfigError(f"{key} must be >= 1 (got {config[key]})")
        if config["d"] < 2:
            raise ConfigError(f"d must be >= 2 so that n points on the sphere are distinct "
                              f"(got {config['d']})")
        if config["depth"] < 2:
            raise ConfigError(f"depth must be >= 2 (at least one residual layer; got "
                              f"{config['depth']})")
        if config["scaling"] not in ("ntk", "mean-field"):
            raise ConfigError(f"scaling must be ntk or mean-field (got {config['scaling']!r})")
        if config.get("dtype", "float32") not in _DTYPES:
            raise ConfigError(f"dtype must be float32 or float64 (got {config['dtype']!r})")

    # -- run -------------------------------------------------------------------------
    def run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run_batch(config, seeds, device)
        finally:
            torch.set_num_threads(threads)

    def _data(self, config: Mapping[str, Any], seed: int, device: str):
        """Points and labels from a generator that ignores m and the scaling."""
        g = self.generator({k: config[k] for k in ("n", "d")}, seed, device)
        X = torch.randn(config["n"], config["d"], generator=g, dtype=torch.float64, device=device)
        X = X / X.norm(dim=1, keepdim=True)
        y = torch.randint(0, 2, (config["n"],), generator=g, device=device).to(X.dtype) * 2 - 1
        return X, y

    def network(self, config: Mapping[str, Any], seeds: Sequence[int], device: str) -> ResNet:
        """The seeds' ResNets at initialization (float64; the precision is not part of the
        experiment, so it does not enter the generator)."""
        drawn = {k: v for k, v in config.items() if k != "dtype"}
        return ResNet(config["d"], config["m"], config["depth"], activation="softplus",
                      train_outer=False, device=device,
                      generators=[self.generator(drawn, s, device) for s in seeds])

    @staticmethod
    def forward(net: ResNet, W_in: torch.Tensor, W: torch.Tensor, a: torch.Tensor,
                X: torch.Tensor) -> torch.Tensor:
        """``net``'s forward pass with the weights given (any dtype), outputs (S, n)."""
        h = math.sqrt(net.c_sigma / net.m) * seed_map(net.sigma, seed_matmul(X, W_in.mT))
        branch = net.c_res / (net.depth * math.sqrt(net.m))
        for layer in range(net.depth - 1):
            h = h + branch * seed_map(net.sigma, seed_matmul(h, W[:, layer].mT))
        return (h * a[:, None, :]).sum(-1)

    @staticmethod
    def gradients(net: ResNet, W_in: torch.Tensor, Ws: Sequence[torch.Tensor], a: torch.Tensor,
                  X: torch.Tensor, y: torch.Tensor | None, residual: torch.Tensor | None = None):
        """Backpropagation of ½‖f(X) − y‖² by hand, each seed its own: the gradient of a
        layer is returned as its two thin factors (left, right), ∇W = leftᵀ right, so the
        caller can fuse the step into one batched GEMM. Returns (input factors, residual
        factors per layer, loss per seed). ``residual``, if given, is backpropagated in
        place of f(X) − y (``y`` is then unused): with ones, row i of a layer's factors is point i's ∂f_i/∂W =
        left_iᵀ right_i (see :meth:`tangent_kernel`)."""
        c1 = math.sqrt(net.c_sigma / net.m)
        branch = net.c_res / (net.depth * math.sqrt(net.m))
        z1 = seed_matmul(X, W_in.mT)
        hs, zs = [c1 * seed_map(net.sigma, z1)], []
        for W_l in Ws:
            zs.append(seed_matmul(hs[-1], W_l.mT))
            hs.append(hs[-1] + branch * seed_map(net.sigma, zs[-1]))
        r = (hs[-1] * a[:, None, :]).sum(-1) - y if residual is None else residual
        delta = r[..., None] * a[:, None, :]  # ∂/∂x⁽ᴸ⁾, (S, n, m)
        factors = [None] * len(Ws)
        for layer in reversed(range(len(Ws))):
            # softplus' = sigmoid (σ is softplus: Du et al.'s smooth activation). Both go
            # through seed_map: float32 softplus rounds its scalar remainder otherwise.
            e = branch * delta * seed_map(torch.sigmoid, zs[layer])
            factors[layer] = (e, hs[layer])
            delta = delta + seed_matmul(e, Ws[layer])
        e1 = c1 * delta * seed_map(torch.sigmoid, z1)
        return (e1, X), factors, 0.5 * (r ** 2).sum(1)

    @classmethod
    def tangent_kernel(cls, net: ResNet, W_in: torch.Tensor, Ws: Sequence[torch.Tensor],
                       a: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """The tangent kernel K = J Jᵀ (S, n, n) over every trained weight, without J.

        Point i's gradient in a layer is an outer product left_iᵀ right_i (:meth:`gradients`
        with unit residuals), so ⟨∂f_i/∂W, ∂f_j/∂W⟩ = ⟨left_i, left_j⟩·⟨right_i, right_j⟩
        and K = Σ_layers (left leftᵀ) ⊙ (right rightᵀ): O(n²m) a layer. The rows of J are
        n × depth·m² (at the full profile's m = 4096, depth 6: 33 GB a seed in float64).
        """
        ones = torch.ones(X.shape[:2], dtype=X.dtype, device=X.device)
        first, factors, _ = cls.gradients(net, W_in, Ws, a, X, None, residual=ones)
        return sum(seed_matmul(left, left.mT) * seed_matmul(right, right.mT)
                   for left, right in [first, *factors])

    def _run_batch(self, config: Mapping[str, Any], seeds: Sequence[int], device: str):
        m, steps = config["m"], config["steps"]
        dtype = _DTYPES[config.get("dtype", "float32")]
        data = [self._data(config, s, device) for s in seeds]
        X64 = torch.stack([x for x, _ in data])
        y64 = torch.stack([t for _, t in data])
        net = self.network(config, seeds, device)
        W_in0, W0, a64 = net.W_in.detach(), net.W.detach(), net.a
        out_scale = 1 / math.sqrt(m) if config["scaling"] == "mean-field" else 1.0

        # Step η = 1/λmax(K(0)) of the Du et al. network (float64).
        W0_layers = [W0[:, layer].contiguous() for layer in range(net.depth - 1)]
        K0 = self.tangent_kernel(net, W_in0, W0_layers, a64, X64)
        del W0_layers
        eta = 1 / torch.linalg.eigvalsh(K0)[:, -1]
        with torch.no_grad():
            u = self.forward(net, W_in0, W0, a64, X64)
        # Mean-field control: output ×1/√m, step ×m (Chizat et al.'s α = m^{-1/2}).
        lr = (eta * (m if config["scaling"] == "mean-field" else 1)).to(dtype)

        X, y, a = X64.to(dtype), y64.to(dtype), a64.to(dtype) * out_scale
        # Copies (also in float64), contiguous per layer: the steps update them in place.
        w_in = W_in0.to(dtype, copy=True)
        ws = [W0[:, layer].to(dtype, copy=True).contiguous() for layer in range(net.depth - 1)]
        lr = lr[:, None, None]
        losses = [0.5 * ((u.detach() * out_scale - y64) ** 2).sum(1)]
        for _ in range(steps):
            g_in, gs, _ = self.gradients(net, w_in, ws, a, X, y)
            # W ← W − η ∇W (η scales the thin factor). Every GEMM goes through seed_matmul:
            # a plain batched GEMM's float32 rounding depends on the batch count here.
            for W_l, (left, right) in zip(ws, gs):
                W_l.sub_(seed_matmul((lr * left).mT, right))
            w_in.sub_(seed_matmul((lr * g_in[0]).mT, g_in[1]))
        W_in_T, W_T = w_in.double(), torch.stack(ws, 1).double()
        with torch.no_grad():
            r = self.forward(net, W_in_T, W_T, a64 * out_scale, X64) - y64
            losses.append(0.5 * (r ** 2).sum(1))
            # ‖ΔW_l‖_F / ‖W_l(0)‖₂ for the input layer (l = 1) and each residual layer.
            moves = [(W_in_T - W_in0).flatten(1).norm(dim=1)
                     / torch.linalg.matrix_norm(W_in0, ord=2)]
            for layer in range(net.depth - 1):
                moves.append((W_T[:, layer] - W0[:, layer]).flatten(1).norm(dim=1)
                             / torch.linalg.matrix_norm(W0[:, layer], ord=2))
            moves = torch.stack(moves, 1).tolist()
            ratio = (losses[1] / losses[0]).tolist()
        outcomes = []
        for i in range(len(seeds)):
            metrics = {"m": m, "scaling": config["scaling"], "loss_ratio": ratio[i],
                       **{f"layer_move_{j + 1}": v for j, v in enumerate(moves[i])}}
            outcomes.append(Outcome(metrics, {}, diverged=not math.isfinite(ratio[i])))
        return outcomes

    # -- judge -----------------------------------------------------------------------
    @staticmethod
    def _layers(results: Results) -> list[str]:
        return sorted((k for k in results[0].metrics if k.startswith("layer_move_")),
                      key=lambda k: int(k.rsplit("_", 1)[1]))

    def _slopes(self, results: Results) -> dict[str, tuple[float, float]]:
        widths = sorted({r.config["m"] for r in results})
        out = {}
        for key in self._layers(results):
            med = [float(np.median([r.metrics[key] for r in results.where(m=m)])) for m in widths]
            out[key] = loglog_slope(widths, med) if min(med) > 0 else (math.nan, math.nan)
        return out

    def judge(self, results: Results) -> Verdict:
        ntk, mf = results.where(scaling="ntk"), results.where(scaling="mean-field")
        if len({r.config["m"] for r in ntk}) < 2 or len({r.config["m"] for r in mf}) < 2:
            return Verdict(False, "need at least two widths in each scaling to fit a slope",
                           self.criterion, len(results))
        s_ntk, s_mf = self._slopes(ntk), self._slopes(mf)
        checks = {
            "zero loss at every width": all(r.metrics["loss_ratio"] <= LOSS_RATIO for r in ntk),
            "every layer moves ∝ m^-1/2": all(abs(s[0] - EXPONENT) <= EXPONENT_TOL
                                              for s in s_ntk.values()),
            "control: layers move O(1)": all(s[0] > CONTROL_EXPONENT for s in s_mf.values()),
        }
        failed = [k for k, ok in checks.items() if not ok]
        worst = max(r.metrics["loss_ratio"] for r in ntk)
        worst_mf = max(r.metrics["loss_ratio"] for r in mf)
        widths = sorted({r.config["m"] for r in ntk})
        first = self._layers(results)[0]
        span = [float(np.median([r.metrics[first] for r in ntk.where(m=m)]))
                for m in (widths[0], widths[-1])]
        # Reported, not judged: the slope over the widest three widths (nearer the
        # asymptotic regime the theorem describes).
        top = self._slopes(Results(r for r in ntk if r.config["m"] in widths[-3:]))

        def fmt(slopes):
            return ", ".join(f"W{k.rsplit('_', 1)[1]} {s[0]:.3f} ± {s[1]:.3f}"
                             for k, s in slopes.items())

        measured = (f"Du et al. scaling: worst L(T)/L(0) = {worst:.2g}; slopes vs m of "
                    f"‖ΔW_l‖_F/‖W_l(0)‖₂: {fmt(s_ntk)} (widest three widths only: {fmt(top)}; "
                    f"W1 moves {span[0]:.2f} of its norm at m={widths[0]}, {span[1]:.2f} at "
                    f"m={widths[-1]}). Control (f/√m, step ×m): worst "
                    f"L(T)/L(0) = {worst_mf:.2g}; slopes {fmt(s_mf)}")
        if failed:
            measured += "; failed: " + ", ".join(failed)
        return Verdict(not failed, measured, self.criterion, len(results),
                       details={"checks": checks, "ntk_slopes": s_ntk, "control_slopes": s_mf})

    # -- figure ----------------------------------------------------------------------
    def figure(self, results: Results):
        import matplotlib.pyplot as plt

        layers = self._layers(results)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for ax, scaling, title in zip(axes, ("ntk", "mean-field"),
                                      ("Du et al. scaling", "control: f/√m, step ×m")):
            runs = results.where(scaling=scaling)
            widths = sorted({r.config["m"] for r in runs})
            for i, key in enumerate(layers):
                med = [np.median([r.metrics[key] for r in runs.where(m=m)]) for m in widths]
                ax.plot(widths, med, "o-", color=f"C{i}",
                        label=f"W{key.rsplit('_', 1)[1]}" + (" (input)" if i == 0 else ""))
            ref = np.median([r.metrics[layers[0]] for r in runs.where(m=widths[0])])
            ax.plot(widths, ref * (np.array(widths) / widths[0]) ** EXPONENT, "k--",
                    label="m^-1/2")
            ax.set(xscale="log", yscale="log", xlabel="width m", title=title)
            ax.set_xticks(widths, [str(m) for m in widths], minor=False)
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
            ax.legend(fontsize=8)
        axes[0].set_ylabel("‖W_l(T) − W_l(0)‖_F / ‖W_l(0)‖₂")
        fig.tight_layout()
        return fig


CLAIM = LazyTrainingResNet()
