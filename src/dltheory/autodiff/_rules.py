"""Directional rules of the non-smooth primitives, and the tangent they are chosen from.

Every rule gets the op's arguments. It returns ``None`` when the op hits no exact tie (the
caller then runs the original op, so the gradient is PyTorch's bit for bit) or the output
to use instead: the same values, with a backward through the piece that is active in the
direction ``v``. The elementwise piecewise-linear ops always return ``None``: at a tie the
original op runs too, and a hook on its autograd node puts the chosen slope at the tied
entries alone (PyTorch's backward everywhere else). That piece is chosen from the sign of
the one-sided directional
derivative ``du = J_u · v`` of the op's argument ``u`` (Kakade & Lee 2018, the
randomized chain rule): relu at 0 → slope 1 if ``du > 0``, else 0; a max with ties → the
tied entry with the largest ``du``; abs at 0 → ``sign(du)``.

``du`` is computed only where a tie occurs, by replaying the recorded forward pass under
forward-mode AD (:mod:`dltheory.autodiff._tape`): no tangent travels through the tie-free
part of the program, and later ties see earlier choices, as the chain rule requires; every
rule therefore also says how its output's tangent follows from its inputs' (``jvp``), so
that later ties replay it. Under ``batch_dim`` (samples that do not interact) the replay
runs on the rows that hold a tie alone, and the rules choose their pieces on those rows
alone. Where the replay cannot follow (an op run in place or outside the context), ``du``
comes from the autograd graph by two vector-Jacobian products (``du = ∂/∂w ⟨J_uᵀ w, v⟩``).

References
----------
S. Kakade, J. D. Lee, "Provably correct automatic subdifferentiation for qualified
programs", NeurIPS 2018.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from dltheory.autodiff._tape import _Tape
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


def _leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The leaves requiring grad that ``t`` depends on."""
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
    """``J_u · v``, the directional derivative of ``u`` along ``v``, by two VJPs through the
    autograd graph, ``du = ∂/∂w ⟨J_uᵀ w, v⟩`` (through earlier ties' chosen pieces): where
    the tape's replay cannot follow u (an op run in place, or outside the context)."""
    if not isinstance(u, torch.Tensor) or not u.requires_grad:
        return torch.zeros_like(u)
    leaves = _leaves(u)
    with torch.enable_grad():
        w = torch.zeros_like(u, requires_grad=True)
        grads = torch.autograd.grad(u, leaves, grad_outputs=w, create_graph=True, allow_unused=True)
        terms = [(g * direction.of(s)).sum()
                 for g, s in zip(grads, leaves) if g is not None and g.requires_grad]
        if not terms:
            return torch.zeros_like(u)
        (du,) = torch.autograd.grad(sum(terms), w, allow_unused=True)
    return torch.zeros_like(u) if du is None else du.detach()


