"""Reference solvers (cvxpy): the answers theorems predict, with certified optimality."""

from dltheory.reference.svm import MaxMarginSolution, max_margin

__all__ = ["MaxMarginSolution", "max_margin"]
