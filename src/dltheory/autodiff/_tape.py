"""Tangents at ties by forward-mode replay of the recorded forward pass.

Every op run under ``exact_kinks`` with grad enabled is recorded (the function, its
arguments, the tensors it made), so that the tangent ``J_u · v`` of a tie's argument ``u``
can be computed by running the ops that ``u`` depends on again under forward-mode AD, each
reading the values it saw in the forward pass. The kinks' own ops replay by their
directional rule, and their tangents are kept: the next tie's replay starts there, so each
stretch of the program between two ties is differentiated once, in one forward-mode sweep
(about a forward pass), not by the two vector-Jacobian products of a double backward.

Under ``exact_kinks(batch_dim=0)`` the user declares that the samples of a batch do not
interact: row ``i`` of every tensor computed from the batch depends on sample ``i`` and on
the parameters alone. The tangent of ``u`` is then needed only on the rows that hold a tie,
and the replay runs on those rows alone.

Anything the replay cannot follow — an op run outside the context or in place, one without
a forward-mode formula, rows that meet (a reduction over the batch, a concatenation along
it), a replayed value that differs from the recorded one (rows that interact although
``batch_dim`` said they don't) — makes it give up, and the tie's tangent comes from two
vector-Jacobian products through the autograd graph: slower, never wrong. Random ops
(dropout) are never replayed: a replay would draw new noise, and advance the user's
generator; batch norm in training mode is replayed without its running statistics, which
it would otherwise update a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.weak import WeakIdKeyDictionary

# ops whose size arguments may name the batch: replayed as a reshape to the recorded shape
_RESHAPES = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape}
# op(input, weight, bias, ...), affine in input and in (weight, bias): the tangent is
# op(dx; W) + op(x; dW, db), two products where forward AD spends four (it also computes
# the value, and a product with the zero tangent of an input that needs no grad)
_AFFINE = {F.linear, F.conv1d, F.conv2d, F.conv3d}
# ops that draw random numbers: their replay would not be the recorded op
_RANDOM = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
           F.feature_alpha_dropout, torch.dropout, torch.bernoulli, torch.Tensor.bernoulli,
           torch.rand_like, torch.randn_like, torch.randint_like, torch.multinomial,
           torch.normal, torch.poisson}
# batch_norm(input, running_mean, running_var, ..., training) / torch.batch_norm(input,
# weight, bias, running_mean, running_var, training): positions of the running statistics
# (``training`` is at 5 in both). In training mode the output reads the batch's statistics,
# not the running ones, which the op updates in place: the replay passes None so as not to
# update them twice.
_RUNNING_STATS = {F.batch_norm: (1, 2), torch.batch_norm: (3, 4)}


def batch_norm_in_training(func: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether this call is a batch norm that normalizes by the batch's own statistics (the
    samples of the batch then interact)."""
    if func not in _RUNNING_STATS:
        return False
    return bool(args[5] if len(args) > 5 else kwargs.get("training", False))


class _Unreplayable(Exception):
    """The tangent cannot be computed on the tied rows alone."""


@dataclass(eq=False, slots=True)
class _Slot:
    """A tensor argument of a recorded op."""

    tensor: torch.Tensor | None  # held where the replay reads its value, and for roots
    source: tuple[_Op, int] | None  # (recorded op, output index) that made it; None: a root
    version: int
    shape: torch.Size
    dtype: torch.dtype
    device: torch.device


@dataclass(eq=False)
class _Op:
    """A recorded op: replayed by ``func`` under forward AD, or by a kink's ``jvp``."""

    slots: list[_Slot]
    out_shapes: list[torch.Size | None]  # per output leaf; None where it is no tensor
    func: Callable | None = None
    leaves: list = field(default_factory=list)  # flattened (args, kwargs), tensors as _Slot
    spec: Any = None
    # (rows, input tangents on them) -> output tangent; rows: indices into dim 0, None: all
    jvp: Callable | None = None
    held: Sequence[tuple[torch.Tensor, int]] = ()  # values the jvp reads, with their versions


