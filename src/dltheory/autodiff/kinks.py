"""Correct subgradients of non-smooth programs: the randomized directional chain rule.

PyTorch differentiates each non-smooth primitive by a fixed convention (relu'(0) = 0,
``maximum`` splits ties, ``clamp`` takes 1 at its bounds ...), and the conventions do not
compose: d/dx [relu(x) − relu(−x)] at 0 comes out 0, the true derivative is 1. Kakade & Lee
(2018) show that choosing, at every kink, the piece that is active in a direction ``v``
— the one selected by the sign of the one-sided directional derivative of the kink's
argument — yields ``lim_{ε↓0} ∇f(x + εv)``, an element of the Clarke subdifferential, for
every program built from piecewise-smooth primitives (almost every ``v``).

How it runs here. A :class:`torch.overrides.TorchFunctionMode` watches the non-smooth
primitives during an ordinary forward pass. Where an op hits no exact tie (the common
case), the original op runs untouched, so the gradient is PyTorch's bit for bit. Where it
hits a tie, the directional derivative ``du = J_u · v`` of the op's argument ``u`` is
computed from the autograd graph recorded so far (a Jacobian-vector product by two
vector-Jacobian products, ``du = ∂/∂w ⟨J_uᵀ w, v⟩``), the active piece is chosen from its
sign, and the op is replaced by a :class:`torch.autograd.Function` whose backward uses that
piece. Later ties see the earlier choices through the graph, as the chain rule requires.
Where ``du`` is itself zero the rule's guarantee does not apply (the program is outside the
qualified class at that point); the :class:`KinkReport` says so.

References
----------
S. Kakade, J. D. Lee, "Provably correct automatic subdifferentiation for qualified
programs", NeurIPS 2018.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dltheory.errors import UserError


class UnhandledKinkError(UserError):
    """A non-smooth op without a directional rule ran under ``exact_kinks(strict=True)``."""


@dataclass
class KinkReport:
    """What the last forward pass met at its kinks.

    ``ties[op]`` counts tensor elements (or reduction slices) that sat exactly on a kink;
    ``undetermined[op]`` counts those whose directional derivative was also zero, where the
    randomized rule's guarantee fails (the program is not qualified there) and the piece
    was chosen by PyTorch's convention. ``harmless[op]`` counts ties whose pieces agree in
    value and derivative (e.g. equal entries of a max whose tangents are also equal and
    which do not depend on the direction), reported apart so they do not drown the rest.
    """

    ties: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    undetermined: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unhandled: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def certified(self) -> bool:
        """True when every tie was resolved by the directional rule (no zero tangent)."""
        return not any(self.undetermined.values()) and not any(self.unhandled.values())

    def __str__(self) -> str:
        if not any(self.ties.values()) and not any(self.unhandled.values()):
            return "KinkReport: no exact tie; the gradient is PyTorch's."
        parts = [f"{op}: {n} ties ({self.undetermined.get(op, 0)} undetermined)"
                 for op, n in sorted(self.ties.items()) if n]
        parts += [f"{op}: {n} calls without a directional rule"
                  for op, n in sorted(self.unhandled.items()) if n]
        verdict = "certified" if self.certified else "NOT certified (see undetermined)"
        return f"KinkReport ({verdict}): " + "; ".join(parts)


class _Direction:
    """The direction v, one tensor per leaf of the autograd graph, drawn on first sight."""

    def __init__(self, given: Mapping[int, torch.Tensor] | None, generator):
        self._v: dict[int, torch.Tensor] = dict(given or {})
        self._generator = generator
        self._keep: list[torch.Tensor] = []  # keeps leaves alive so their ids stay unique

    def of(self, leaf: torch.Tensor) -> torch.Tensor:
        key = id(leaf)
        if key not in self._v:
            gen = self._generator
            if gen is not None and gen.device != leaf.device:
                gen = None
            self._v[key] = torch.randn(leaf.shape, generator=gen, dtype=leaf.dtype,
                                       device=leaf.device)
            self._keep.append(leaf)
        return self._v[key]


def _leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors (requiring grad) that ``t`` depends on, by walking its graph."""
    if t.grad_fn is None:
        return [t] if t.requires_grad else []
    seen, stack, found = set(), [t.grad_fn], {}
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            found[id(variable)] = variable
        stack.extend(nxt for nxt, _ in node.next_functions)
    return list(found.values())


