"""Data generators with known structure (teacher–student, separable, low-rank)."""

from dltheory.data.separable import separable_gaussian

__all__ = ["separable_gaussian"]
