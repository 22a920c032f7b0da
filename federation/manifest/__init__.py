"""The federation manifest: YAML -> frozen :class:`federation.model.Federation`.

    from federation.manifest import ManifestError, load_manifest

    try:
        federation = load_manifest("clusters.example.yaml")
    except ManifestError as exc:
        for line in exc.lines:        # "FILE:LINE:COLUMN: field.path: message", sorted
            print(line, file=sys.stderr)

Every problem is reported (not only the first), with the line and column where it was
written. The fields and their defaults are documented in ``docs/manifest.md``.
"""

from __future__ import annotations

from pathlib import Path

from federation.manifest.errors import Issue, ManifestError
from federation.manifest.loader import Checked, check, load, load_checked, parse
from federation.model import Federation

__all__ = [
    "Checked",
    "Issue",
    "Manifest",
    "ManifestError",
    "check_manifest",
    "check_manifest_text",
    "load_manifest",
    "parse_manifest",
]


def load_manifest(path: str | Path) -> Federation:
    """Read, validate and convert the manifest file at ``path``.

    Raises :class:`ManifestError` (``.lines``: one ``FILE:LINE:COLUMN: path: message`` per
    problem) if the file cannot be read, is not YAML, or does not validate.
    """
    return load(path)


def parse_manifest(text: str, *, filename: str = "<manifest>") -> Federation:
    """Validate and convert manifest ``text``; ``filename`` is used in error lines."""
    return parse(text, filename=filename)


def check_manifest(path: str | Path) -> Checked:
    """:func:`load_manifest`, keeping the warnings (valid, but probably not meant: a cluster
    of a service where it can never have an endpoint)."""
    return load_checked(path)


def check_manifest_text(text: str, *, filename: str = "<manifest>") -> Checked:
    return check(text, filename=filename)


class Manifest:
    """Named constructors for a :class:`Federation` from its manifest."""

    @staticmethod
    def from_yaml(text: str, *, filename: str = "<manifest>") -> Federation:
        return parse(text, filename=filename)

    @staticmethod
    def from_file(path: str | Path) -> Federation:
        return load(path)