def _tangent(u: torch.Tensor, direction: _Direction) -> torch.Tensor:
    """``J_u · v``: the directional derivative of ``u`` along ``v``, by two VJPs."""
    if not isinstance(u, torch.Tensor) or not u.requires_grad:
        return torch.zeros_like(u)
    leaves = _leaves(u)
    if not leaves:
        return torch.zeros_like(u)
    with torch.enable_grad():
        w = torch.zeros_like(u, requires_grad=True)
        grads = torch.autograd.grad(u, leaves, grad_outputs=w, create_graph=True,
                                    allow_unused=True)
        total = sum((g * direction.of(leaf)).sum() for g, leaf in zip(grads, leaves)
                    if g is not None)
        if not isinstance(total, torch.Tensor) or not total.requires_grad:
            return torch.zeros_like(u)
        (du,) = torch.autograd.grad(total, w, allow_unused=True)
    return torch.zeros_like(u) if du is None else du.detach()


class _Masked(torch.autograd.Function):
    """``out = value`` in the forward; ``∂out/∂inputs[k] = masks[k]`` (elementwise) backward."""

    @staticmethod
    def forward(ctx, value, masks, *inputs):
        ctx.masks = masks
        ctx.shapes = [x.shape if isinstance(x, torch.Tensor) else None for x in inputs]
        return value.clone()

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


# --- the rules ------------------------------------------------------------------------
# Each rule gets the op's arguments and returns None when the op hits no tie (then the
# original op runs) or the replacement output. ``ctx`` gives tangents and the report.


@dataclass
class _Ctx:
    direction: _Direction
    report: KinkReport

    def tangent(self, u):
        return _tangent(u, self.direction)

    def record(self, op: str, ties: int, undetermined: int) -> None:
        self.report.ties[op] += ties
        self.report.undetermined[op] += undetermined


def _piecewise_linear(ctx: _Ctx, op: str, x: torch.Tensor, value: torch.Tensor,
                      knots: Sequence[tuple[float, float, float]], slope_between) -> Any:
    """An elementwise piecewise-linear op; ``knots`` = (location, slope left, slope right).

    At a knot the active piece is the right one if the tangent of x is > 0, the left one if
    < 0; a zero tangent is undetermined (the left piece, PyTorch's usual choice, is kept).
    """
    at = [(x == k) for k, _, _ in knots]
    n_ties = int(sum(int(a.sum()) for a in at))
    if n_ties == 0 or not x.requires_grad:
        return None
    dx = ctx.tangent(x)
    slope = slope_between(x).to(x.dtype)
    undetermined = 0
    for tie, (_, left, right) in zip(at, knots):
        pos, zero = dx > 0, dx == 0
        chosen = torch.where(pos, torch.full_like(x, right), torch.full_like(x, left))
        slope = torch.where(tie, chosen, slope)
        undetermined += int((tie & zero).sum())
    ctx.record(op, n_ties, undetermined)
    return _masked(value, [slope], x)


def _relu(ctx, x, *_, negative_slope=0.0, **__):
    value = F.leaky_relu(x.detach(), negative_slope) if negative_slope else torch.relu(x.detach())
    return _piecewise_linear(ctx, "leaky_relu" if negative_slope else "relu", x, value,
                             [(0.0, negative_slope, 1.0)],
                             lambda z: torch.where(z > 0, 1.0, negative_slope))


def _hardtanh(ctx, op, x, low, high):
    low = float("-inf") if low is None else float(low)
    high = float("inf") if high is None else float(high)
    value = x.detach().clamp(low, high)
    knots = [(k, l_, r_) for k, l_, r_ in ((low, 0.0, 1.0), (high, 1.0, 0.0)) if abs(k) != float("inf")]
    return _piecewise_linear(ctx, op, x, value, knots,
                             lambda z: ((z > low) & (z < high)).to(z.dtype))


def _abs(ctx, x):
    return _piecewise_linear(ctx, "abs", x, x.detach().abs(), [(0.0, -1.0, 1.0)], torch.sign)


def _binary_extreme(ctx, op, a, b, take_larger: bool):
    a_t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    b_t = b if isinstance(b, torch.Tensor) else torch.as_tensor(b, dtype=a_t.dtype, device=a_t.device)
    tie = a_t == b_t
    n_ties = int(tie.sum())
    if n_ties == 0 or not (a_t.requires_grad or b_t.requires_grad):
        return None
    da, db = ctx.tangent(a_t), ctx.tangent(b_t)
    value = torch.maximum(a_t.detach(), b_t.detach()) if take_larger else \
        torch.minimum(a_t.detach(), b_t.detach())
    wins = (a_t > b_t) if take_larger else (a_t < b_t)
    prefer_a = (da > db) if take_larger else (da < db)
    mask_a = torch.where(tie, prefer_a, wins).to(value.dtype)
    tie_b = torch.broadcast_to(tie, value.shape)
    undetermined = int((tie_b & torch.broadcast_to(da == db, value.shape)).sum())
    ctx.record(op, int(tie_b.sum()), undetermined)
    return _masked(value, [mask_a, 1 - mask_a], a_t, b_t)