@dataclass
class _Replayed:
    tangents: list[torch.Tensor | None]  # per output leaf, on the replayed rows; None: zero
    batched: list[bool]  # per output leaf: it carries the batch in dim 0
    primals: list = field(default_factory=list)  # generic ops: the replayed values


class _Tape:
    """The ops of the forward pass since the last backward, keyed by the tensors they made.

    Outputs are held weakly (a tensor nobody uses needs no tangent); an op holds the
    arguments it reads when replayed, which for linear and convolution layers are the
    activations that autograd saves anyway.
    """

    def __init__(self, shared: Collection[int] = (), per_sample: bool = True):
        self.per_sample = per_sample  # tangents on the tied rows alone (batch_dim=0)
        self._producer = WeakIdKeyDictionary()  # tensor -> (op, output index, version)
        self._shared = frozenset(shared)  # ids of leaves that are parameters, not samples
        # tangents on _memo_rows of the kinks' outputs and arguments, where the next tie's
        # replay starts
        self._memo: dict[_Op, _Replayed] = {}
        self._memo_rows: torch.Tensor | None = None

    def clear(self) -> None:
        self._producer = WeakIdKeyDictionary()
        self._memo, self._memo_rows = {}, None

    def slot(self, t: torch.Tensor, hold: bool = True) -> _Slot:
        made = self._producer.get(t)
        source = made[:2] if made is not None and made[2] == t._version else None
        return _Slot(t if hold or source is None else None, source, t._version, t.shape, t.dtype, t.device)

    def _made(self, op: _Op, outs: list) -> None:
        for k, o in enumerate(outs):
            if isinstance(o, torch.Tensor) and o.requires_grad:
                self._producer[o] = (op, k, o._version)

    def record(self, out: torch.Tensor, inputs: Sequence, jvp: Callable,
               held: Sequence[torch.Tensor] = ()) -> None:
        """A kink's output, whose tangent is ``jvp(take, tangents of inputs)``."""
        slots = [x if isinstance(x, _Slot) else self.slot(x, hold=False) for x in inputs]
        op = _Op(slots, [out.shape], jvp=jvp, held=[(t, t._version) for t in held])
        self._made(op, [out])
        if not self.per_sample:
            self._advance(op)

    def _advance(self, op: _Op) -> None:
        """Whole tensors: a kink whose inputs' tangents were just replayed (for its tie) gets
        its own tangent now, and lets its inputs' tangents go. The next tie's replay starts
        at this kink all the same, and the memo holds the frontier of the program — one
        tangent per chain of kinks (relu then max-pool), not the conv output's, the relu's
        and the pool's. An op that reads a let-go tensor later (a skip connection) gets its
        tangent replayed from further up: more work, the same tangent."""
        if self._memo_rows is not None or not op.slots or \
                not all(s.source is not None and s.source[0] in self._memo for s in op.slots):
            return
        with torch.no_grad():
            source, k = op.slots[0].source
            dx = self._memo[source].tangents[k]
            if _overwritable(op, dx):
                # an elementwise kink on a tangent nobody else holds: computed in place, so
                # the replay's peak is one activation-sized tensor over PyTorch's, not two
                del self._memo[source]
                self._memo[op] = _Replayed([op.jvp(None, [dx], overwrite=True)], [False])
                return
            self._memo[op] = _Replay(self, None, None, None)._op(op, keep_primals=False)
        for s in op.slots:
            self._memo.pop(s.source[0], None)

    def record_call(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
        """An ordinary op, replayed by calling ``func`` again on dual tensors."""
        outs = [out] if isinstance(out, torch.Tensor) else tree_flatten(out)[0]
        if not any(isinstance(o, torch.Tensor) and o.requires_grad for o in outs):
            return
        if func in _RANDOM:  # replayed, it would draw again
            self._made(_Op([], [o.shape if isinstance(o, torch.Tensor) else None for o in outs]), outs)
            return
        if batch_norm_in_training(func, args, kwargs):
            args, kwargs = _without_running_stats(func, args, kwargs)
        leaves, spec = _flatten_call(args, kwargs)
        shapes = [o.shape if isinstance(o, torch.Tensor) else None for o in outs]
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        if any(o is x for o in outs for x in tensors):  # in place: the input it read is gone
            self._made(_Op([], shapes), outs)
            return
        leaves = [self.slot(x) if isinstance(x, torch.Tensor) else x for x in leaves]
        slots = [x for x in leaves if isinstance(x, _Slot)]
        op = _Op(slots, shapes, func=func, leaves=leaves, spec=spec,
                 held=[(s.tensor, s.version) for s in slots])
        self._made(op, outs)

    def alias(self, t: torch.Tensor, out: torch.Tensor) -> None:
        """``t`` now holds ``out``'s values (a kink applied in place)."""
        op, k, _ = self._producer[out]
        self._producer[t] = (op, k, t._version)

    def tangent(self, u: torch.Tensor, rows: torch.Tensor | None, direction) -> torch.Tensor | None:
        """``J_u · v`` on ``rows`` of u (indices into its dim 0, the batch), or on all of u
        (``rows=None``: the ops replayed whole); None where the replay does not apply."""
        made = self._producer.get(u)
        if made is None or made[2] != u._version or (rows is not None and u.ndim == 0):
            return None
        if not _same(rows, self._memo_rows):
            self._memo, self._memo_rows = {}, rows
        replay = _Replay(self, rows, None if rows is None else u.shape[0], direction)
        try:
            with torch.no_grad(), fwAD.dual_level():
                done = replay.run(made[0])
        except _Unreplayable:
            return None
        if rows is not None and not done.batched[made[1]]:
            return None
        if done.primals and not _agrees(done.primals[made[1]], replay.take(u.detach())):
            return None  # the rows interact after all: their replay is not what the batch computed
        du = done.tangents[made[1]]
        return torch.zeros_like(replay.take(u.detach())) if du is None else du

    def is_shared(self, t: torch.Tensor) -> bool:
        return isinstance(t, torch.nn.Parameter) or id(t) in self._shared


class _Replay:
    """One replay of the recorded ops that a tensor depends on, on ``rows`` of a batch of
    ``n`` (``rows=None``: on whole tensors, nothing taken as a batch)."""

    def __init__(self, tape: _Tape, rows: torch.Tensor | None, n: int | None, direction):
        self.tape, self.rows, self.n, self.direction = tape, rows, n, direction
        self.done: dict[_Op, _Replayed] = dict(tape._memo)

    def run(self, target: _Op) -> _Replayed:
        # readers, within this replay, of each op whose tangent is not kept in the memo: the
        # tangent is let go after its last reader, and an elementwise kink that is its only
        # reader overwrites it (the replay then holds about one activation-sized tangent)
        uses: dict[_Op, int] = {}
        stack = [(target, False)]
        while stack:  # depth first, each op after the ops it reads
            op, inputs_done = stack.pop()
            if op in self.done:
                continue
            if inputs_done:
                self.done[op] = result = self._op(op, op is target, uses)
                if op.jvp is not None or op is target:
                    self.tape._memo[op] = result
                for s in op.slots:
                    source = s.source[0] if s.source is not None else None
                    if source in uses:
                        uses[source] -= 1
                        if uses[source] == 0 and source not in self.tape._memo:
                            del uses[source], self.done[source]
                continue
            if op.func is None and op.jvp is None:
                raise _Unreplayable  # recorded as not replayable: in place, or random
            stack.append((op, True))
            for s in op.slots:
                if s.source is not None and s.source[0] not in self.tape._memo:
                    uses[s.source[0]] = uses.get(s.source[0], 0) + 1
                    if s.source[0] not in self.done:
                        stack.append((s.source[0], False))
        return self.done[target]

    def take(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.rows is None else t.index_select(0, self.rows)

    def _input(self, slot: _Slot) -> tuple[torch.Tensor | None, bool]:
        """(tangent on the rows, whether batched) of an argument."""
        if slot.source is not None:
            op, k = slot.source
            return self.done[op].tangents[k], self.done[op].batched[k]
        t = slot.tensor
        if t._version != slot.version:
            raise _Unreplayable
        batched = t.ndim > 0 and t.shape[0] == self.n and not self.tape.is_shared(t)
        if not t.requires_grad:
            return None, batched
        if t.grad_fn is not None:
            raise _Unreplayable  # computed outside the context: no record of how
        v = self.direction.of(t)
        return (self.take(v) if batched else v), batched

    def _op(self, op: _Op, keep_primals: bool, uses: dict | None = None) -> _Replayed:
        inputs = [self._input(s) for s in op.slots]
        any_batched = any(b for _, b in inputs)
        batched = [any_batched and s is not None and len(s) > 0 and s[0] == self.n for s in op.out_shapes]
        if any_batched and not all(b for s, b in zip(op.out_shapes, batched) if s is not None):
            raise _Unreplayable  # the rows meet (a reduction over the batch, a cat along it)
        for t, version in op.held:
            if t._version != version:
                raise _Unreplayable  # modified in place since
        if all(d is None for d, _ in inputs):
            return _Replayed([None] * len(op.out_shapes), batched)
        if op.jvp is not None:
            tangents = [torch.zeros(self._rows_shape(s.shape, b), dtype=s.dtype, device=s.device)
                        if d is None else d for s, (d, b) in zip(op.slots, inputs)]
            rows = self.rows if batched[0] else None
            if uses is not None and _sole_reader(op, tangents, uses, self.tape._memo):
                return _Replayed([op.jvp(rows, tangents, overwrite=True)], batched)
            return _Replayed([op.jvp(rows, tangents)], batched)
        return self._call(op, inputs, batched, keep_primals)

    def _rows_shape(self, shape: torch.Size, batched: bool) -> tuple[int, ...]:
        return (len(self.rows), *shape[1:]) if batched else tuple(shape)

    def _call(self, op: _Op, inputs, batched, keep_primals: bool) -> _Replayed:
        primals, tangents, it = [], [], iter(inputs)
        for leaf in op.leaves:
            if isinstance(leaf, _Slot):
                tangent, b = next(it)
                primals.append((self.take(leaf.tensor) if b else leaf.tensor).detach())
                tangents.append(tangent)
            else:
                primals.append(leaf)
                tangents.append(None)
        try:
            if op.func in _AFFINE:
                result = _Replayed([_affine_tangent(op.func, _unflatten_call(primals, op.spec),
                                                    _unflatten_call(tangents, op.spec))], batched)
            else:
                result = self._dual(op, primals, tangents, batched, keep_primals)
        except (RuntimeError, TypeError, ValueError, IndexError, NotImplementedError) as e:
            # e.g. a size argument that names the batch, or a shape that only looked like one
            raise _Unreplayable from e
        for t, shape, b in zip(result.tangents, op.out_shapes, batched):
            if t is not None and t.shape != self._rows_shape(shape, b):
                raise _Unreplayable  # a shape that only looked like the batch's
        return result

    def _dual(self, op: _Op, primals: list, tangents: list, batched, keep_primals: bool) -> _Replayed:
        """The op run again on dual tensors: the tangent by forward AD."""
        duals = [p if t is None else fwAD.make_dual(p, t) for p, t in zip(primals, tangents)]
        args, kwargs = _unflatten_call(duals, op.spec)
        if op.func in _RESHAPES and batched[0]:
            out = torch.reshape(args[0], self._rows_shape(op.out_shapes[0], True))
        else:
            out = op.func(*args, **kwargs)
        unpacked = [fwAD.unpack_dual(o) if isinstance(o, torch.Tensor) else None
                    for o in tree_flatten(out)[0]]
        return _Replayed([None if p is None else p.tangent for p in unpacked], batched,
                         [None if p is None else p.primal for p in unpacked] if keep_primals else [])


_ATOMS = (torch.Tensor, int, float, bool, str, type(None), torch.dtype, torch.device)


def _flatten_call(args: tuple, kwargs: dict) -> tuple[list, Any]:
    """The leaves of an op's arguments and how to put them back: for the usual call (no
    containers among the arguments) a count of positional ones and the keyword names,
    ten times cheaper than a pytree, which is recorded on every op of a forward pass."""
    if all(isinstance(a, _ATOMS) for a in args) and all(isinstance(v, _ATOMS) for v in kwargs.values()):
        return [*args, *kwargs.values()], (len(args), tuple(kwargs))
    return tree_flatten((args, kwargs))


def _unflatten_call(leaves: list, spec: Any) -> tuple[tuple, dict]:
    if isinstance(spec, tuple):
        n, names = spec
        return tuple(leaves[:n]), dict(zip(names, leaves[n:]))
    return tree_unflatten(leaves, spec)


def _overwritable(op: _Op, tangent: torch.Tensor | None) -> bool:
    """Whether the kink ``op`` may compute its tangent in place of its one input's
    ``tangent``: its jvp can (elementwise), and the tangent is a tensor of its own (no view
    of another's, no broadcast). The caller knows that nothing else reads it."""
    return len(op.slots) == 1 and getattr(op.jvp, "overwrites", False) and tangent is not None \
        and tangent._base is None and tangent.is_contiguous()


def _sole_reader(op: _Op, tangents: list, uses: dict, memo: dict) -> bool:
    """Whether a kink in a replay may overwrite its input's tangent: the replay reads it
    there alone and the memo does not keep it."""
    source = op.slots[0].source if len(op.slots) == 1 else None
    return source is not None and uses.get(source[0]) == 1 and source[0] not in memo \
        and _overwritable(op, tangents[0])


def _without_running_stats(func: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """batch_norm's arguments for its replay in training mode: no running statistics."""
    positions, names = _RUNNING_STATS[func], ("running_mean", "running_var")
    args = tuple(None if i in positions else a for i, a in enumerate(args))
    return args, {k: (None if k in names else v) for k, v in kwargs.items()}


def _affine_tangent(func: Callable, primal: tuple, tangent: tuple) -> torch.Tensor | None:
    """Tangent of ``func(x, W, b, ...)``, affine in x and in (W, b): func(dx; W) + func(x; dW, db)."""
    (args, kwargs), (targs, tkwargs) = primal, tangent
    (x, w, _), (dx, dw, db) = _affine_operands(args, kwargs), _affine_operands(targs, tkwargs)
    rest, options = args[3:], {k: v for k, v in kwargs.items() if k != "bias"}
    out = None
    if dw is not None or db is not None:
        out = func(x, torch.zeros_like(w) if dw is None else dw, db, *rest, **options)
    if dx is None:
        return out
    if out is None:
        return func(dx, w, None, *rest, **options)
    if func is F.linear and dx.ndim == 2:  # accumulated in place: no third activation-sized tensor
        return out.addmm_(dx, w.t())
    return out.add_(func(dx, w, None, *rest, **options))


def _affine_operands(args: tuple, kwargs: dict) -> tuple:
    """(input, weight, bias) of ``func(input, weight, bias=None, ...)``."""
    return args[0], args[1], args[2] if len(args) > 2 else kwargs.get("bias")


def _agrees(replayed: torch.Tensor, recorded: torch.Tensor) -> bool:
    """Equal up to the rounding of a different summation order (√eps of the rows' scale)."""
    if replayed.shape != recorded.shape:
        return False
    if recorded.numel() == 0:
        return True
    info = torch.finfo(recorded.dtype)
    scale = float(recorded.abs().max())
    return float((replayed - recorded).abs().max()) <= info.eps ** 0.5 * scale + info.tiny


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
