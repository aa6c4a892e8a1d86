"""Correct subgradients of non-smooth programs: the randomized directional chain rule.

PyTorch differentiates each non-smooth primitive by a fixed convention (relu'(0) = 0,
``maximum`` splits ties, ``clamp`` takes 1 at its bounds ...), and the conventions do not
compose: d/dx [relu(x) − relu(−x)] at 0 comes out 0, the true derivative is 1. Kakade & Lee
(2018) show that choosing, at every kink, the piece that is active in a direction ``v``
— the one selected by the sign of the one-sided directional derivative of the kink's
argument — yields ``lim_{ε↓0} ∇f(x + εv)``, an element of the Clarke subdifferential, for
every program built from piecewise-smooth primitives (almost every ``v``).

A :class:`torch.overrides.TorchFunctionMode` watches the non-smooth primitives during an
ordinary forward pass. Where an op hits no exact tie (the common case) the original op
runs untouched, so the gradient is PyTorch's bit for bit; where it hits one, the rule of
:mod:`dltheory.autodiff._rules` replaces it by the active piece.

References
----------
S. Kakade, J. D. Lee, "Provably correct automatic subdifferentiation for qualified
programs", NeurIPS 2018.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from dltheory.autodiff._rules import RULES, UNHANDLED, _Ctx, _Direction, inplace
from dltheory.autodiff._tape import _Tape, batch_norm_in_training
from dltheory.autodiff.report import KinkReport, UnhandledKinkError
from dltheory.errors import UserError

# the calls that consume a graph: the report of the forward before them is complete
_BACKWARD = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}


def _any_requires_grad(args, kwargs) -> bool:
    return any(isinstance(a, torch.Tensor) and a.requires_grad
               for a in (*args, *kwargs.values()))


def _name(func) -> str:
    return getattr(func, "__name__", repr(func))


class exact_kinks(TorchFunctionMode):  # noqa: N801 — a context manager, like no_grad
    """Within this context, autograd returns Kakade–Lee subgradients at kinks.

    Ordinary code — ``nn.Module`` forward passes, ``F.relu``, ``loss.backward()``, any
    ``torch.optim`` loop — runs unchanged. Ops that hit no exact tie run as usual (the
    gradient is PyTorch's, bit for bit); at a tie the piece active in a random direction
    ``v`` is used. Handled: relu (and ``relu_``), leaky_relu, relu6, hardtanh, clamp/clip
    (scalar or tensor bounds), abs, maximum/minimum, max/min/amax/amin (values and
    indices), max_pool1d/2d, l1_loss. Other non-smooth ops warn once (or raise with
    ``strict=True``) when they act on a tensor that requires grad.

    Parameters
    ----------
    strict : raise :class:`UnhandledKinkError` when a non-smooth op without a directional
        rule runs (default: warn once per op).
    generator : draws the direction ``v`` (a standard Gaussian per leaf tensor, drawn once
        per context); default: a CPU generator seeded with 0.
    direction : ``{id(leaf): tensor}`` fixing ``v`` for some leaves.
    batch_dim : ``0`` declares that the samples of a batch (dim 0) do not interact: row i
        of every tensor computed from the batch depends on sample i and the parameters
        alone (per-sample layers; a loss that reduces by mean or sum). A tie's tangent —
        always computed by forward-mode AD through the ops recorded since the last
        backward, reading the activations kept for the backward — is then computed on the
        rows that hold a tie alone; the gradient is the same as without it. Tensors that
        require no grad are samples when their dim 0 has the batch's size,
        ``nn.Parameter``s are shared; ``batch_norm`` in training mode raises
        :class:`UserError`. Where the replay on the tied rows cannot follow (rows that meet
        before the tie, an op run in place or outside the context) the tie gets the whole
        batch's tangent, counted in ``report.whole_batch``. Default ``None``: the whole
        batch's tangent at every tie (samples may interact: batch norm in training mode,
        whose running statistics the replay does not update a second time; random ops such
        as dropout are never replayed). Where no replay can follow, the tangent comes from
        two vector-Jacobian products through the autograd graph.

    Attributes
    ----------
    report : :class:`KinkReport` of the forward pass(es) since the previous backward (so,
        after ``loss.backward()``, the ties that this gradient met).
    total : :class:`KinkReport` over the whole context.

    Examples
    --------
    >>> x = torch.zeros(1, requires_grad=True)
    >>> with exact_kinks():
    ...     y = torch.relu(x) - torch.relu(-x)      # the identity, written with kinks
    ...     y.sum().backward()
    >>> x.grad.item()                                 # PyTorch alone says 0.0
    1.0

    References
    ----------
    S. Kakade, J. D. Lee, "Provably correct automatic subdifferentiation for qualified
    programs", NeurIPS 2018.
    """

    def __init__(self, strict: bool = False, generator: torch.Generator | None = None,
                 direction: Mapping[int, torch.Tensor] | None = None, batch_dim: int | None = None,
                 *, _others_zero: bool = False, _shared: tuple[int, ...] = ()):
        super().__init__()
        if generator is not None and not isinstance(generator, torch.Generator):
            raise UserError("exact_kinks: generator must be a torch.Generator, "
                            f"got {type(generator).__name__}")
        if batch_dim is not None and (isinstance(batch_dim, bool) or batch_dim != 0):
            raise UserError(f"exact_kinks: batch_dim must be None or 0 (the samples along the first "
                            f"dim), got {batch_dim!r}; move the batch to dim 0")
        self.strict = bool(strict)
        if generator is None:  # no global RNG: the same code draws the same v
            generator = torch.Generator().manual_seed(0)
        self._ctx = _Ctx(_Direction(direction, generator, _others_zero), KinkReport(),
                         WeakIdKeyDictionary(), tape=_Tape(_shared, per_sample=batch_dim is not None))
        self._past = KinkReport()
        self._after_backward = False
        self._warned: set[str] = set()

    @property
    def report(self) -> KinkReport:
        return self._ctx.report

    @property
    def total(self) -> KinkReport:
        total = KinkReport()
        total.merge(self._past)
        total.merge(self._ctx.report)
        return total

    def _start_forward(self) -> None:
        # the first kink after a backward starts a new forward pass: a new report
        if self._after_backward:
            self._after_backward = False
            self._past.merge(self._ctx.report)
            self._ctx.report = KinkReport()

    def __exit__(self, *exc):
        self._ctx.tape.clear()  # the record and tangents of this context: not needed after it
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tape = self._ctx.tape
        if func in _BACKWARD:
            self._after_backward = True
            tape.clear()  # the forward's record is of no use to the next one
            return func(*args, **kwargs)
        rule = RULES.get(func)
        if rule is not None:
            if not torch.is_grad_enabled():
                return func(*args, **kwargs)
            self._start_forward()
            out = rule(self._ctx, args, kwargs)
            if out is not None:
                return self._in_place(args[0], out) if inplace(func, args, kwargs) else out
            return self._ctx.run(func, *args, **kwargs)
        if func in UNHANDLED and torch.is_grad_enabled() and _any_requires_grad(args, kwargs):
            self._unhandled(_name(func))
        if torch.is_grad_enabled():
            if tape.per_sample and batch_norm_in_training(func, args, kwargs) \
                    and _any_requires_grad(args, kwargs):
                raise UserError("exact_kinks(batch_dim=0): batch_norm in training mode mixes the "
                                "samples of a batch; use eval mode or leave batch_dim=None")
            return self._ctx.run(func, *args, **kwargs)
        return func(*args, **kwargs)

    def _in_place(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``relu_`` and kin at a tie: write the rule's output into x, as the op would."""
        x.copy_(out)  # autograd records the copy: x's gradient flows through out's rule
        flat = self._ctx.flat.get(out)
        if flat is not None:
            self._ctx.mark_flat(x, flat[0], flat[1])
        self._ctx.tape.alias(x, out)
        return x

    def _unhandled(self, name: str) -> None:
        self._start_forward()
        self._ctx.report.unhandled[name] += 1
        if self.strict:
            raise UnhandledKinkError(f"exact_kinks(strict=True): {name} is non-smooth and has no "
                                     "directional rule; rewrite it with max/relu/abs or use strict=False")
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"exact_kinks: {name} has no directional rule; its ties get PyTorch's "
                          "convention", stacklevel=3)


