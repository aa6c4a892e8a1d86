"""Directional rules of the non-smooth primitives, and the tangent they are chosen from.

Every rule gets the op's arguments. It returns ``None`` when the op hits no exact tie (the
caller then runs the original op, so the gradient is PyTorch's bit for bit) or the output
to use instead: the same values, with a backward through the piece that is active in the
direction ``v``. That piece is chosen from the sign of the one-sided directional
derivative ``du = J_u · v`` of the op's argument ``u`` (Kakade & Lee 2018, the
randomized chain rule): relu at 0 → slope 1 if ``du > 0``, else 0; a max with ties → the
tied entry with the largest ``du``; abs at 0 → ``sign(du)``.

``du`` is computed only where a tie occurs, from the autograd graph recorded so far, by
two vector-Jacobian products (``du = ∂/∂w ⟨J_uᵀ w, v⟩``): no tangent travels through the
tie-free part of the program, and later ties see earlier choices through the graph, as the
chain rule requires.

References
----------
S. Kakade, J. D. Lee, "Provably correct automatic subdifferentiation for qualified
programs", NeurIPS 2018.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from dltheory.autodiff.report import KinkReport


class _Direction:
    """The direction v: one tensor per leaf of the autograd graph, drawn on first sight.

    ``given`` maps ``id(leaf)`` to its direction; leaves not in it get a standard Gaussian
    from ``generator``, or zero when ``others_zero`` (``subgradient`` differentiates only
    with respect to its ``params``, so everything else is a constant).
    """

    def __init__(self, given: Mapping[int, torch.Tensor] | None, generator: torch.Generator,
                 others_zero: bool = False):
        self._v: dict[int, torch.Tensor] = dict(given or {})
        self._generator = generator
        self._others_zero = others_zero
        self._keep: list[torch.Tensor] = []  # keeps leaves alive so that their ids stay unique

    def of(self, leaf: torch.Tensor) -> torch.Tensor:
        key = id(leaf)
        if key not in self._v:
            if self._others_zero:
                self._v[key] = torch.zeros_like(leaf)
            else:  # drawn where the generator lives, so the draw does not depend on the device
                self._v[key] = torch.randn(leaf.shape, generator=self._generator, dtype=leaf.dtype,
                                           device=self._generator.device).to(leaf.device)
            self._keep.append(leaf)
        return self._v[key]


def _sources(t: torch.Tensor, known: dict) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """What ``t`` depends on: leaves requiring grad (tangent None: drawn from v), and the
    outputs of earlier ties whose tangents are ``known`` (the walk stops there)."""
    if t.grad_fn is None:
        return [(t, None)] if t.requires_grad else []
    seen, stack, found = set(), [t.grad_fn], {}
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in known:
            tensor, tangent = known[node]
            found[id(tensor)] = (tensor, tangent)
            continue
        variable = getattr(node, "variable", None)
        if variable is not None:
            found[id(variable)] = (variable, None)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return list(found.values())


def _tangent(u: torch.Tensor, direction: _Direction, known: dict) -> torch.Tensor:
    """``J_u · v``, the directional derivative of ``u`` along ``v``, by two VJPs.

    ``du = ∂/∂w Σ_s ⟨J_{u←s}ᵀ w, t_s⟩`` over the sources ``s`` of ``u``: leaves with
    ``t_s = v_s``, and outputs of earlier ties with their known tangents, so that each
    stretch of the graph between two ties is differentiated once.
    """
    if not isinstance(u, torch.Tensor) or not u.requires_grad:
        return torch.zeros_like(u)
    if u.grad_fn in known:
        return known[u.grad_fn][1]
    sources = _sources(u, known)
    with torch.enable_grad():
        w = torch.zeros_like(u, requires_grad=True)
        grads = torch.autograd.grad(u, [s for s, _ in sources], grad_outputs=w, create_graph=True,
                                    allow_unused=True)
        terms = [(g * (direction.of(s) if t is None else t)).sum()
                 for g, (s, t) in zip(grads, sources) if g is not None and g.requires_grad]
        if not terms:
            return torch.zeros_like(u)
        (du,) = torch.autograd.grad(sum(terms), w, allow_unused=True)
    return torch.zeros_like(u) if du is None else du.detach()


@dataclass
class _Ctx:
    """What a rule may use: the direction, the report, and which tensors are flat."""

    direction: _Direction
    report: KinkReport
    # tensor -> (values where the op that made it is flat, entries excluded, its version)
    flat: WeakIdKeyDictionary
    # flat values of the op that just ran without a tie, for the caller to attach
    pending_flat: tuple[float, ...] = ()
    # grad_fn of the output of a resolved tie -> (that output, its tangent)
    known: dict = field(default_factory=dict)

    def tangent(self, u: torch.Tensor) -> torch.Tensor:
        return _tangent(u, self.direction, self.known)

    def know(self, out: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
        """Record the tangent of a tie's output, so later ties start from it; returns ``out``."""
        self.known[out.grad_fn] = (out, tangent)
        return out

    def mark_flat(self, out: torch.Tensor, values: tuple[float, ...],
                  exclude: torch.Tensor | None = None) -> None:
        """Entries of ``out`` equal to one of ``values`` (except ``exclude``) lie on a flat piece."""
        if values:
            self.flat[out] = (values, exclude, out._version)

    def flat_values(self, x: torch.Tensor) -> tuple[tuple[float, ...], torch.Tensor | None]:
        """Values at which the entries of ``x`` have zero derivative, and the exceptions."""
        entry = self.flat.get(x)
        if entry is None or entry[2] != x._version:  # modified in place since: unknown
            return (), None
        return entry[0], entry[1]


