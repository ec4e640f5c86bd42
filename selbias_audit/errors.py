"""Exceptions that the command line turns into exit codes.

Every error a user can cause derives from :class:`SelbiasError`, carries the exit
code the CLI returns for it and a message that says what was wrong, on which value,
and what to do next.
"""

from __future__ import annotations


class SelbiasError(Exception):
    """Base class of the errors that reach the user."""

    exit_code: int = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """Return the message plus the hint, as printed by the CLI."""
        if self.hint:
            return f"{self.message}\nTip: {self.hint}"
        return self.message


class SpecError(SelbiasError):
    """The run description or one of its input files is invalid (exit code 2)."""

    exit_code = 2


class RunError(SelbiasError):
    """The audit started but could not finish (exit code 3)."""

    exit_code = 3


class NonFiniteError(RunError):
    """A score, potential or metric became NaN or infinite."""


class VerificationError(SelbiasError):
    """A receipt, its signature or one of its subjects does not verify (exit code 4)."""

    exit_code = 4


EXIT_PASS = 0
EXIT_GATE_FAILED = 1
EXIT_INVALID_INPUT = 2
EXIT_RUN_FAILED = 3
EXIT_VERIFY_FAILED = 4
