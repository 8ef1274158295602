"""The codec's one error family: every failure a user can cause is an ``AecError``.

Each subclass carries the CLI exit code documented in the README, so scripts can tell a
corrupt file from a missing one without parsing messages.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class AecError(Exception):
    """Base class; the message is one line a user can act on."""

    exit_code = 1


class UsageError(AecError):
    """Bad arguments: unknown model or quality, output exists, same input and output."""

    exit_code = 2


class ImageError(AecError):
    """An input image cannot be read, or has a mode or size the codec refuses."""

    exit_code = 3


class FormatError(AecError):
    """An .aec file is truncated, corrupt, hostile or from an unsupported format version."""

    exit_code = 4


class ModelError(AecError):
    """The model a file needs is not installed, or its weights differ from the encoder's."""

    exit_code = 5


class OutputError(AecError):
    """An output cannot be written (permission denied, disk full, missing folder)."""

    exit_code = 6


@contextmanager
def reading(path: Path, error: type[AecError]) -> Iterator[None]:
    """Turn the OS's ways of failing to read ``path`` into one-line ``error``s."""
    try:
        yield
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory") from None
    except PermissionError:
        raise error(f"{path}: permission denied") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None


def about(path: Path, exc: BaseException) -> str:
    """``exc``'s message naming ``path`` once (messages about a file start with its name)."""
    msg = str(exc) if isinstance(exc, AecError) else f"unexpected {exc.__class__.__name__}: {exc}"
    return msg if msg.startswith(str(path)) else f"{path}: {msg}"


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Re-raise codec errors about data read from ``path`` with the file's name in front."""
    try:
        yield
    except AecError as exc:
        raise type(exc)(about(path, exc)) from None
