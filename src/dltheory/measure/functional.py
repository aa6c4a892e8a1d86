"""An ``nn.Module`` and its data as the functional form ``loss(params) -> scalar``.

The measures of this layer take a function of the parameters; :func:`model_loss` builds
it from a model, a criterion and a dataset with :func:`torch.func.functional_call`, so
the model's own parameters are never touched.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from dltheory.errors import ShapeError, UserError


class ModelLoss:
    """``loss(params)``: the criterion of ``model`` over a dataset, as one function of the weights.

    Mini-batches are combined exactly: with a criterion that averages (``reduction="mean"``,
    the default of every torch loss) batch ``b`` of size ``n_b`` is weighted by ``n_b / N``,
    so batches of 1000 + 24 give the same loss (and Hessian) as one batch of 1024; with
    ``reduction="sum"`` the batch sums are added. The train/eval mode is never switched:
    the caller chooses it. Call ``model.eval()`` before measuring to freeze dropout and use
    BatchNorm's running statistics; in train mode dropout draws from the global RNG and
    BatchNorm updates its running buffers on every evaluation (and couples the samples of a
    batch, so the result depends on how the data are batched).

    Attributes
    ----------
    model, criterion : the module and the loss function, as given.
    batches : list of ``(inputs, targets)``.
    weights : list of float, the weight of each batch's criterion value.
    params : dict[str, Tensor], ``dict(model.named_parameters())`` (the live parameters;
        measures read them and never write them).
    """

    def __init__(self, model: nn.Module, criterion: Callable, data):
        if not isinstance(model, nn.Module):
            raise UserError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.criterion = criterion
        self.batches = _as_batches(data)
        sizes = [x.shape[0] for x, _ in self.batches]
        total = sum(sizes)
        reduction = getattr(criterion, "reduction", "mean")
        if reduction not in ("mean", "sum"):
            raise UserError(f"criterion reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.weights = [n / total if reduction == "mean" else 1.0 for n in sizes]
        self.params = dict(model.named_parameters())

    def __call__(self, params) -> torch.Tensor:
        if not isinstance(params, dict):
            raise UserError("a ModelLoss takes a dict[str, Tensor] of (some of) the model's "
                            "parameters, e.g. dict(model.named_parameters())")
        unknown = set(params) - set(self.params)
        if unknown:
            raise UserError(f"unknown parameter names {sorted(unknown)}; use names from "
                            "model.named_parameters()")
        total = 0.0
        for (x, y), w in zip(self.batches, self.weights):
            total = total + w * self.criterion(functional_call(self.model, params, (x,)), y)
        return total


def model_loss(model: nn.Module, criterion: Callable, data) -> ModelLoss:
    """The functional form of ``criterion(model(x), y)`` over a dataset.

    Parameters
    ----------
    model : nn.Module
        Evaluated with :func:`torch.func.functional_call`; its mode is left as it is.
    criterion : callable
        ``criterion(outputs, targets) -> scalar``, e.g. ``nn.CrossEntropyLoss()``; a
        ``reduction`` attribute of ``"sum"`` adds batches, anything else averages them.
    data : (inputs, targets) or iterable of (inputs, targets)
        One batch or several (a ``DataLoader`` is read once, into a list).

    Returns
    -------
    ModelLoss
        Callable as ``loss(params)``; ``loss.params`` holds the model's parameters.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> g = torch.Generator().manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> x, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    >>> whole = model_loss(model, nn.CrossEntropyLoss(), (x, y))
    >>> split = model_loss(model, nn.CrossEntropyLoss(), [(x[:7], y[:7]), (x[7:], y[7:])])
    >>> torch.allclose(whole(whole.params), split(split.params))
    True
    """
    return ModelLoss(model, criterion, data)


def _as_batches(data) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        batches: Sequence = [data]
    elif isinstance(data, Iterable):
        batches = [tuple(b) for b in data]
    else:
        raise UserError("data must be (inputs, targets) or an iterable of such batches")
    if not batches:
        raise UserError("data holds no batch")
    for b in batches:
        if len(b) != 2 or not all(isinstance(t, torch.Tensor) for t in b):
            raise UserError("every batch must be a pair (inputs, targets) of tensors")
        if b[0].shape[0] != b[1].shape[0] or b[0].shape[0] == 0:
            raise ShapeError(f"a batch has {b[0].shape[0]} inputs and {b[1].shape[0]} targets; "
                             "they must match and be non-empty")
    return list(batches)
