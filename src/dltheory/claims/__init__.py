"""Claims: theorems and published experiments as sweeps with verdicts that can fail."""

from dltheory.claims.base import Claim, Outcome, Result, Results, Verdict
from dltheory.claims.registry import all_claims, get_claim

__all__ = ["Claim", "Outcome", "Result", "Results", "Verdict", "all_claims", "get_claim"]
