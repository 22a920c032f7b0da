"""``fedgate render FILE``: the manifest as fedgate reads it, as one JSON document.

The manifest is parsed and validated by fedgate itself (every problem on stderr as
``fedgate validate`` prints it, exit 2) and printed with every default filled in,
durations in seconds and keys in camelCase::

    {"apiVersion": "fedgate/v1", "kind": "Federation", "name": "acme-prod",
     "clusters": [{"name": ..., "region": ..., "cloud": ..., "environment": ...,
                   "tier": 0, "eastWest": "https://...:15443", "kubernetes": {...} | null,
                   "labels": {...}}, ...],
     "services": [{"name": ..., "routes": [{"host": ..., "pathPrefix": "/"}], ...}, ...],
     "zones": [{"name": "gslb.acme.com", ...}, ...]}

Terraform (``terraform/modules/fedgate-settings``) reads this file with ``jsondecode``
instead of re-parsing the YAML with rules of its own.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from federation.clikit import EXIT_OK, EXIT_USAGE, write_json
from federation.codec import to_plain
from federation.manifest import ManifestError, load_manifest
from federation.manifest.schema import API_VERSION, KIND
from federation.model import Federation


def document(federation: Federation) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": federation.name,
        "clusters": [to_plain(c) for c in federation.clusters],
        "services": [to_plain(s) for s in federation.services],
        "zones": [to_plain(z) for z in federation.zones],
    }


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    try:
        federation = load_manifest(args.file)
    except ManifestError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    write_json(out if out is not None else sys.stdout, document(federation))
    return EXIT_OK
