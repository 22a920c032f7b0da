"""``fedgate etcd-bootstrap``: create etcd's users and roles of least privilege, enable auth.

    fedgate etcd-bootstrap --manifest clusters.yaml --etcd https://etcd:2379 \
        --etcd-cacert ca.pem --etcd-cert root.pem --etcd-key root-key.pem

One role per writer of :data:`federation.keys.WRITERS` (and per cluster where the
writer is a cluster's), one user per role, then ``auth enable``. Idempotent: run it
again after adding a cluster, or after a new kind of key, and it grants only what is
missing (and revokes what the table no longer grants); ``--prune`` deletes the roles and
users of clusters no longer named. Prints what changed.

Users authenticate with a client certificate whose Common Name is the user (no
password), or, with ``--passwords-dir DIR``, with a password generated once into
``DIR/<user>.password`` (0600; delete the file and run again to rotate it).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from federation.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CommandError
from federation.commands.apply import connection, etcd_options
from federation.etcd import EtcdClient, EtcdError
from federation.etcd_roles import bootstrap


def _clusters(args: argparse.Namespace) -> list[str]:
    names = list(args.cluster or [])
    if args.manifest:
        from federation.manifest import ManifestError, load_manifest

        try:
            federation = load_manifest(args.manifest)
        except ManifestError as exc:
            raise CommandError(str(exc).splitlines()[0], EXIT_USAGE) from None
        names += [c.name for c in federation.clusters]
    if not names:
        raise CommandError("name the clusters: --manifest FILE or --cluster NAME", EXIT_USAGE)
    return names


async def _run(args: argparse.Namespace) -> list[str]:
    endpoints, layout = connection(args)
    client = EtcdClient(endpoints, **etcd_options(args))
    try:
        passwords = Path(args.passwords_dir) if args.passwords_dir else None
        return await bootstrap(
            client, layout, _clusters(args), passwords_dir=passwords, prune=bool(args.prune)
        )
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    try:
        if args.passwords_dir:
            Path(args.passwords_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        report = asyncio.run(_run(args))
    except ValueError as exc:
        raise CommandError(str(exc).splitlines()[0], EXIT_USAGE) from None
    except (EtcdError, OSError) as exc:
        raise CommandError(str(exc).splitlines()[0], EXIT_FAILURE) from None
    for line in report:
        print(line)
    print(f"etcd roles in place ({len(report)} change(s))")
    return EXIT_OK