class _Masked(torch.autograd.Function):
    """``out = value`` in the forward; ``∂out/∂inputs[k] = masks[k]`` (elementwise) backward."""

    @staticmethod
    def forward(ctx, value, masks, *inputs):
        ctx.masks = masks
        ctx.shapes = [x.shape if isinstance(x, torch.Tensor) else None for x in inputs]
        return value

    @staticmethod
    def backward(ctx, grad):
        grads = []
        for mask, shape in zip(ctx.masks, ctx.shapes):
            if mask is None or shape is None:
                grads.append(None)
            else:
                grads.append((grad * mask).sum_to_size(shape))
        return (None, None, *grads)


def _masked(value: torch.Tensor, masks: Sequence[torch.Tensor | None], *inputs) -> torch.Tensor:
    return _Masked.apply(value.detach(), list(masks), *inputs)


def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


# --- elementwise: relu, leaky_relu, relu6, hardtanh, clamp, abs -------------------------

def _count_equal(x: torch.Tensor, knot: float) -> int:
    """How many entries of x equal ``knot`` (at 0, counting non-zeros is twice as fast)."""
    if knot == 0:
        return x.numel() - int(x.count_nonzero())
    return int((x == knot).count_nonzero())


def _piecewise_linear(ctx: _Ctx, op: str, x: torch.Tensor, value: Callable[[], torch.Tensor],
                      knots: Sequence[tuple[float, float, float]],
                      slope_between: Callable[[torch.Tensor], torch.Tensor]):
    """An elementwise piecewise-linear op; ``knots`` = (location, slope left, slope right).

    At a knot the active piece is the right one if the tangent of x is > 0, the left one if
    < 0; a zero tangent is undetermined (the left piece, PyTorch's usual choice, is kept).
    """
    if not x.requires_grad:
        return None
    # where one side is constant the output there is the knot: a flat value
    flat_values = tuple(float(k) for k, left, right in knots if left == 0 or right == 0)
    n_ties = sum(_count_equal(x.detach(), k) for k, _, _ in knots)
    if n_ties == 0:
        ctx.pending_flat = flat_values
        return None
    at = [x.detach() == k for k, _, _ in knots]
    dx = ctx.tangent(x)
    slope = slope_between(x.detach()).to(x.dtype)
    undetermined = 0
    for tie, (_, left, right) in zip(at, knots):
        if not bool(tie.any()):
            continue
        # ties are few: choose the piece on the tied entries only
        dx_tie = dx[tie]
        slope[tie] = torch.where(dx_tie > 0, x.new_tensor(right), x.new_tensor(left))
        undetermined += int((dx_tie == 0).count_nonzero())
    ctx.report.ties[op] += n_ties
    ctx.report.undetermined[op] += undetermined
    out = ctx.know(_masked(value(), [slope], x), slope * dx)
    ctx.mark_flat(out, flat_values, exclude=at[0] if len(at) == 1 else torch.stack(at).any(0))
    return out