@dataclass
class _Ctx:
    """What a rule may use: the direction, the report, which tensors are flat, and the tape
    that replays the forward pass for tangents (under ``batch_dim``, on the tied rows alone)."""

    direction: _Direction
    report: KinkReport
    # tensor -> (values where the op that made it is flat, entries excluded, its version)
    # the entries excluded as (rows, their mask on those rows): the rows that hold a tie
    flat: WeakIdKeyDictionary
    tape: _Tape
    # what a piecewise-linear rule decided, for ``run`` to attach to the native op's output
    pending: _Piece | None = None

    def rows(self, need: torch.Tensor) -> torch.Tensor | None:
        """The rows (indices into dim 0) where ``need`` holds an entry: a rule chooses its
        pieces on these rows alone (and under ``batch_dim`` computes its tangents there
        alone); None for a 0-d ``need`` (all of it)."""
        return None if need.ndim == 0 else _rows_with(need)

    def tangent(self, u: torch.Tensor, op: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``J_u · v`` on ``rows`` of u (None: all): by the tape's replay (under ``batch_dim``
        on those rows alone, else on all of u), or where it cannot follow u, from the whole
        batch's autograd graph (two VJPs)."""
        if not u.requires_grad:
            return torch.zeros_like(u if rows is None else u.index_select(0, rows))
        per_sample = self.tape.per_sample
        du = self.tape.tangent(u, rows if per_sample else None, self.direction)
        if du is not None and (per_sample or rows is None):
            return du
        if du is None and per_sample:  # the rows meet: replay the whole batch
            self.report.whole_batch[op] += 1
            du = self.tape.tangent(u, None, self.direction)
        if du is None:
            du = _tangent(u, self.direction)
        return du if rows is None else du.index_select(0, rows)

    def record(self, out: torch.Tensor, inputs: Sequence, jvp: Callable) -> torch.Tensor:
        """Register the output of a rule (at a tie or not), whose tangent is ``jvp(rows,
        tangents of inputs on those rows)`` (``rows``: indices into dim 0, None: all), so
        that later ties replay it; returns ``out``."""
        self.tape.record(out, inputs, jvp)
        return out

    def run(self, func: Callable, *args, **kwargs):
        """Run an op as PyTorch does, attaching what a piecewise-linear rule left pending
        (its flat values; at ties, the chosen pieces), and record it on the tape."""
        piece, self.pending = self.pending, None
        # the input's record is read before the op: it may write in place (relu_)
        before = self.tape.slot(args[0], hold=False) if piece else None
        out = func(*args, **kwargs)
        if piece is None:
            self.tape.record_call(func, args, kwargs, out)
            return out
        self.mark_flat(out, piece.flat, piece.exclude)
        if piece.ties is not None:
            out.grad_fn.register_hook(_chosen_slopes(*piece.ties[:2]))
        # read off the output where it tells the piece: the tape then need not keep x
        src = out if piece.from_output else piece.x
        jvp = _piecewise_tangent(src, piece.slope, piece.ties)
        self.tape.record(out, [before], jvp, held=[src])
        return out

    def mark_flat(self, out: torch.Tensor, values: tuple[float, ...],
                  exclude: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Entries of ``out`` equal to one of ``values`` lie on a flat piece, except those
        set in ``exclude`` = (rows of out, mask on those rows)."""
        if values:
            self.flat[out] = (values, exclude, out._version)

    def flat_values(self, x: torch.Tensor) -> tuple[tuple[float, ...], tuple | None]:
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

@dataclass
class _Piece:
    """What a piecewise-linear rule decided about the op about to run on ``x``."""

    x: torch.Tensor
    flat: tuple[float, ...]  # values at which the op is flat
    slope: Callable[[torch.Tensor], torch.Tensor]  # slope of the piece a value lies on
    from_output: bool  # whether ``slope`` reads the output (non-decreasing pieces) or x
    # tied entries: coordinates (k, ndim), chosen slopes (k,), and the rows they were found on
    # with the coordinates renumbered within them (what a later replay on those rows reads)
    ties: tuple | None = None
    exclude: tuple[torch.Tensor, torch.Tensor] | None = None  # rows, mask: tied, so not flat


# entries above which a temporary copy of a CPU tensor (> 16 MiB in float32) costs more to
# allocate than to fill: glibc serves such blocks by mmap, fresh pages on every call
_LARGE = 1 << 22


def _rows_equal(x: torch.Tensor, knot: float) -> torch.Tensor | None:
    """Where entries of x equal ``knot``: None when nowhere (the common case), else the
    indices along dim 0 of the rows that hold one (an empty index for a 0-d x). A min of
    |x − knot| (then, where it is 0, one per row): several times cheaper than ``x == knot``
    or a count (0.16 ms against 1.1 and 0.43 ms on 800k floats, one thread)."""
    if not x.numel():
        return None
    if knot == 0 and x.numel() > _LARGE and x.device.type == "cpu":
        # a temporary |x| this large is a fresh mmap'd block, page-faulted in on every call
        # (43 ms against 7.7 ms for counting on 13M floats): count instead, allocating nothing
        if int(x.count_nonzero()) == x.numel():
            return None
        rows = x.reshape(len(x), -1)
        return (rows.count_nonzero(1) < rows.shape[1]).nonzero().squeeze(1)
    gap = x.abs() if knot == 0 else (x - knot).abs()
    if bool(gap.amin() > 0):
        return None
    if x.ndim == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return (gap.reshape(len(x), -1).amin(1) == 0).nonzero().squeeze(1)


def _chosen_slopes(coords: torch.Tensor, chosen: torch.Tensor) -> Callable:
    """A hook on the native op's autograd node: at the tied entries its input's gradient is
    the output's times the chosen slope; elsewhere PyTorch's own backward, bit for bit."""
    index = tuple(coords.T)

    def hook(grad_inputs, grad_outputs):
        grad = grad_inputs[0]  # a fresh tensor, the node's own output
        _entries(grad)[index] = _entries(grad_outputs[0])[index] * chosen
        return (grad, *grad_inputs[1:])
    return hook


def _entries(t: torch.Tensor) -> torch.Tensor:
    """t, or a 0-d t as one entry, for indexing by coordinates."""
    return t if t.ndim else t.view(1)


def _piecewise_tangent(src: torch.Tensor, slope: Callable, ties) -> Callable:
    """Tangent of a piecewise-linear op's output: the slope read off ``src`` times x's
    tangent, with the chosen slopes at the ties."""
    def jvp(rows, tangents, overwrite: bool = False):
        # the slope as it comes (a mask for relu), not a float copy; with ``overwrite`` the
        # input's tangent becomes the output's (the tape lets it go)
        dx, index, at_ties = tangents[0], None, None
        if ties is not None:
            coords, chosen, found_rows, local = ties
            if found_rows is not None and rows is not None and torch.equal(rows, found_rows):
                coords = local  # the rows the ties were found on: no renumbering
            else:
                coords, chosen = _in_rows(coords, chosen, rows)
            index = tuple(coords.T)
            at_ties = _entries(dx)[index] * chosen.to(dx.dtype)
        s = slope(_taker(rows)(src.detach()))
        if s.dtype == torch.bool:  # a 0/1 slope (relu, clamp): zeros written, no float copy of s
            out = dx.masked_fill_(~s, 0) if overwrite else dx.masked_fill(~s, 0)
        else:
            out = dx.mul_(s) if overwrite else dx * s
        if index is not None:
            _entries(out)[index] = at_ties
        return out
    jvp.overwrites = True
    return jvp


def _in_rows(coords: torch.Tensor, values: torch.Tensor, rows: torch.Tensor | None):
    """The entries (coordinates, values) that lie in ``rows``, renumbered within them."""
    if rows is None or len(rows) == 0:
        return coords, values
    at = torch.searchsorted(rows, coords[:, 0].contiguous()).clamp_(max=len(rows) - 1)
    keep = rows[at] == coords[:, 0]
    coords = torch.cat([at[keep, None], coords[keep, 1:]], 1)
    return coords, values[keep]


def _piecewise_linear(ctx: _Ctx, op: str, x: torch.Tensor, knots: Sequence[tuple[float, float, float]],
                      slope_between: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """An elementwise piecewise-linear op; ``knots`` = (location, slope left, slope right).

    At a knot the active piece is the right one if the tangent of x is > 0, the left one if
    < 0; a zero tangent is undetermined (the left piece, PyTorch's usual choice, is kept).
    The op itself then runs natively (``_Ctx.run``): a hook on its autograd node puts the
    chosen slopes at the tied entries. Returns whether x ties.
    """
    if not x.requires_grad:
        return False
    slopes = [s for _, left, right in knots for s in (left, right)]
    # where one side is constant the output there is the knot: a flat value
    flat_values = tuple(float(k) for k, left, right in knots if left == 0 or right == 0)
    piece = ctx.pending = _Piece(x, flat_values, slope_between, from_output=min(slopes) >= 0)
    xd = x.detach()
    found = [_rows_equal(xd, k) for k, _, _ in knots]
    if all(f is None for f in found):
        return False
    knots = [knot for knot, f in zip(knots, found) if f is not None]
    found = [f for f in found if f is not None]
    # every tied entry lies in these rows: the pieces are chosen there alone
    rows = None if xd.ndim == 0 else found[0] if len(found) == 1 else torch.cat(found).unique()
    take = _taker(rows)
    at = [take(xd) == k for k, _, _ in knots]
    need = at[0] if len(at) == 1 else torch.stack(at).any(0)
    dx = ctx.tangent(x, op, rows)
    coords, local, chosen = [], [], []
    for tie, (_, left, right) in zip(at, knots):
        at_rows = _entries(tie).nonzero()
        dx_tie = _entries(dx)[tuple(at_rows.T)]
        chosen.append(torch.where(dx_tie > 0, x.new_tensor(right), x.new_tensor(left)))
        local.append(at_rows)
        coords.append(at_rows if rows is None else torch.cat([rows[at_rows[:, :1]], at_rows[:, 1:]], 1))
        ctx.report.ties[op] += len(at_rows)
        ctx.report.undetermined[op] += int((dx_tie == 0).count_nonzero())
    piece.ties = (torch.cat(coords), torch.cat(chosen), rows, torch.cat(local))
    if rows is not None:
        piece.exclude = (rows, need)
    return True


def _leaky(ctx, op, x, negative_slope):
    return _piecewise_linear(
        ctx, op, x, [(0.0, negative_slope, 1.0)],
        (lambda z: z > 0) if negative_slope == 0 else
        lambda z: torch.where(z > 0, z.new_tensor(1.0), z.new_tensor(negative_slope)))


def _hardtanh(ctx, op, x, low, high):
    low = float("-inf") if low is None else float(low)
    high = float("inf") if high is None else float(high)
    knots = [(k, left, right) for k, left, right in ((low, 0.0, 1.0), (high, 1.0, 0.0))
             if abs(k) != float("inf")]
    return _piecewise_linear(ctx, op, x, knots, lambda z: (z > low) & (z < high))


def _abs(ctx, x):
    return _piecewise_linear(ctx, "abs", x, [(0.0, -1.0, 1.0)], torch.sign)


# The piecewise-linear rules return None: the op runs natively, with what they decided.
def _relu_rule(ctx, args, kwargs):
    _leaky(ctx, "relu", args[0], 0.0)


def _leaky_rule(ctx, args, kwargs):
    _leaky(ctx, "leaky_relu", args[0], float(_arg(args, kwargs, 1, "negative_slope", 0.01)))


def _hardtanh_bounds(args, kwargs):
    return _arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)


def _hardtanh_rule(ctx, args, kwargs):
    _hardtanh(ctx, "hardtanh", args[0], *_hardtanh_bounds(args, kwargs))


def _relu6_rule(ctx, args, kwargs):
    _hardtanh(ctx, "relu6", args[0], 0.0, 6.0)


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
                x = ctx.run(native, x, bound) if tied is None else tied
        return x
    _hardtanh(ctx, "clamp", args[0], low, high)
    return None


def _clamp_min_rule(ctx, args, kwargs):
    return _clamp_rule(ctx, (args[0], _arg(args, kwargs, 1, "min"), None), {})


def _clamp_max_rule(ctx, args, kwargs):
    return _clamp_rule(ctx, (args[0], None, _arg(args, kwargs, 1, "max")), {})


def _abs_rule(ctx, args, kwargs):
    _abs(ctx, args[0])


# --- maximum / minimum and the max / min / amax / amin reductions -----------------------

def _tangent_where(ctx: _Ctx, op: str, u: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """u's tangent, computed on the rows where ``need`` holds an entry (0 on the others);
    on all rows for an operand broadcast into ``need``, whose rows are not the tie's."""
    rows = ctx.rows(need) if need.shape == u.shape else None
    du = ctx.tangent(u, op, rows)
    return du if rows is None else du.new_zeros(u.shape).index_copy_(0, rows, du)


def _rows_with(mask: torch.Tensor) -> torch.Tensor:
    """The indices along dim 0 of the rows where a boolean ``mask`` holds an entry (a max
    over bytes: ``any`` along a dim is 40x slower)."""
    return mask.view(torch.uint8).reshape(len(mask), -1).amax(1).nonzero().squeeze(1)


def _taker(rows: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Restricts a tensor's dim 0 to ``rows`` (None: the identity)."""
    return (lambda t: t) if rows is None else lambda t: t.index_select(0, rows)


def _binary_extreme(ctx, op, a, b, take_larger: bool):
    a_t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    b_t = b if isinstance(b, torch.Tensor) else torch.as_tensor(b, dtype=a_t.dtype, device=a_t.device)
    if not (a_t.requires_grad or b_t.requires_grad):
        return None
    tie = a_t == b_t
    if not bool(tie.any()):
        return None
    da, db = _tangent_where(ctx, op, a_t, tie), _tangent_where(ctx, op, b_t, tie)
    value = torch.maximum(a_t.detach(), b_t.detach()) if take_larger else \
        torch.minimum(a_t.detach(), b_t.detach())
    wins = (a_t > b_t) if take_larger else (a_t < b_t)
    prefer_a = (da > db) if take_larger else (da < db)
    mask_a = torch.broadcast_to(torch.where(tie, prefer_a, wins), value.shape)
    tie_b = torch.broadcast_to(tie, value.shape)
    ctx.report.ties[op] += int(tie_b.count_nonzero())
    ctx.report.undetermined[op] += int((tie_b & torch.broadcast_to(da == db, value.shape)).count_nonzero())
    return ctx.record(_masked(value, [mask_a, ~mask_a], a_t, b_t), [a_t, b_t],
                       lambda rows, ts: torch.where(_taker(rows)(mask_a), ts[0], ts[1]))


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
    dx = _tangent_where(ctx, op, x, hit & tied)
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
    out = ctx.record(_ExtremeSelect.apply(x, mask, dims, keepdim, dim is None), [x],
                      lambda rows, ts: _ExtremeSelect.apply(ts[0], _taker(rows)(mask), dims, keepdim,
                                                            dim is None))
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
    """Max-pool output whose gradient goes to the chosen input of each window: PyTorch's
    own max-pool backward, given these indices."""

    @staticmethod
    def forward(ctx, x, value, index, geometry):
        ctx.save_for_backward(x, index)
        ctx.geometry = geometry
        return value

    @staticmethod
    def backward(ctx, grad):
        x, index = ctx.saved_tensors
        g = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.reshape(index.shape), x, *ctx.geometry, (1, 1), False, index)
        return g, None, None, None


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


def _matches(x4, key, kernel, stride, padding) -> torch.Tensor:
    """Which entries equal their window's ``key``: (n, c, h, w) for disjoint windows (in x4's
    own memory order: comparing over an unfolded view, or reducing or flattening its window
    dims, costs 5-50x more; the key repeated along a row, so the compare runs along whole
    rows), else (n, c, out_h, out_w, kh*kw)."""
    n, c, oh, ow = key.shape
    (kh, kw) = kernel
    if _disjoint(x4, key.shape, kernel, stride, padding):
        row_key = key.repeat_interleave(kw, -1).view(n, c, oh, 1, ow * kw)
        return (x4.view(n, c, oh, kh, ow * kw) == row_key).view(x4.shape)
    return _windows(x4, kernel, stride, padding, float("-inf")) == key[..., None]


def _window_counts(x4, key, kernel, stride, padding) -> torch.Tensor:
    """How many entries of each window equal its ``key``, (n, c, out_h, out_w): one compare
    per kernel offset, between ``key`` and the strided view of x4 that holds that offset of
    every window. Each compare is output-sized and needs no copy of x4 or of ``key``
    (comparing x4 whole against an upsampled key costs 1.5x, an unfolded view of x4 more)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x4 = F.pad(x4, (pw, pw, ph, ph), value=float("-inf"))
    oh, ow = key.shape[2:]
    dtype = torch.uint8 if kh * kw < 256 else torch.int32  # holds up to kh * kw
    count = None
    for i, j in itertools.product(range(kh), range(kw)):
        eq = x4[..., i: i + (oh - 1) * sh + 1: sh, j: j + (ow - 1) * sw + 1: sw] == key
        eq = eq.view(torch.uint8)  # as bytes: added with no conversion
        count = eq.to(dtype) if count is None else count.add_(eq)
    return count


def _tied_rows(x4, v4, on_flat, kernel, stride, padding) -> torch.Tensor | None:
    """Per row of x4 (dim 0), whether a window there ties: holds its max ``v4`` more than
    once and is not ``on_flat`` (None: none is); None when no window ties (decided by one
    max over the counts)."""
    count = _window_counts(x4, v4, kernel, stride, padding)
    if on_flat is not None:  # on bytes: several times cheaper than a masked_fill of v4
        count *= (~on_flat).view(torch.uint8)
    if count.numel() == 0 or int(count.max()) < 2:
        return None
    return (count > 1).reshape(len(v4), -1).any(1)


def _pool_choice(x4, key, dx, kernel, stride, padding):
    """Per window: tied (more than one entry equals ``key``), the tied entry with the
    largest tangent ``dx`` (index in the input plane), and whether that tangent is tied
    too. Disjoint windows: by pooling ops in x4's memory order."""
    n, c, oh, ow = key.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    eq = _matches(x4, key, kernel, stride, padding)
    if _disjoint(x4, key.shape, kernel, stride, padding):
        score = torch.where(eq, dx, float("-inf"))
        best, index = F.max_pool2d_with_indices(score, kernel)  # the first largest tangent
        winners = (score.view(n, c, oh, kh, ow, kw) == best.view(n, c, oh, 1, ow, 1)).view(x4.shape)
        return _per_window(eq, kernel) > 1.5, index, _per_window(winners, kernel) > 1.5
    k, top_tied = _pick(eq, _windows(dx, kernel, stride, padding, 0.0))
    rows = torch.arange(oh, device=x4.device).view(-1, 1) * sh - ph
    cols = torch.arange(ow, device=x4.device).view(1, -1) * sw - pw
    return eq.sum(-1) > 1, (rows + k // kw) * x4.shape[3] + cols + k % kw, top_tied


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
    batched = x.ndim == nd + 2
    x4 = x if batched else x.unsqueeze(0)
    x4 = x4.unsqueeze(2) if nd == 1 else x4
    n, c = x4.shape[:2]
    v4 = value.detach().reshape(n, c, -1, value.shape[-1])
    # Windows whose max lies on a flat piece of the producer (0 after a tie-free relu)
    # have zero derivative whatever entry is chosen: they do not tie.
    flats, exclude = ctx.flat_values(x)
    on_flat = None
    if flats:
        on_flat = v4 == flats[0]
        for value_ in flats[1:]:
            on_flat |= v4 == value_
        if exclude is not None:  # a window holding one of the producer's ties is not flat
            rows, mask = exclude
            if not batched:  # x4's one row
                rows, mask = rows.new_zeros(1), mask.new_zeros(x.shape).index_copy_(0, rows, mask)
            held = _windows(mask.reshape(-1, *x4.shape[1:]), *geometry, False).any(-1)
            on_flat.index_copy_(0, rows, on_flat.index_select(0, rows) & ~held)
        ctx.report.flat[op] += int(on_flat.count_nonzero())
    native4 = native_index.reshape(v4.shape)
    tied_rows = _tied_rows(x4.detach(), v4, on_flat, *geometry)
    if tied_rows is None:
        ctx.record(value, [x], _pool_tangent(native4, value.shape, batched))
        return (value, native_index) if return_indices else value
    rows = ctx.rows(tied_rows) if batched else None
    take = _taker(rows)
    key = take(v4) if on_flat is None else take(v4).masked_fill(take(on_flat), float("nan"))  # NaN: no match
    dx = ctx.tangent(x, op, rows)
    tied, chosen, top_tied = _pool_choice(take(x4.detach()), key, dx.reshape(-1, *x4.shape[1:]), *geometry)
    ctx.report.ties[op] += int(tied.count_nonzero())
    ctx.report.identical[op] += int((tied & top_tied).count_nonzero())
    index = torch.where(tied, chosen, take(native4))
    if rows is not None:
        index = native4.clone().index_copy_(0, rows, index)
    out = ctx.record(_PoolSelect.apply(x4, v4, index, geometry).reshape(value.shape), [x],
                      _pool_tangent(index, value.shape, batched))
    return (out, index.reshape(native_index.shape)) if return_indices else out


def _pool_tangent(index: torch.Tensor, shape: torch.Size, batched: bool) -> Callable:
    """The tangent of a max-pool output: its input's tangent at each window's chosen entry
    (``index``, (n, c, out_h, out_w) into each input plane)."""
    def jvp(rows, tangents):
        idx = _taker(rows)(index)
        dx = tangents[0].reshape(idx.shape[0], idx.shape[1], -1).gather(-1, idx.flatten(2))
        return dx.reshape((idx.shape[0], *shape[1:]) if batched else shape)
    return jvp


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
    diff = ctx.run(torch.sub, x, target)
    if not _abs(ctx, diff):
        ctx.pending = None  # no tie: PyTorch's own l1_loss
        return None
    out = ctx.run(torch.abs, diff)
    return out if reduction == "none" else ctx.run({"mean": torch.mean, "sum": torch.sum}[reduction], out)


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
