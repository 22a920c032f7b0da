"""``fedgate apply FILE [--dry-run [--detailed-exitcode]] [--prune] [--force]``.

Validates the manifest (errors as ``fedgate validate`` prints them, exit 2, nothing
written), reads the config keys with their revision, prints the diff against them
(with values: ``path: old -> new``), and writes it guarded by what it read:

    + cluster gcp-europe-west4
    ~ service checkout: retries, routes
        retries.attempts: 2 -> 3
    - service legacy                                   (only with --prune)
      service legacy: not in manifest (kept; --prune removes)

A change that fits etcd's limits is one transaction; a bigger one is written in
several behind the ``applying`` barrier (see :mod:`federation.store`), so gateways
switch to it at once. The limits are asked of etcd; ``--max-txn-ops`` and
``--max-request-bytes`` are the fallback and the ceiling.

Exit codes: 0 done (or, with ``--dry-run --detailed-exitcode``, no changes), 1 failure
(concurrent change, etcd down, an unfinished apply, another federation's prefix; with
``--detailed-exitcode``: changes pending), 2 usage or invalid manifest. Connection:
``--etcd`` (comma-separated), ``--prefix``, or ``FEDGATE_ETCD`` / ``FEDGATE_ETCD_PREFIX``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from federation.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CommandError
from federation.etcd import EtcdClient, EtcdError, parse_endpoints
from federation.keys import DEFAULT_PREFIX, KeyLayout
from federation.manifest import ManifestError, load_manifest
from federation.model import Federation
from federation.store import (
    ApplyInterrupted,
    ApplyRefused,
    ApplyResult,
    ConcurrentChange,
    Plan,
    apply_federation,
)
from federation.txnsize import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS, Limits

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


def etcd_options(args: argparse.Namespace) -> dict[str, Any]:
    """``EtcdClient`` keyword arguments from the ``--etcd-*`` credential flags."""
    from federation.etcd_conn import credentials

    try:
        options = credentials(
            cacert=getattr(args, "etcd_cacert", None),
            cert=getattr(args, "etcd_cert", None),
            key=getattr(args, "etcd_key", None),
            user=getattr(args, "etcd_user", None),
            password_file=getattr(args, "etcd_password_file", None),
        )
        if "tls" in options:
            options["tls"].credentials()  # a file that cannot be read: one line, exit 2
        return options
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def client_for(args: argparse.Namespace, endpoints: list[str]) -> EtcdClient:
    options = etcd_options(args)
    try:
        timeout = float(getattr(args, "timeout", 2.0) or 2.0)
        return EtcdClient(endpoints, timeout=timeout, **options)
    except ValueError as exc:  # a scheme or port the client cannot use
        raise CommandError(f"--etcd: {exc}", EXIT_USAGE) from None


def limits_from(args: argparse.Namespace) -> Limits:
    ops = getattr(args, "max_txn_ops", None) or DEFAULT_MAX_TXN_OPS
    size = getattr(args, "max_request_bytes", None) or DEFAULT_MAX_REQUEST_BYTES
    if ops < 2 or size < 16 * 1024:
        raise CommandError(
            "--max-txn-ops must be >= 2 and --max-request-bytes >= 16384", EXIT_USAGE
        )
    return Limits(max_ops=ops, max_bytes=size)


def print_plan(
    plan: Plan, *, federation: Federation, out: TextIO | None = None, values: bool = True
) -> None:
    stream = out if out is not None else sys.stdout
    for change in plan.changes:
        print(change.line(), file=stream)
        if values:
            for line in change.detail_lines():
                print(line, file=stream)
    print(
        f"federation {federation.name} against etcd revision {plan.revision}: "
        f"{plan.count('add')} to add, {plan.count('change')} to change, "
        f"{plan.count('remove')} to remove"
        + (f", {plan.count('keep')} kept" if plan.count("keep") else ""),
        file=stream,
    )
    stream.flush()  # shown before anything is written (a closed pipe stops the apply here)


async def apply_file(
    args: argparse.Namespace,
    federation: Federation,
    *,
    before_write: Callable[[], Awaitable[None]] | None = None,
    between: Callable[[int, int], Awaitable[None]] | None = None,
) -> ApplyResult:
    endpoints, layout = connection(args)
    limits = limits_from(args)
    client = client_for(args, endpoints)
    try:
        return await apply_federation(
            client,
            layout,
            federation,
            prune=bool(args.prune),
            dry_run=bool(args.dry_run),
            force=bool(getattr(args, "force", False)),
            limits=limits,
            on_plan=lambda plan: print_plan(plan, federation=federation),
            before_write=before_write,
            between=between,
        )
    finally:
        await client.close()


def run(
    args: argparse.Namespace,
    *,
    before_write: Callable[[], Awaitable[None]] | None = None,
    between: Callable[[int, int], Awaitable[None]] | None = None,
) -> int:
    detailed = bool(getattr(args, "detailed_exitcode", False))
    if detailed and not args.dry_run:
        raise CommandError("--detailed-exitcode needs --dry-run", EXIT_USAGE)
    try:
        federation = load_manifest(args.file)
    except ManifestError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(
            apply_file(args, federation, before_write=before_write, between=between)
        )
    except (ConcurrentChange, ApplyRefused, ApplyInterrupted, EtcdError) as exc:
        raise CommandError(str(exc), EXIT_FAILURE) from None
    except BrokenPipeError:  # the diff could not be shown (`| head`): write nothing
        _stdout_closed()
        raise CommandError("standard output closed: nothing written", EXIT_FAILURE) from None
    try:
        return _report(args, result, detailed=detailed)
    except BrokenPipeError:
        _stdout_closed()
        raise CommandError("standard output closed", EXIT_FAILURE) from None


def _stdout_closed() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _report(args: argparse.Namespace, result: ApplyResult, *, detailed: bool) -> int:
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    plan = result.plan
    if not result.written:
        print("no changes" if plan.empty else "dry run: nothing written")
        return EXIT_FAILURE if detailed and not plan.empty else EXIT_OK
    if result.transactions <= 1:
        print(f"applied in one transaction: etcd revision {result.revision}")
    else:
        limits = f" ({result.limits.describe()})" if result.limits is not None else ""
        print(
            f"applied in {result.transactions} transactions behind the barrier: "
            f"etcd revision {result.revision}, generation {plan.generation}{limits}"
        )
    return EXIT_OK