def _leaky(ctx, op, x, negative_slope):
    return _piecewise_linear(
        ctx, op, x, lambda: F.leaky_relu(x.detach(), negative_slope),
        [(0.0, negative_slope, 1.0)],
        lambda z: torch.where(z > 0, z.new_tensor(1.0), z.new_tensor(negative_slope)))


def _hardtanh(ctx, op, x, low, high):
    low = float("-inf") if low is None else float(low)
    high = float("inf") if high is None else float(high)
    knots = [(k, left, right) for k, left, right in ((low, 0.0, 1.0), (high, 1.0, 0.0))
             if abs(k) != float("inf")]
    return _piecewise_linear(ctx, op, x, lambda: x.detach().clamp(low, high), knots,
                             lambda z: ((z > low) & (z < high)).to(z.dtype))


def _abs(ctx, x):
    return _piecewise_linear(ctx, "abs", x, lambda: x.detach().abs(), [(0.0, -1.0, 1.0)], torch.sign)


def _relu_rule(ctx, args, kwargs):
    return _leaky(ctx, "relu", args[0], 0.0)


def _leaky_rule(ctx, args, kwargs):
    return _leaky(ctx, "leaky_relu", args[0], float(_arg(args, kwargs, 1, "negative_slope", 0.01)))


def _hardtanh_bounds(args, kwargs):
    return _arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)


def _hardtanh_rule(ctx, args, kwargs):
    return _hardtanh(ctx, "hardtanh", args[0], *_hardtanh_bounds(args, kwargs))


def _relu6_rule(ctx, args, kwargs):
    return _hardtanh(ctx, "relu6", args[0], 0.0, 6.0)


def _clamp_bounds(args, kwargs):
    return _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")


def _clamp_rule(ctx, args, kwargs):
    low, high = _clamp_bounds(args, kwargs)
    if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
        # tensor bounds are maximum/minimum in disguise
        x = args[0]
        for bound, take_larger, native in ((low, True, torch.maximum), (high, False, torch.minimum)):
            if bound is not None:
                tied = _binary_extreme(ctx, "clamp", x, bound, take_larger)
                x = native(x, bound) if tied is None else tied
        return x
    return _hardtanh(ctx, "clamp", args[0], low, high)


def _clamp_min_rule(ctx, args, kwargs):
    return _clamp_rule(ctx, (args[0], _arg(args, kwargs, 1, "min"), None), {})


def _clamp_max_rule(ctx, args, kwargs):
    return _clamp_rule(ctx, (args[0], None, _arg(args, kwargs, 1, "max")), {})


def _abs_rule(ctx, args, kwargs):
    return _abs(ctx, args[0])


# --- maximum / minimum and the max / min / amax / amin reductions -----------------------

