"""User-facing error types and message templates, kept in one place.

Every message names the problem and the fix, so the CLI can print it as one line.
"""

from __future__ import annotations


class NasqError(Exception):
    """Base class of errors caused by user input; the CLI prints them as one line."""


class GenomeError(NasqError, ValueError):
    """A genome string could not be decoded, or a genome is invalid for its space."""


class ConfigError(NasqError, ValueError):
    """A configuration value is missing, malformed or out of range."""


class DataError(NasqError, ValueError):
    """A data set is missing or has the wrong layout."""


class CheckpointError(NasqError, ValueError):
    """A checkpoint or state file is corrupt, foreign or of an unsupported version."""


class ConstraintError(NasqError, ValueError):
    """A constraint cannot be satisfied by any candidate."""


def bad_token(kind: str, token: str, allowed: object, where: str = "") -> str:
    """Format the message for an unknown token in an encoded string."""
    loc = f" in {where!r}" if where else ""
    return f"unknown {kind} {token!r}{loc}; allowed: {allowed}"


def bad_state(path: object, problem: str, fix: str) -> str:
    """Format the message for a checkpoint or state file that cannot be used."""
    return f"cannot use state {path}: {problem}; {fix}"


def check_state_header(state: object, fmt: str, version: int, source: object, what: str, fix: str) -> dict:
    """Check the ``format``/``version`` header of a nasq state document and return it as a dict.

    Raises:
        CheckpointError: ``state`` is not a dict of format ``fmt`` (message: "not a nasq {what}"
            and ``fix``), or its version is not ``version`` (fix: upgrade nasq or start anew).
    """
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(bad_state(source, f"not a nasq {what}", fix))
    if state.get("version") != version:
        raise CheckpointError(bad_state(source, f"{what} version {state.get('version')!r} is not {version}",
                                        "upgrade nasq or start a new run"))
    return state
