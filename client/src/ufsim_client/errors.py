"""Exceptions raised by ufsim-client: one root class, one subclass per kind of failure."""

from __future__ import annotations


class UfsimError(Exception):
    """Root of every error raised on purpose by ufsim-client."""


class InputError(UfsimError, ValueError):
    """A particle or event given to the client is invalid; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid input field {field!r}: {message}")
        self.field = field


class ContractError(UfsimError):
    """The server's model metadata does not offer the tensors this client needs."""


class ServerError(UfsimError):
    """A request failed on every server, or failed with a non-transient error."""

    def __init__(self, message: str, *, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status
