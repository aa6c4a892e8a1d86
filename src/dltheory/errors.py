"""Errors a user can act on.

Every mistake of the user (unknown claim, bad ``--set``, wrong shapes, NaN in data, an
unusable store) raises a subclass of :class:`UserError` whose message says what to do.
The CLI prints that one line and exits with status 2; library callers catch it like any
exception.
"""


class UserError(Exception):
    """A mistake the user can fix; the message is one line that says how."""


class UnknownClaimError(UserError):
    """No claim has the requested id."""


class ConfigError(UserError):
    """A configuration key or value is invalid."""


class StoreError(UserError):
    """The results store cannot be opened, created or written."""


class DeviceError(UserError):
    """The requested device is not available."""


class ShapeError(UserError):
    """An input has the wrong shape or contains NaN/inf."""


class SolverError(UserError):
    """A reference solver failed or its problem is infeasible (e.g. data not separable)."""