def _flatten(params, what: str) -> tuple[list, list[torch.Tensor]]:
    """(names, tensors) of a tensor (names = [None]) or a dict of tensors."""
    if isinstance(params, torch.Tensor):
        names, values = [None], [params]
    elif isinstance(params, Mapping):
        names, values = list(params), list(params.values())
    else:
        raise UserError(f"subgradient: {what} must be a tensor or a dict of tensors, "
                        f"got {type(params).__name__}")
    for name, v in zip(names, values):
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            label = "" if name is None else f"[{name!r}]"
            raise UserError(f"subgradient: {what}{label} must be a floating-point tensor")
    return names, values


def _unflatten(names: list, values: list[torch.Tensor]):
    return values[0] if names == [None] else dict(zip(names, values))


def _directions(params_names, leaves, direction) -> list[torch.Tensor]:
    names, dirs = _flatten(direction, "direction")
    if names != params_names:
        raise UserError(f"subgradient: direction must have the keys of params ({params_names})")
    for name, leaf, d in zip(names, leaves, dirs):
        if d.shape != leaf.shape:
            label = "" if name is None else f"[{name!r}]"
            raise UserError(f"subgradient: direction{label} has shape {tuple(d.shape)}, "
                            f"params{label} has {tuple(leaf.shape)}; pass one of the same shape")
    return [d.detach().to(leaf) for leaf, d in zip(leaves, dirs)]


