"""Errors the user can fix. The CLI prints them as one line and exits with code 2."""


class PtmdetoxError(Exception):
    """Bad input: a file, column, option or checkpoint the user supplied."""


class UnsafeCheckpointError(PtmdetoxError):
    """A checkpoint that could run code or cannot be trusted as given."""


class DivergenceError(PtmdetoxError):
    """Training produced a non-finite loss; nothing is saved."""
