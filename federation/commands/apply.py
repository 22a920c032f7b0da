"""``fedgate apply FILE [--dry-run] [--prune]``: register a manifest in etcd.

Validates the manifest (errors as ``fedgate validate`` prints them, exit 2, nothing
written), reads the config keys with their revision, prints the diff against them,
and writes everything in one transaction guarded by what it read:

    + cluster gcp-europe-west4
    ~ service checkout: retries, routes
    - service legacy                                   (only with --prune)
      service legacy: not in manifest (kept; --prune removes)

A concurrent change between the read and the write is reported and nothing is
written (exit 1). Connection: ``--etcd`` (comma-separated), ``--prefix``, or
``FEDGATE_ETCD`` / ``FEDGATE_ETCD_PREFIX``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from federation.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CommandError
from federation.etcd import EtcdClient, EtcdError, parse_endpoints
from federation.keys import DEFAULT_PREFIX, KeyLayout
from federation.manifest import ManifestError, load_manifest
from federation.model import Federation
from federation.store import ApplyResult, ConcurrentChange, Plan, apply_federation

DEFAULT_ETCD = "http://127.0.0.1:2379"


def connection(args: argparse.Namespace) -> tuple[list[str], KeyLayout]:
    """The etcd endpoints and key layout from ``--etcd`` / ``--prefix`` (or defaults)."""
    endpoints = parse_endpoints(getattr(args, "etcd", None) or DEFAULT_ETCD)
    if not endpoints:
        raise CommandError("--etcd: no endpoint given", EXIT_USAGE)
    try:
        layout = KeyLayout(getattr(args, "prefix", None) or DEFAULT_PREFIX)
    except ValueError as exc:
        raise CommandError(f"--prefix: {exc}", EXIT_USAGE) from None
    return endpoints, layout


def print_plan(plan: Plan, *, federation: Federation, out: TextIO | None = None) -> None:
    stream = out if out is not None else sys.stdout
    for change in plan.changes:
        print(change.line(), file=stream)
    print(
        f"federation {federation.name} against etcd revision {plan.revision}: "
        f"{plan.count('add')} to add, {plan.count('change')} to change, "
        f"{plan.count('remove')} to remove"
        + (f", {plan.count('keep')} kept" if plan.count("keep") else ""),
        file=stream,
    )


async def apply_file(
    args: argparse.Namespace,
    federation: Federation,
    *,
    before_write: Callable[[], Awaitable[None]] | None = None,
) -> ApplyResult:
    endpoints, layout = connection(args)
    from federation.commands.etcd_bootstrap import etcd_options

    timeout = float(getattr(args, "timeout", 2.0) or 2.0)
    client = EtcdClient(endpoints, timeout=timeout, **etcd_options(args))
    try:
        return await apply_federation(
            client,
            layout,
            federation,
            prune=bool(args.prune),
            dry_run=bool(args.dry_run),
            on_plan=lambda plan: print_plan(plan, federation=federation),
            before_write=before_write,
        )
    finally:
        await client.close()


def run(
    args: argparse.Namespace, *, before_write: Callable[[], Awaitable[None]] | None = None
) -> int:
    try:
        federation = load_manifest(args.file)
    except ManifestError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(apply_file(args, federation, before_write=before_write))
    except ConcurrentChange as exc:
        raise CommandError(str(exc), EXIT_FAILURE) from None
    except EtcdError as exc:
        raise CommandError(str(exc), EXIT_FAILURE) from None
    plan = result.plan
    if plan.empty:
        print("no changes")
    elif args.dry_run:
        print("dry run: nothing written")
    else:
        print(f"applied in one transaction: etcd revision {result.revision}")
    return EXIT_OK