def _binary_extreme(ctx, op, a, b, take_larger: bool):
    a_t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    b_t = b if isinstance(b, torch.Tensor) else torch.as_tensor(b, dtype=a_t.dtype, device=a_t.device)
    if not (a_t.requires_grad or b_t.requires_grad):
        return None
    tie = a_t == b_t
    if not bool(tie.any()):
        return None
    da, db = ctx.tangent(a_t), ctx.tangent(b_t)
    value = torch.maximum(a_t.detach(), b_t.detach()) if take_larger else \
        torch.minimum(a_t.detach(), b_t.detach())
    wins = (a_t > b_t) if take_larger else (a_t < b_t)
    prefer_a = (da > db) if take_larger else (da < db)
    mask_a = torch.where(tie, prefer_a, wins).to(value.dtype)
    tie_b = torch.broadcast_to(tie, value.shape)
    ctx.report.ties[op] += int(tie_b.count_nonzero())
    ctx.report.undetermined[op] += int((tie_b & torch.broadcast_to(da == db, value.shape)).count_nonzero())
    return ctx.know(_masked(value, [mask_a, 1 - mask_a], a_t, b_t), torch.where(mask_a.bool(), da, db))


class _ExtremeSelect(torch.autograd.Function):
    """The selected entry of x (one per slice of the reduced dims); backward goes to it."""

    @staticmethod
    def forward(ctx, x, mask, dims, keepdim, full):
        ctx.save_for_backward(mask)
        ctx.dims, ctx.keepdim, ctx.full = dims, keepdim, full
        out = torch.where(mask, x, 0).sum(dims, keepdim=True)
        if full and not keepdim:
            return out.reshape(())
        return out if keepdim else out.squeeze(dims)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        if ctx.full and not ctx.keepdim:
            grad = grad.reshape([1] * mask.ndim)
        elif not ctx.keepdim:
            for d in sorted(ctx.dims):
                grad = grad.unsqueeze(d)
        return torch.where(mask, grad, 0), None, None, None, None


def _pick(eq: torch.Tensor, score: torch.Tensor):
    """Per row of ``eq`` (tied entries), the entry with the largest score, first on equality.

    Returns the chosen index and, per row, whether the top score was itself tied.
    """
    score = torch.where(eq, score, float("-inf"))
    winners = score == score.max(-1, keepdim=True).values
    return winners.to(torch.int8).argmax(-1), winners.sum(-1) > 1


def _reduce_extreme(ctx, op, x, dim, keepdim, take_larger: bool, want_indices: bool):
    """max/min/amax/amin over ``dim`` (None: all). Ties: the largest (smallest) tangent wins."""
    if not x.requires_grad:
        return None
    dims = tuple(range(x.ndim)) if dim is None or dim == () else \
        ((dim,) if isinstance(dim, int) else tuple(dim))
    dims = tuple(d % max(x.ndim, 1) for d in dims)
    xd = x.detach()
    extreme = xd.amax(dims, keepdim=True) if take_larger else xd.amin(dims, keepdim=True)
    hit = xd == extreme
    tied = hit.sum(dims, keepdim=True) > 1
    n_tied = int(tied.count_nonzero())
    if n_tied == 0:
        return None
    dx = ctx.tangent(x)
    # the reduced dims last and flattened: one row per slice
    last = tuple(range(x.ndim - len(dims), x.ndim))
    moved_hit = hit.movedim(dims, last)
    rows = moved_hit.shape[: x.ndim - len(dims)]
    eq = moved_hit.reshape(*rows, -1)
    sign = 1.0 if take_larger else -1.0
    index, top_tied = _pick(eq, sign * dx.movedim(dims, last).reshape(*rows, -1))
    ctx.report.ties[op] += n_tied
    ctx.report.undetermined[op] += int((top_tied & tied.reshape(rows)).count_nonzero())
    onehot = torch.zeros_like(eq).scatter_(-1, index.unsqueeze(-1), True)
    mask = onehot.reshape(moved_hit.shape).movedim(last, dims)
    out = _ExtremeSelect.apply(x, mask, dims, keepdim, dim is None)
    ctx.know(out, _ExtremeSelect.apply(dx, mask, dims, keepdim, dim is None))
    if want_indices:
        idx = index.unsqueeze(dims[0]) if keepdim else index
        kind = torch.return_types.max if take_larger else torch.return_types.min
        return kind((out, idx))
    return out


