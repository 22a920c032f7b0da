"""The ``fedgate`` command: the composition root.

Each command's work lives in ``federation.commands.<name>`` with a ``run(args) -> int``;
this module only parses the line and turns every expected failure into one line on
stderr with a non-zero exit (never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """An expected failure: the message is one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


_ETCD_CREDENTIALS = (
    ("--etcd-cacert", "FEDGATE_ETCD_CACERT", "CA bundle that signed etcd's certificates"),
    ("--etcd-cert", "FEDGATE_ETCD_CERT", "client certificate for etcd (its CN is the user)"),
    ("--etcd-key", "FEDGATE_ETCD_KEY", "the client certificate's key"),
    ("--etcd-user", "FEDGATE_ETCD_USER", "etcd user (with --etcd-password-file)"),
    ("--etcd-password-file", "FEDGATE_ETCD_PASSWORD_FILE", "file holding the etcd password"),
)


def _connection_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--etcd",
        default=os.environ.get("FEDGATE_ETCD"),
        help="etcd endpoints, comma-separated (FEDGATE_ETCD; default http://127.0.0.1:2379)",
    )
    g.add_argument(
        "--prefix",
        default=os.environ.get("FEDGATE_ETCD_PREFIX"),
        help="etcd key prefix (FEDGATE_ETCD_PREFIX; default /fedgate/)",
    )
    for flag, env, what in _ETCD_CREDENTIALS:
        g.add_argument(flag, default=os.environ.get(env), help=f"{what} ({env})")
    g.add_argument(
        "--vault-addr",
        default=os.environ.get("FEDGATE_VAULT_ADDR"),
        help="Vault address (FEDGATE_VAULT_ADDR)",
    )
    g.add_argument(
        "--admin",
        default=os.environ.get("FEDGATE_ADMIN"),
        help="a gateway's admin URL, e.g. http://127.0.0.1:9901 (FEDGATE_ADMIN)",
    )
    g.add_argument(
        "--token",
        default=os.environ.get("FEDGATE_ADMIN_TOKEN"),
        help="admin bearer token (FEDGATE_ADMIN_TOKEN)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedgate",
        description="A multi-cluster federated routing gateway.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check a manifest without touching anything")
    p.add_argument("file")

    p = sub.add_parser("apply", help="register a manifest in etcd in one transaction")
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    p.add_argument("--prune", action="store_true", help="remove what the manifest no longer names")
    _connection_flags(p)

    p = sub.add_parser("serve", help="run one gateway")
    p.add_argument("--config", required=True, help="gateway.yaml")
    p.add_argument("--cluster", help="this gateway's cluster (overrides the config)")
    p.add_argument("--check", action="store_true", help="validate the settings and exit")
    _connection_flags(p)

    p = sub.add_parser("health", help="the global health of the federation")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true")
    p.add_argument("--interval", type=float, default=2.0, help="with --watch: seconds")
    _connection_flags(p)

    p = sub.add_parser("explain", help="why a request would go where it goes")
    p.add_argument("--host", required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--method", default="GET")
    p.add_argument("--from", dest="from_cluster", help="the cluster the request enters")
    p.add_argument("--json", action="store_true")
    _connection_flags(p)

    p = sub.add_parser("etcd-bootstrap", help="create etcd's roles of least privilege")
    p.add_argument("--manifest", help="take the cluster names from this manifest")
    p.add_argument("--cluster", action="append", help="a cluster name (repeatable)")
    p.add_argument("--passwords-dir", help="password users: DIR/<user>.password (0600)")
    p.add_argument("--prune", action="store_true", help="delete roles of clusters not named")
    _connection_flags(p)

    p = sub.add_parser("demo", help="a whole federation on this machine, with a failover drill")
    p.add_argument("--duration", type=float, default=None, help="seconds; default: until Ctrl-C")
    p.add_argument("--no-color", action="store_true")
    p.add_argument("--rate", type=float, default=200.0, help="demo requests per second")
    p.add_argument("--report", help="also write the report as JSON to this file")
    p.add_argument("--keep-running", action="store_true", help="stay up after the drill")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(f"federation.commands.{args.command.replace('-', '_')}")
    try:
        code: int = module.run(args)
    except CommandError as exc:
        print(f"fedgate {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    # `python -m federation.cli`: run the imported module's main, so that the commands'
    # `from federation.cli import CommandError` is the class caught above
    from federation.cli import main as _main

    sys.exit(_main())
