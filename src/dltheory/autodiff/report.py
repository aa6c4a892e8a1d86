"""What a forward pass met at its kinks: the certificate of the directional chain rule."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dltheory.errors import UserError


class UnhandledKinkError(UserError):
    """A non-smooth op without a directional rule ran under ``exact_kinks(strict=True)``."""


def _counter() -> defaultdict[str, int]:
    return defaultdict(int)


@dataclass
class KinkReport:
    """Counts of exact ties, per op, in the forward pass(es) since the last backward.

    Attributes
    ----------
    ties : elements (or reduction slices, or pooling windows) that sat exactly on a kink
        and were resolved by the sign of their directional derivative.
    undetermined : ties whose directional derivative was zero too (relu-type) or tied
        among the tied pieces (max-type). There Kakade & Lee's guarantee does not apply: the
        program is outside the qualified class at that point and PyTorch's convention (or
        the first tied piece) was kept.
    identical : max-pool windows whose tied entries also have equal directional
        derivatives: for a Gaussian direction this means, almost surely, entries with equal
        Jacobians (identical input patches such as a constant background), so every choice
        gives the same parameter gradient. Counted apart so they do not drown the rest.
    flat : max-pool windows whose max is a value where the op that produced the input is
        flat (0 after a tie-free ``relu``: every entry of the window is 0; a ``clamp``
        bound): every entry that can tie there has zero derivative, so no tangent is
        needed and the gradient is PyTorch's.
    unhandled : calls of non-smooth ops that have no directional rule (their ties, if any,
        got PyTorch's convention).
    whole_batch : under ``batch_dim``, calls of a kink op at a tie whose tangent was
        computed for the whole batch, as the replay on the tied rows could not follow the
        program there (the gradient is the same; only the cost differs).

    References
    ----------
    S. Kakade, J. D. Lee, "Provably correct automatic subdifferentiation for qualified
    programs", NeurIPS 2018.
    """

    ties: defaultdict[str, int] = field(default_factory=_counter)
    undetermined: defaultdict[str, int] = field(default_factory=_counter)
    identical: defaultdict[str, int] = field(default_factory=_counter)
    flat: defaultdict[str, int] = field(default_factory=_counter)
    unhandled: defaultdict[str, int] = field(default_factory=_counter)
    whole_batch: defaultdict[str, int] = field(default_factory=_counter)

    @property
    def certified(self) -> bool:
        """True when every tie that matters was resolved by the directional rule."""
        return not any(self.undetermined.values()) and not any(self.unhandled.values())

    @property
    def n_ties(self) -> int:
        """Ties resolved by a tangent (the ones that can change the gradient)."""
        return sum(self.ties.values())

    def merge(self, other: KinkReport) -> None:
        """Add ``other``'s counts to this report."""
        for name in ("ties", "undetermined", "identical", "flat", "unhandled", "whole_batch"):
            mine = getattr(self, name)
            for op, n in getattr(other, name).items():
                mine[op] += n

    def __str__(self) -> str:
        ops = sorted({op for counts in (self.ties, self.identical, self.flat, self.unhandled)
                      for op, n in counts.items() if n})
        if not ops:
            return "KinkReport: no exact tie; the gradient is PyTorch's."
        parts = []
        for op in ops:
            bits = [f"{self.ties[op]} ties ({self.undetermined[op]} undetermined)"]
            bits += [f"{getattr(self, k)[op]} {k.replace('_', ' ')}"
                     for k in ("identical", "flat", "whole_batch") if getattr(self, k)[op]]
            if self.unhandled[op]:
                bits.append(f"{self.unhandled[op]} calls without a directional rule")
            parts.append(f"{op}: " + ", ".join(bits))
        verdict = "certified" if self.certified else "NOT certified"
        return f"KinkReport ({verdict}): " + "; ".join(parts)