def _reduce_extreme(ctx, op, x, dim, keepdim, take_larger: bool, want_indices: bool):
    """max/min/amax/amin over ``dim`` (None: all). Ties: the largest (smallest) tangent wins."""
    dims = tuple(range(x.ndim)) if dim is None else ((dim,) if isinstance(dim, int) else tuple(dim))
    extreme = x.detach().amax(dims, keepdim=True) if take_larger else x.detach().amin(dims, keepdim=True)
    hit = x.detach() == extreme
    counts = hit.sum(dims, keepdim=True)
    n_tied_slices = int((counts > 1).sum())
    if n_tied_slices == 0 or not x.requires_grad:
        return None
    dx = ctx.tangent(x)
    sign = 1.0 if take_larger else -1.0
    score = torch.where(hit, sign * dx, torch.full_like(dx, float("-inf")))
    # flatten the reduced dims to pick one winner per slice
    moved = score.movedim(dims, tuple(range(x.ndim - len(dims), x.ndim)))
    flat = moved.reshape(*moved.shape[: x.ndim - len(dims)], -1)
    best = flat.max(-1, keepdim=True).values
    winners = flat == best
    undetermined = int(((winners.sum(-1) > 1) & (counts.reshape(best.shape[:-1]) > 1)).sum())
    index = winners.to(torch.int8).argmax(-1, keepdim=True)  # first among equal tangents
    onehot = torch.zeros_like(flat).scatter_(-1, index, 1.0)
    mask = onehot.reshape(moved.shape).movedim(tuple(range(x.ndim - len(dims), x.ndim)), dims)
    ctx.record(op, n_tied_slices, undetermined)
    out = _ExtremeSelect.apply(x, mask, dims, keepdim, dim is None)
    if want_indices:
        idx = index.reshape(moved.shape[: x.ndim - len(dims)])
        if keepdim:
            idx = idx.unsqueeze(dims[0])
        return torch.return_types.max((out, idx)) if take_larger else torch.return_types.min((out, idx))
    return out


class _ExtremeSelect(torch.autograd.Function):
    """The selected entries of x (one per slice), summed over the reduced dims."""

    @staticmethod
    def forward(ctx, x, mask, dims, keepdim, full):
        ctx.save_for_backward(mask)
        ctx.dims, ctx.keepdim, ctx.full = dims, keepdim, full
        out = (x * mask).sum(dims, keepdim=True)
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
        return grad * mask, None, None, None, None


# --- dispatch -------------------------------------------------------------------------

def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _dispatch_relu(ctx, args, kwargs):
    return _relu(ctx, args[0])


def _dispatch_leaky(ctx, args, kwargs):
    return _relu(ctx, args[0], negative_slope=float(_arg(args, kwargs, 1, "negative_slope", 0.01)))


def _dispatch_hardtanh(ctx, args, kwargs):
    return _hardtanh(ctx, "hardtanh", args[0], _arg(args, kwargs, 1, "min_val", -1.0),
                     _arg(args, kwargs, 2, "max_val", 1.0))


def _dispatch_relu6(ctx, args, kwargs):
    return _hardtanh(ctx, "relu6", args[0], 0.0, 6.0)


def _dispatch_clamp(ctx, args, kwargs):
    low, high = _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")
    if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
        # tensor bounds are maximum/minimum in disguise
        x = args[0]
        if low is not None:
            x = _binary_extreme(ctx, "clamp", x, low, True) or torch.maximum(x, low)
        if high is not None:
            x = _binary_extreme(ctx, "clamp", x, high, False) or torch.minimum(x, high)
        return x
    return _hardtanh(ctx, "clamp", args[0], low, high)


def _dispatch_clamp_min(ctx, args, kwargs):
    return _dispatch_clamp(ctx, (args[0], _arg(args, kwargs, 1, "min"), None), {})


def _dispatch_clamp_max(ctx, args, kwargs):
    return _dispatch_clamp(ctx, (args[0], None, _arg(args, kwargs, 1, "max")), {})


def _dispatch_abs(ctx, args, kwargs):
    return _abs(ctx, args[0])