def subgradient(loss: Callable[[Any], torch.Tensor], params, *, direction=None,
                generator: torch.Generator | None = None, batch_dim: int | None = None,
                return_report: bool = False):
    """An element of the Clarke subdifferential of ``loss`` at ``params``.

    Computes ``lim_{ε↓0} ∇loss(params + ε v)`` by the randomized directional chain rule of
    Kakade & Lee (2018): ``v`` is ``direction`` if given, else a standard Gaussian drawn
    from ``generator``. Where no exact tie occurs the result is PyTorch's gradient, bit for
    bit.

    Parameters
    ----------
    loss : ``loss(params) -> scalar tensor`` (the functional form of ``torch.func``).
    params : a floating-point tensor or a dict of them (not modified).
    direction : same structure as ``params``; the direction v.
    generator : draws v when ``direction`` is None (default: a CPU generator seeded with 0).
    batch_dim : ``0`` declares that the samples of the batch that ``loss`` reads (dim 0)
        do not interact: tangents at ties are then computed on the tied samples alone (see
        :class:`exact_kinks`); the result is the same.
    return_report : also return the :class:`KinkReport` of the evaluation.

    Returns
    -------
    The subgradient, with the structure of ``params`` (and the report on request).

    References
    ----------
    S. Kakade, J. D. Lee, "Provably correct automatic subdifferentiation for qualified
    programs", NeurIPS 2018.

    Examples
    --------
    >>> f = lambda x: torch.relu(x) - torch.relu(-x)   # = x; PyTorch's gradient at 0 is 0
    >>> float(subgradient(f, torch.tensor(0.0)))
    1.0
    >>> float(subgradient(lambda x: torch.maximum(x, 0 * x), torch.tensor(0.0),
    ...                   direction=torch.tensor(-1.0)))
    0.0
    """
    names, values = _flatten(params, "params")
    leaves = [v.detach().clone().requires_grad_(True) for v in values]
    if generator is not None and not isinstance(generator, torch.Generator):
        raise UserError(f"subgradient: generator must be a torch.Generator, got {type(generator).__name__}")
    if direction is None:
        gen = torch.Generator().manual_seed(0) if generator is None else generator
        dirs = [torch.randn(leaf.shape, generator=gen, dtype=leaf.dtype, device=gen.device).to(leaf.device)
                for leaf in leaves]
    else:
        dirs = _directions(names, leaves, direction)
    given = {id(leaf): d for leaf, d in zip(leaves, dirs)}
    mode = exact_kinks(direction=given, batch_dim=batch_dim, _others_zero=True, _shared=tuple(given))
    with torch.enable_grad(), mode:
        value = loss(_unflatten(names, leaves))
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise UserError("subgradient: loss(params) must return a scalar tensor")
    grads = torch.autograd.grad(value.reshape(()), leaves, allow_unused=True)
    grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]
    result = _unflatten(names, grads)
    return (result, mode.report) if return_report else result


def active_pieces_gradient(loss: Callable[[Any], torch.Tensor], params, direction,
                           eps: float = 1e-7):
    """The reference answer: PyTorch's gradient at ``params + eps·direction``, in float64.

    For a piecewise-smooth program and small enough ``eps`` no tie is active there, and
    the gradient equals the limit that the directional rule computes; check that no kink
    argument is within rounding of its knot at that point before trusting it.
    """
    names, values = _flatten(params, "params")
    dirs = _directions(names, values, direction)
    leaves = [(v.detach().double() + eps * d.double()).requires_grad_(True)
              for v, d in zip(values, dirs)]
    grads = torch.autograd.grad(loss(_unflatten(names, leaves)), leaves, allow_unused=True)
    return _unflatten(names, [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)])
