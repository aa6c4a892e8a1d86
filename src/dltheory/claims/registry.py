"""The registry of claims: every module in this package that defines ``CLAIM``.

Adding a claim is adding one module; nothing else needs to change.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from functools import lru_cache

from dltheory.claims.base import Claim
from dltheory.errors import UnknownClaimError

_NOT_CLAIMS = {"base", "registry", "runner"}


@lru_cache(maxsize=1)
def all_claims() -> dict[str, Claim]:
    """Every registered claim by id, in id order."""
    import dltheory.claims as package

    found: dict[str, Claim] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_CLAIMS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        claim = getattr(module, "CLAIM", None)
        if not isinstance(claim, Claim):
            raise TypeError(f"claim module {module.__name__} must define CLAIM = <Claim instance>")
        if claim.id in found:
            raise TypeError(f"two claims have the id {claim.id!r}")
        found[claim.id] = claim
    return dict(sorted(found.items()))


def get_claim(claim_id: str) -> Claim:
    """The claim with ``claim_id``; an unknown id suggests the closest ones."""
    claims = all_claims()
    if claim_id in claims:
        return claims[claim_id]
    close = difflib.get_close_matches(claim_id, list(claims), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else "run `dltheory list` to see them"
    raise UnknownClaimError(f"unknown claim {claim_id!r}; {hint}")
