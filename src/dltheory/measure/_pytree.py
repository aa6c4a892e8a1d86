"""Parameters as one flat vector: the measures work on ``R^P``, users on tensors or dicts."""

from __future__ import annotations

from typing import Callable, Mapping, Union

import torch

from dltheory.errors import ShapeError, UserError

Params = Union[torch.Tensor, Mapping[str, torch.Tensor]]


class _Layout:
    """Names, shapes and offsets of the leaves of ``params`` (a tensor or a dict)."""

    def __init__(self, params: Params):
        if isinstance(params, torch.Tensor):
            self.names: list[str] | None = None
            leaves = [params]
        elif isinstance(params, Mapping) and params:
            self.names = list(params.keys())
            leaves = list(params.values())
        else:
            raise UserError("params must be a tensor or a non-empty dict[str, Tensor]; "
                            "for an nn.Module pass dict(model.named_parameters())")
        for leaf in leaves:
            if not isinstance(leaf, torch.Tensor) or not leaf.is_floating_point():
                raise UserError("every parameter must be a floating-point tensor")
        self.shapes = [leaf.shape for leaf in leaves]
        self.sizes = [leaf.numel() for leaf in leaves]
        self.numel = sum(self.sizes)
        self.dtype = leaves[0].dtype
        self.device = leaves[0].device

    def leaves(self, params: Params) -> list[torch.Tensor]:
        return [params] if self.names is None else [params[n] for n in self.names]

    def build(self, leaves: list[torch.Tensor]) -> Params:
        return leaves[0] if self.names is None else dict(zip(self.names, leaves))

    def flatten(self, params: Params) -> torch.Tensor:
        return torch.cat([leaf.reshape(-1) for leaf in self.leaves(params)])

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of a flat vector (or of the rows of a ``(B, P)`` batch) shaped as the leaves."""
        lead = flat.shape[:-1]
        return [chunk.reshape(*lead, *shape)
                for chunk, shape in zip(flat.split(self.sizes, dim=-1), self.shapes)]

    def unflatten(self, flat: torch.Tensor) -> Params:
        return self.build(self.split(flat))

    def flatten_batch(self, vectors: Params) -> torch.Tensor:
        """``(B, P)`` from a tree whose leaves carry a leading batch dimension."""
        leaves = self.leaves(vectors)
        for leaf, shape in zip(leaves, self.shapes):
            if leaf.dim() != len(shape) + 1 or leaf.shape[1:] != shape:
                raise ShapeError(f"batched vectors need shape (B, *{tuple(shape)}), got "
                                 f"{tuple(leaf.shape)}")
        return torch.cat([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], dim=1)


def _flat_loss(loss: Callable[[Params], torch.Tensor], layout: _Layout):
    return lambda theta: loss(layout.unflatten(theta))
