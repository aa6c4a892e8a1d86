"""dltheory: the foundations of deep-learning theory, runnable.

Each result of the field is a *claim* that runs a sweep, measures what the theorem talks
about, checks it against an independent answer and draws the figure a paper would draw.
The building blocks (problems, models, optimizers, measurements, reference solvers) are a
library for researchers' own models.
"""

from dltheory.errors import (
    ConfigError,
    DeviceError,
    ShapeError,
    SolverError,
    StoreError,
    UnknownClaimError,
    UserError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DeviceError",
    "ShapeError",
    "SolverError",
    "StoreError",
    "UnknownClaimError",
    "UserError",
    "__version__",
]