def _extreme_rule(take_larger: bool, name: str, with_indices: bool):
    def rule(ctx, args, kwargs):
        x = args[0]
        other = _arg(args, kwargs, 1, "other")
        if with_indices and isinstance(other, torch.Tensor):  # torch.max(a, b) is maximum
            return _binary_extreme(ctx, name, x, other, take_larger)
        dim = _arg(args, kwargs, 1, "dim")
        keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
        want_indices = with_indices and dim is not None
        return _reduce_extreme(ctx, name, x, dim, keepdim, take_larger, want_indices)
    return rule


def _maximum_rule(ctx, args, kwargs):
    return _binary_extreme(ctx, "maximum", args[0], _arg(args, kwargs, 1, "other"), True)


def _minimum_rule(ctx, args, kwargs):
    return _binary_extreme(ctx, "minimum", args[0], _arg(args, kwargs, 1, "other"), False)


# --- max pooling -----------------------------------------------------------------------

class _PoolSelect(torch.autograd.Function):
    """Max-pool output whose gradient goes to the chosen input of each window."""

    @staticmethod
    def forward(ctx, x, value, index):
        ctx.save_for_backward(index)
        ctx.shape = x.shape
        return value

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        n, c, h, w = ctx.shape
        g = grad.new_zeros(n, c, h * w).scatter_add_(-1, index.reshape(n, c, -1), grad.reshape(n, c, -1))
        return g.view(n, c, h, w), None, None


def _pair(value, nd: int, fill) -> tuple[int, int]:
    """A 1d/2d pooling argument as (height, width); 1d pools over width only."""
    if isinstance(value, (list, tuple)):
        value = tuple(int(v) for v in value)
    else:
        value = (int(value),) * nd
    return ((fill,) + value) if nd == 1 else value


