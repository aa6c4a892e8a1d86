"""Correct subgradients of non-smooth programs (Kakade & Lee's directional chain rule).

``subgradient(loss, params)`` for a function of parameters, ``exact_kinks()`` for ordinary
PyTorch code (``nn.Module``, ``loss.backward()``, ``torch.optim``), and the ``KinkReport``
that certifies which ties were resolved.

References
----------
S. Kakade, J. D. Lee, "Provably correct automatic subdifferentiation for qualified
programs", NeurIPS 2018.
"""

from dltheory.autodiff.kinks import active_pieces_gradient, exact_kinks, subgradient
from dltheory.autodiff.report import KinkReport, UnhandledKinkError

__all__ = ["KinkReport", "UnhandledKinkError", "active_pieces_gradient", "exact_kinks",
           "subgradient"]