def _extreme_dispatch(take_larger: bool, name: str, with_indices: bool):
    def dispatch(ctx, args, kwargs):
        x = args[0]
        other = _arg(args, kwargs, 1, "other" if with_indices else "dim")
        if with_indices and isinstance(other, torch.Tensor):  # torch.max(a, b) is maximum
            return _binary_extreme(ctx, name, x, other, take_larger)
        dim = _arg(args, kwargs, 1, "dim")
        keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
        want_indices = with_indices and dim is not None
        return _reduce_extreme(ctx, name, x, dim, keepdim, take_larger, want_indices)
    return dispatch


def _dispatch_maximum(ctx, args, kwargs):
    return _binary_extreme(ctx, "maximum", args[0], _arg(args, kwargs, 1, "other"), True)


def _dispatch_minimum(ctx, args, kwargs):
    return _binary_extreme(ctx, "minimum", args[0], _arg(args, kwargs, 1, "other"), False)


def _dispatch_l1_loss(ctx, args, kwargs):
    x, target = args[0], _arg(args, kwargs, 1, "target")
    reduction = _arg(args, kwargs, 4, "reduction", "mean")
    diff = x - target
    out = _abs(ctx, diff)
    if out is None:
        return None
    return {"mean": out.mean, "sum": out.sum, "none": lambda: out}[reduction]()


_RULES: dict[Callable, Callable] = {}
for _f in (torch.relu, F.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_):
    _RULES[_f] = _dispatch_relu
for _f in (F.leaky_relu, torch._C._nn.leaky_relu):
    _RULES[_f] = _dispatch_leaky
for _f in (F.hardtanh, torch._C._nn.hardtanh):
    _RULES[_f] = _dispatch_hardtanh
_RULES[F.relu6] = _dispatch_relu6
for _f in (torch.clamp, torch.clip, torch.Tensor.clamp, torch.Tensor.clip):
    _RULES[_f] = _dispatch_clamp
for _f in (torch.clamp_min, torch.Tensor.clamp_min):
    _RULES[_f] = _dispatch_clamp_min
for _f in (torch.clamp_max, torch.Tensor.clamp_max):
    _RULES[_f] = _dispatch_clamp_max
for _f in (torch.abs, torch.Tensor.abs, torch.absolute):
    _RULES[_f] = _dispatch_abs
for _f in (torch.maximum, torch.Tensor.maximum, torch.fmax):
    _RULES[_f] = _dispatch_maximum
for _f in (torch.minimum, torch.Tensor.minimum, torch.fmin):
    _RULES[_f] = _dispatch_minimum
for _f in (torch.max, torch.Tensor.max):
    _RULES[_f] = _extreme_dispatch(True, "max", True)
for _f in (torch.min, torch.Tensor.min):
    _RULES[_f] = _extreme_dispatch(False, "min", True)
for _f in (torch.amax, torch.Tensor.amax):
    _RULES[_f] = _extreme_dispatch(True, "amax", False)
for _f in (torch.amin, torch.Tensor.amin):
    _RULES[_f] = _extreme_dispatch(False, "amin", False)
_RULES[F.l1_loss] = _dispatch_l1_loss

# Non-smooth ops without a directional rule yet: reported, refused under strict=True.
_UNHANDLED = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    torch.max_pool1d, torch.max_pool2d, torch.sort, torch.Tensor.sort, torch.topk,
    torch.Tensor.topk, torch.median, torch.Tensor.median, torch.kthvalue, torch.Tensor.kthvalue,
    F.hardshrink, F.softshrink, F.smooth_l1_loss, F.huber_loss, F.hinge_embedding_loss,
    F.multi_margin_loss, F.margin_ranking_loss, torch.sign, torch.Tensor.sign,
}


def _name(func) -> str:
    return getattr(func, "__name__", repr(func))


