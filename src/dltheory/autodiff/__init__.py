"""Correct subgradients of non-smooth programs (Kakade & Lee's directional chain rule)."""

from dltheory.autodiff.kinks import (
    KinkReport,
    UnhandledKinkError,
    active_pieces_gradient,
    exact_kinks,
    subgradient,
)

__all__ = ["KinkReport", "UnhandledKinkError", "active_pieces_gradient", "exact_kinks",
           "subgradient"]