def _windows(t: torch.Tensor, kernel, stride, padding, fill) -> torch.Tensor:
    """The pooling windows of a (n, c, h, w) tensor, (n, c, out_h, out_w, kh*kw)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        t = F.pad(t, (pw, pw, ph, ph), value=fill)
    return t.unfold(2, kh, sh).unfold(3, kw, sw).flatten(-2)


def _disjoint(x4: torch.Tensor, out_shape, kernel, stride, padding) -> bool:
    """Whether the windows tile x4 exactly (the usual ``max_pool2d(x, k)``)."""
    (kh, kw), (oh, ow) = kernel, out_shape[2:]
    return kernel == stride and padding == (0, 0) and x4.is_contiguous() \
        and x4.shape[2:] == (oh * kh, ow * kw)


def _per_window(mask: torch.Tensor, kernel) -> torch.Tensor:
    """How many entries of each (disjoint) window are set, by an average pool."""
    return F.avg_pool2d(mask.float(), kernel) * (kernel[0] * kernel[1])


def _pool_choice(x4, key, tangent_of_x4, kernel, stride, padding):
    """Per window: tied (more than one entry equals ``key``), the tied entry with the
    largest tangent (index in the input plane), whether that tangent is tied too, and the
    tangent of x4 (computed by ``tangent_of_x4()`` only when a window ties).

    Returns None when no window ties.
    Disjoint windows are handled by pooling ops in x4's own memory order: comparing over
    an unfolded view, or reducing or flattening its window dims, costs 5-50x more.
    """
    n, c, oh, ow = key.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if _disjoint(x4, key.shape, kernel, stride, padding):
        eq = (x4.view(n, c, oh, kh, ow, kw) == key.view(n, c, oh, 1, ow, 1)).view(x4.shape)
        if int(eq.count_nonzero()) == int(key.isfinite().count_nonzero()):
            return None  # each window (not keyed out by NaN) holds its max once
        tied, dx = _per_window(eq, kernel) > 1.5, tangent_of_x4()
        score = torch.where(eq, dx, float("-inf"))
        best, index = F.max_pool2d_with_indices(score, kernel)  # the first largest tangent
        winners = (score.view(n, c, oh, kh, ow, kw) == best.view(n, c, oh, 1, ow, 1)).view(x4.shape)
        return tied, index, _per_window(winners, kernel) > 1.5, dx
    eq = _windows(x4, kernel, stride, padding, float("-inf")) == key[..., None]
    if int(eq.count_nonzero()) == int(key.isfinite().count_nonzero()):
        return None
    tied, dx = eq.sum(-1) > 1, tangent_of_x4()
    k, top_tied = _pick(eq, _windows(dx, kernel, stride, padding, 0.0))
    rows = torch.arange(oh, device=x4.device).view(-1, 1) * sh - ph
    cols = torch.arange(ow, device=x4.device).view(1, -1) * sw - pw
    return tied, (rows + k // kw) * x4.shape[3] + cols + k % kw, top_tied, dx


def _max_pool(ctx, op: str, nd: int, args, kwargs):
    """max_pool1d/2d. A window ties when two entries equal its max; the directional rule
    routes its gradient to the tied entry with the largest tangent."""
    x = args[0]
    kernel = _arg(args, kwargs, 1, "kernel_size")
    stride = _arg(args, kwargs, 2, "stride") or kernel
    padding = _arg(args, kwargs, 3, "padding", 0)
    dilation = _arg(args, kwargs, 4, "dilation", 1)
    ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    return_indices = bool(_arg(args, kwargs, 6, "return_indices", False))
    if not x.requires_grad or _pair(dilation, nd, 1) != (1, 1) or ceil_mode:
        return None
    pool = F.max_pool1d_with_indices if nd == 1 else F.max_pool2d_with_indices
    value, native_index = pool(x, kernel, stride, padding, dilation, ceil_mode, True)
    geometry = _pair(kernel, nd, 1), _pair(stride, nd, 1), _pair(padding, nd, 0)
    x4 = x if x.ndim == nd + 2 else x.unsqueeze(0)
    x4 = x4.unsqueeze(2) if nd == 1 else x4
    n, c = x4.shape[:2]
    v4 = value.detach().reshape(n, c, -1, value.shape[-1])
    # Windows whose max lies on a flat piece of the producer (0 after a tie-free relu)
    # have zero derivative whatever entry is chosen: key them by NaN so no entry matches.
    flats, exclude = ctx.flat_values(x)
    key = v4
    if flats:
        on_flat = v4 == flats[0]
        for value_ in flats[1:]:
            on_flat |= v4 == value_
        if exclude is not None:  # a window holding one of the producer's ties is not flat
            on_flat &= ~_windows(exclude.reshape(x4.shape), *geometry, False).any(-1)
        key = v4.masked_fill(on_flat, float("nan"))
        ctx.report.flat[op] += int(on_flat.count_nonzero())
    choice = _pool_choice(x4.detach(), key, lambda: ctx.tangent(x4), *geometry)
    if choice is None:
        return (value, native_index) if return_indices else value
    tied, chosen, top_tied, dx4 = choice
    ctx.report.ties[op] += int(tied.count_nonzero())
    ctx.report.identical[op] += int((tied & top_tied).count_nonzero())
    index = torch.where(tied, chosen, native_index.reshape(v4.shape))
    out4 = _PoolSelect.apply(x4, v4, index)
    ctx.know(out4, dx4.flatten(2).gather(-1, index.flatten(2)).view_as(v4))
    out = out4.reshape(value.shape)
    return (out, index.reshape(native_index.shape)) if return_indices else out


def _max_pool1d_rule(ctx, args, kwargs):
    return _max_pool(ctx, "max_pool1d", 1, args, kwargs)


def _max_pool2d_rule(ctx, args, kwargs):
    return _max_pool(ctx, "max_pool2d", 2, args, kwargs)


# --- losses ----------------------------------------------------------------------------

def _l1_loss_rule(ctx, args, kwargs):
    x, target = args[0], _arg(args, kwargs, 1, "target")
    reduction = _arg(args, kwargs, 4, "reduction", "mean")
    if _arg(args, kwargs, 5, "weight") is not None:
        return None
    out = _abs(ctx, x - target)
    if out is None:
        return None
    return {"mean": out.mean, "sum": out.sum, "none": lambda: out}[reduction]()


RULES: dict[Callable, Callable[[_Ctx, tuple, dict], Any]] = {}
for _f in (torch.relu, F.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_):
    RULES[_f] = _relu_rule
RULES[F.leaky_relu] = _leaky_rule
RULES[F.hardtanh] = _hardtanh_rule
RULES[F.relu6] = _relu6_rule
for _f in (torch.clamp, torch.clip, torch.Tensor.clamp, torch.Tensor.clip, torch.clamp_,
           torch.clip_, torch.Tensor.clamp_, torch.Tensor.clip_):
    RULES[_f] = _clamp_rule
for _f in (torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_min_, torch.Tensor.clamp_min_):
    RULES[_f] = _clamp_min_rule
for _f in (torch.clamp_max, torch.Tensor.clamp_max, torch.clamp_max_, torch.Tensor.clamp_max_):
    RULES[_f] = _clamp_max_rule
for _f in (torch.abs, torch.Tensor.abs, torch.absolute, torch.abs_, torch.Tensor.abs_):
    RULES[_f] = _abs_rule
for _f in (torch.maximum, torch.Tensor.maximum, torch.fmax):
    RULES[_f] = _maximum_rule
for _f in (torch.minimum, torch.Tensor.minimum, torch.fmin):
    RULES[_f] = _minimum_rule
for _f in (torch.max, torch.Tensor.max):
    RULES[_f] = _extreme_rule(True, "max", True)
for _f in (torch.min, torch.Tensor.min):
    RULES[_f] = _extreme_rule(False, "min", True)
for _f in (torch.amax, torch.Tensor.amax):
    RULES[_f] = _extreme_rule(True, "amax", False)
for _f in (torch.amin, torch.Tensor.amin):
    RULES[_f] = _extreme_rule(False, "amin", False)
for _f in (F.max_pool1d, F.max_pool1d_with_indices, torch.max_pool1d):
    RULES[_f] = _max_pool1d_rule
for _f in (F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d):
    RULES[_f] = _max_pool2d_rule
RULES[F.l1_loss] = _l1_loss_rule

# Functional forms whose ``inplace`` flag sits at this position.
_INPLACE_ARG = {F.relu: 1, F.leaky_relu: 2, F.hardtanh: 3, F.relu6: 1}


def inplace(func, args, kwargs) -> bool:
    """Whether this call of a rule's op writes its result into its first argument."""
    position = _INPLACE_ARG.get(func)
    if position is not None:
        return bool(_arg(args, kwargs, position, "inplace", False))
    return getattr(func, "__name__", "").endswith("_")


# Non-smooth ops without a directional rule: reported, refused under strict=True.
UNHANDLED = {
    F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.fractional_max_pool2d, F.fractional_max_pool3d, torch.max_pool3d, torch.sort,
    torch.Tensor.sort, torch.topk, torch.Tensor.topk,
    torch.median, torch.Tensor.median, torch.kthvalue, torch.Tensor.kthvalue,
    torch.cummax, torch.cummin, F.hardshrink, F.softshrink, F.hardswish, F.hardsigmoid,
    F.hinge_embedding_loss, F.multi_margin_loss, F.margin_ranking_loss,
    F.multilabel_margin_loss, F.triplet_margin_loss, F.threshold, F.prelu, F.rrelu,
    torch.norm, torch.linalg.vector_norm, torch.linalg.norm, torch.Tensor.norm,
}
