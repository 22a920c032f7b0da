"""The last TLS material from Vault, kept on disk for a start during a Vault outage.

A gateway that (re)starts while Vault is down would otherwise have no certificate: a
crash or a scale-out during an outage would leave the cluster without gateways. After
every issue or renewal :class:`~federation.vault.VaultTls` writes the material here; at
start, when Vault does not answer, it loads it back if it has not expired.

Protection: one JSON file (certificates, CA bundle and the **private keys**), written to
a temporary file created with mode 0600 in the same folder and renamed over the old one
(never a half-written file); the folder should be the gateway's own (0700, an
``emptyDir`` volume in Kubernetes). A file that other users can read, or that does not
parse, is not used (the gateway then waits for Vault). The keys are as exposed here as
in the gateway's memory to anyone who is root on the node; a stolen file is worth no
more than the certificate's remaining lifetime (24 h by default).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from gateway.tls import CertificateMaterial

__all__ = ["CacheError", "load_material", "save_material", "write_pem"]

_FIELDS = ("certificate", "private_key", "ca_bundle")


class CacheError(Exception):
    """The cached material is unusable; the message is one line."""


def save_material(
    path: str, public: CertificateMaterial | None, east_west: CertificateMaterial | None
) -> None:
    """Write both certificates atomically with mode 0600."""
    doc = {
        name: {f: getattr(m, f) for f in _FIELDS} if m is not None else None
        for name, m in (("public", public), ("east_west", east_west))
    }
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fedgate-tls-", dir=folder)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pem(path: str, text: str) -> None:
    """Replace ``path`` atomically with ``text``, mode 0600 (a key, or its certificate)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fedgate-pem-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_material(path: str) -> tuple[CertificateMaterial | None, CertificateMaterial | None]:
    """(public, east_west) as saved; raises :class:`CacheError` when unusable."""
    try:
        mode = os.stat(path).st_mode
        text = Path(path).read_text()
    except OSError as exc:
        raise CacheError(f"TLS cache {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise CacheError(f"TLS cache {path}: readable by other users (mode {mode & 0o777:o})")
    try:
        doc = json.loads(text)
        out: list[CertificateMaterial | None] = []
        for name in ("public", "east_west"):
            item = doc[name]
            out.append(
                None if item is None else CertificateMaterial(**{f: str(item[f]) for f in _FIELDS})
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"TLS cache {path}: not a fedgate TLS cache ({exc})") from None
    return out[0], out[1]
