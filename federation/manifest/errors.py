"""Manifest problems: one :class:`Issue` per problem, :class:`ManifestError` carries them all."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Issue:
    """One problem, printed as ``FILE:LINE:COLUMN: field.path: message``.

    ``line`` and ``column`` are 1-based; 0 means "the file as a whole" (unreadable, empty).
    """

    line: int
    column: int
    path: str
    message: str
    file: str = "<manifest>"

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


class ManifestError(Exception):
    """A manifest that does not validate. ``lines`` holds one printable line per problem,
    sorted by position; ``issues`` the same problems as structured values."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        unique = sorted(set(issues), key=lambda i: (i.line, i.column, i.path, i.message))
        self.issues: tuple[Issue, ...] = tuple(unique)
        self.lines: tuple[str, ...] = tuple(str(i) for i in unique)
        first = self.lines[0] if self.lines else "invalid manifest"
        more = f" (and {len(self.lines) - 1} more)" if len(self.lines) > 1 else ""
        super().__init__(first + more)
