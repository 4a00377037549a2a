"""Errors the user can fix. The CLI prints them as one line and exits with code 2."""


class PtmdetoxError(Exception):
    """Bad input: a file, column, option or checkpoint the user supplied."""


class UnsafeCheckpointError(PtmdetoxError):
    """A checkpoint that could run code or cannot be trusted as given."""


class DivergenceError(PtmdetoxError):
    """Training produced a non-finite loss; nothing is saved."""


def check_choice(what: str, value, choices) -> None:
    """Refuse `value` unless it is one of `choices`, naming them: "unknown norm 'x' (choose from fro, fro2)"."""
    if value not in choices:
        raise PtmdetoxError(f"unknown {what} '{value}' (choose from {', '.join(choices)})")
