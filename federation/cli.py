"""The ``fedgate`` command: the composition root.

Each command's work lives in ``federation.commands.<name>`` with a ``run(args) -> int``;
this module only parses the line and runs the command under the contract of
:mod:`federation.clikit`: every expected failure is one line on stderr, the exit codes
are the documented ones (0 ok, 1 failure, 2 usage or invalid input), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata

from federation.clikit import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Parser,
    add_colour_flag,
    add_output_flag,
    add_token_flags,
    guarded,
    install_signal_handlers,
    interrupted_code,
    positive_seconds,
)

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "CommandError", "build_parser", "main"]

DEFAULT_ETCD = "http://127.0.0.1:2379"


def version() -> str:
    try:
        return metadata.version("fedgate")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


_ETCD_CREDENTIALS = (
    ("--etcd-cacert", "FEDGATE_ETCD_CACERT", "CA bundle that signed etcd's certificates"),
    ("--etcd-cert", "FEDGATE_ETCD_CERT", "client certificate for etcd (its CN is the user)"),
    ("--etcd-key", "FEDGATE_ETCD_KEY", "the client certificate's key"),
    ("--etcd-user", "FEDGATE_ETCD_USER", "etcd user (with --etcd-password-file)"),
    ("--etcd-password-file", "FEDGATE_ETCD_PASSWORD_FILE", "file holding the etcd password"),
)


def _etcd_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("etcd")
    g.add_argument(
        "--etcd",
        default=os.environ.get("FEDGATE_ETCD"),
        metavar="URLS",
        help=f"etcd endpoints, comma-separated (FEDGATE_ETCD; default {DEFAULT_ETCD})",
    )
    g.add_argument(
        "--prefix",
        default=os.environ.get("FEDGATE_ETCD_PREFIX"),
        help="etcd key prefix, starting and ending with / (FEDGATE_ETCD_PREFIX; default /fedgate/)",
    )
    for flag, env, what in _ETCD_CREDENTIALS:
        metavar = "USER" if flag == "--etcd-user" else "FILE"
        g.add_argument(flag, default=os.environ.get(env), metavar=metavar, help=f"{what} ({env})")


def _admin_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("admin API")
    g.add_argument(
        "--admin",
        default=os.environ.get("FEDGATE_ADMIN"),
        metavar="URL",
        help="a gateway's admin URL, e.g. http://127.0.0.1:9901 (FEDGATE_ADMIN)",
    )
    add_token_flags(g)


def _connection_flags(p: argparse.ArgumentParser) -> None:
    _etcd_flags(p)
    _admin_flags(p)
    p.add_argument(
        "--vault-addr",
        default=os.environ.get("FEDGATE_VAULT_ADDR"),
        metavar="URL",
        help="Vault address (FEDGATE_VAULT_ADDR)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fedgate",
        description="A multi-cluster federated routing gateway.",
        epilog="exit codes: 0 ok, 1 failure (unhealthy, unmatched, changes with "
        "--detailed-exitcode), 2 usage or invalid input, 130/143 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"fedgate {version()}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )

    p = sub.add_parser("validate", help="check a manifest without touching anything")
    p.add_argument("file", help="the manifest (YAML), e.g. clusters.example.yaml")
    add_output_flag(p)

    p = sub.add_parser(
        "render", help="print the manifest as fedgate reads it (JSON, for Terraform and scripts)"
    )
    p.add_argument("file", help="the manifest (YAML)")
    p.add_argument(
        "--json", action="store_true", help="accepted for clarity: the output is always JSON"
    )

    p = sub.add_parser("apply", help="register a manifest in etcd (guarded, at any size)")
    p.add_argument("file", help="the manifest (YAML)")
    p.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    p.add_argument("--prune", action="store_true", help="remove what the manifest no longer names")
    p.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="with --dry-run: exit 0 when nothing would change, 1 when something would",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="take over an unfinished apply's barrier, or overwrite another federation's prefix",
    )
    p.add_argument(
        "--max-txn-ops",
        type=int,
        default=None,
        help="operations per etcd transaction when etcd cannot be asked (default 128)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="bytes per etcd request, at most (default 1572864, etcd's own default)",
    )
    _etcd_flags(p)

    p = sub.add_parser("serve", help="run one gateway")
    p.add_argument("--config", required=True, help="the gateway settings, e.g. gateway.yaml")
    p.add_argument("--cluster", help="this gateway's cluster (overrides the config)")
    p.add_argument(
        "--check", action="store_true", help="validate the settings, start nothing, and exit"
    )
    _etcd_flags(p)
    p.add_argument(
        "--vault-addr",
        default=os.environ.get("FEDGATE_VAULT_ADDR"),
        metavar="URL",
        help="Vault address (FEDGATE_VAULT_ADDR; overrides vault.addr)",
    )

    p = sub.add_parser("health", help="the global health of the federation (exit 1 if unhealthy)")
    add_output_flag(p)
    add_colour_flag(p)
    p.add_argument(
        "--watch", action="store_true", help="redraw until Ctrl-C or SIGTERM (then exit 0)"
    )
    p.add_argument(
        "--interval",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="with --watch (default 2)",
    )
    p.add_argument(
        "--all", action="store_true", help="list every cluster, not only those not healthy"
    )
    _etcd_flags(p)
    _admin_flags(p)

    p = sub.add_parser("explain", help="why a request would go where it goes (exit 1 if unmatched)")
    p.add_argument("--host", help="the request's Host, e.g. shop.acme.com (unless --dns)")
    p.add_argument("--dns", metavar="HOST", help="explain the DNS answer for HOST instead")
    p.add_argument("--client", metavar="CIDR", help="with --dns: the client's address/network")
    p.add_argument("--path", default="/", help="the request path (default /); query string too")
    p.add_argument("--method", default="GET", help="the request method (default GET)")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a request header the route conditions look at (repeatable); "
        "put the query string in --path",
    )
    p.add_argument(
        "--from", dest="from_cluster", metavar="CLUSTER", help="the cluster the request enters"
    )
    add_output_flag(p)
    add_colour_flag(p)
    _admin_flags(p)

    p = sub.add_parser("etcd-bootstrap", help="create etcd's roles of least privilege")
    p.add_argument("--manifest", help="take the cluster names from this manifest")
    p.add_argument("--cluster", action="append", help="a cluster name (repeatable)")
    p.add_argument("--passwords-dir", help="password users: DIR/<user>.password (0600)")
    p.add_argument("--prune", action="store_true", help="delete roles of clusters not named")
    _etcd_flags(p)

    p = sub.add_parser("demo", help="a whole federation on this machine, with a failover drill")
    p.add_argument(
        "--duration",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="how long to run, at least 15 (default: one 30 s drill, then exit; "
        "with --keep-running, until Ctrl-C)",
    )
    add_colour_flag(p)
    p.add_argument(
        "--rate",
        type=positive_seconds,
        default=200.0,
        help="demo requests per second (default 200)",
    )
    p.add_argument("--report", metavar="FILE", help="also write the report as JSON to this file")
    p.add_argument(
        "--keep-running", action="store_true", help="without --duration: stay up after the drill"
    )
    return parser


def check_etcd_flag(value: str | None) -> str | None:
    """``--etcd``: every endpoint checked the way the etcd client will read it (exit 2)."""
    if value is None:
        return None
    from federation.etcd import EtcdClient, parse_endpoints

    try:
        EtcdClient(parse_endpoints(value))
    except ValueError as exc:
        raise CommandError(f"--etcd: {exc}", EXIT_USAGE) from None
    return value


# commands that hold nothing to clean up: a signal ends them at once (see clikit)
_IMMEDIATE = frozenset({"validate", "render", "apply", "health", "explain", "etcd-bootstrap"})


def main(argv: Sequence[str] | None = None) -> int:
    restore = install_signal_handlers()
    try:
        try:
            args = build_parser().parse_args(argv)
        except KeyboardInterrupt as exc:
            return interrupted_code(exc)
        if args.command in _IMMEDIATE:
            restore()
            # `health --watch` is stopped, not failed: 0 on Ctrl-C or SIGTERM
            restore = install_signal_handlers(
                immediate=True, code=EXIT_OK if getattr(args, "watch", False) else None
            )
        return _run(args)
    finally:
        restore()


def _run(args: argparse.Namespace) -> int:
    def body() -> int:
        if hasattr(args, "etcd"):
            check_etcd_flag(args.etcd)
        module = importlib.import_module(f"federation.commands.{args.command.replace('-', '_')}")
        code: int = module.run(args)
        return code

    try:
        return guarded(args.command, body)
    except KeyboardInterrupt as exc:  # between the command's end and here
        return interrupted_code(exc)
    except Exception as exc:  # a bug: still one line (FEDGATE_DEBUG=1 shows the traceback)
        if os.environ.get("FEDGATE_DEBUG"):
            raise
        detail = " ".join(str(exc).split())[:300]
        print(
            f"fedgate {args.command}: internal error: {type(exc).__name__}: {detail} "
            "(FEDGATE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def entry() -> None:
    """The ``fedgate`` executable: :func:`main`, then exit with its code. Once the command
    is done, a late Ctrl-C or SIGTERM no longer interrupts the interpreter's shutdown."""
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover - `python -m federation.cli`
    entry()