class exact_kinks(TorchFunctionMode):  # noqa: N801 — used as a context manager, like no_grad
    """Within this context, autograd returns Kakade–Lee subgradients at kinks.

    Ordinary code — ``nn.Module`` forward passes, ``F.relu``, ``loss.backward()``, any
    ``torch.optim`` loop — runs unchanged. Ops that hit no exact tie run as usual (the
    gradient is PyTorch's, bit for bit); at a tie the piece active in the direction ``v``
    is used. ``report`` (a :class:`KinkReport`) accumulates what the forward passes met.

    Parameters
    ----------
    strict : raise :class:`UnhandledKinkError` when a non-smooth op without a directional
        rule runs (default: warn once per op).
    generator : draws the direction ``v`` (a standard Gaussian per leaf tensor, once per
        context); pass one for reproducible choices.
    direction : ``{id(leaf): tensor}`` fixing ``v`` (used by :func:`subgradient`).

    Examples
    --------
    >>> x = torch.zeros(1, requires_grad=True)
    >>> with exact_kinks():
    ...     y = torch.relu(x) - torch.relu(-x)      # the identity, written with kinks
    ...     y.sum().backward()
    >>> x.grad.item()                                 # PyTorch alone says 0.0
    1.0
    """

    def __init__(self, strict: bool = False, generator: torch.Generator | None = None,
                 direction: Mapping[int, torch.Tensor] | None = None):
        super().__init__()
        self.strict = strict
        self.report = KinkReport()
        self._ctx = _Ctx(_Direction(direction, generator), self.report)
        self._warned: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = _RULES.get(func)
        if rule is not None and torch.is_grad_enabled():
            out = rule(self._ctx, args, kwargs)
            if out is not None:
                return out
        elif func in _UNHANDLED:
            name = _name(func)
            self.report.unhandled[name] += 1
            if self.strict:
                raise UnhandledKinkError(f"exact_kinks(strict=True): {name} is non-smooth and has "
                                         "no directional rule yet; rewrite it with max/relu/abs "
                                         "or use strict=False")
            if name not in self._warned:
                self._warned.add(name)
                warnings.warn(f"exact_kinks: {name} has no directional rule; its ties get "
                              "PyTorch's convention", stacklevel=3)
        return func(*args, **kwargs)


def subgradient(loss: Callable[[Any], torch.Tensor], params, *, direction=None,
                generator: torch.Generator | None = None, return_report: bool = False):
    """An element of the Clarke subdifferential of ``loss`` at ``params``.

    Computes ``lim_{ε↓0} ∇loss(params + ε v)`` by the randomized directional chain rule
    (Kakade & Lee 2018): ``v`` is ``direction`` if given, else drawn from ``generator``.

    Parameters
    ----------
    loss : ``loss(params) -> scalar tensor`` (DESIGN's functional form).
    params : a tensor or a dict of tensors (not modified).
    direction : same structure as ``params``; the direction v.
    generator : draws v when ``direction`` is None.
    return_report : also return the :class:`KinkReport` of the evaluation.

    Returns
    -------
    The subgradient, with the structure of ``params`` (and the report on request).

    Examples
    --------
    >>> f = lambda x: torch.relu(x) - torch.relu(-x)
    >>> float(subgradient(f, torch.tensor(0.0)))
    1.0
    >>> float(subgradient(lambda x: torch.maximum(x, 0 * x), torch.tensor(0.0),
    ...                   direction=torch.tensor(-1.0)))
    0.0
    """
    is_dict = isinstance(params, Mapping)
    names = list(params) if is_dict else [None]
    values = [params[k] for k in names] if is_dict else [params]
    if not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in values):
        raise UserError("subgradient: params must be a floating-point tensor or a dict of them")
    leaves = [v.detach().clone().requires_grad_(True) for v in values]
    given = None
    if direction is not None:
        dirs = [direction[k] for k in names] if is_dict else [direction]
        for leaf, d in zip(leaves, dirs):
            if not isinstance(d, torch.Tensor) or d.shape != leaf.shape:
                raise UserError(f"subgradient: direction must match params' shapes "
                                f"({tuple(leaf.shape)})")
        given = {id(leaf): d.to(leaf) for leaf, d in zip(leaves, dirs)}
    mode = exact_kinks(generator=generator, direction=given)
    with torch.enable_grad(), mode:
        value = loss(dict(zip(names, leaves)) if is_dict else leaves[0])
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise UserError("subgradient: loss(params) must return a scalar tensor")
    grads = torch.autograd.grad(value.reshape(()), leaves, allow_unused=True)
    grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]
    result = dict(zip(names, grads)) if is_dict else grads[0]
    return (result, mode.report) if return_report else result


def active_pieces_gradient(loss: Callable, params: torch.Tensor, direction: torch.Tensor,
                           eps: float = 1e-7) -> torch.Tensor:
    """The reference answer: PyTorch's gradient at ``params + eps·direction`` (float64).

    For a piecewise-smooth program and small enough ``eps`` no tie is active there, and the
    gradient equals the limit the directional rule computes.
    """
    x = (params.detach().double() + eps * direction.double()).requires_grad_(True)
    (g,) = torch.autograd.grad(loss(x), x)
    return g


__all__ = ["KinkReport", "UnhandledKinkError", "active_pieces_gradient", "exact_kinks",
           "subgradient"]
