"""What every ``fedgate`` command shares: exit codes, errors, output, colour, tokens, signals.

The contract (``docs/gateway.md`` and ``README.md`` state it for users):

* exit ``0`` ok; ``1`` a failure, an unhealthy federation, an unmatched request (or, with
  ``--detailed-exitcode``, changes); ``2`` usage or invalid input (a bad flag, manifest or
  gateway.yaml); ``130`` interrupted by Ctrl-C, ``143`` by SIGTERM (``--watch`` stops
  with ``0`` on either); ``141`` when the reader of stdout went away (``| head``);
* an expected failure is one line on stderr, ``fedgate COMMAND: message``, never a
  traceback;
* ``--output json`` on every read command, keys in camelCase like the manifest;
* colour only on a terminal, never with ``NO_COLOR`` set (any non-empty value) or
  ``--no-color``;
* the admin token from ``--token-file``, ``FEDGATE_TOKEN`` (or ``FEDGATE_ADMIN_TOKEN``),
  or ``--token`` (visible in ``ps``: for development).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SIGPIPE = 141
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

TOKEN_ENV = ("FEDGATE_TOKEN", "FEDGATE_ADMIN_TOKEN")


class CommandError(Exception):
    """An expected failure: the message is one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(" ".join(str(message).split()) or "failed")
        self.code = code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, like Ctrl-C (so ``--watch`` stops cleanly)."""


# ------------------------------------------------------------------------- signals


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def install_signal_handlers(
    *, immediate: bool = False, code: int | None = None
) -> Callable[[], None]:
    """Handle SIGTERM like Ctrl-C; return a function that puts the previous handlers back.

    Without ``immediate``, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) for
    the commands that clean up on the way out (``demo`` stops its processes). With it, a
    command that holds nothing to clean up ends at once: SIGINT and SIGTERM exit with
    ``code`` (or 130 / 143) from the handler itself, so that an interrupt landing inside
    an import or a finaliser cannot print "Exception ignored" lines. SIGINT keeps the
    disposition the command inherited: a background job whose shell ignores SIGINT keeps
    ignoring it, as Unix tools do."""
    previous: dict[int, Any] = {}

    def now(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        default = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
        os._exit(default if code is None else code)

    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, now if immediate else _on_sigterm)
        if immediate and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, now)
    except ValueError:  # not the main thread (the CLI called from a test's worker)
        pass

    def restore() -> None:
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)

    return restore


def interrupted_code(exc: KeyboardInterrupt) -> int:
    return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT


def silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the interpreter's final
    flush does not print a second error (the recipe of the Python ``signal`` docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


# -------------------------------------------------------------------------- output


def add_output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text for people (default) or json for programs (camelCase keys)",
    )
    p.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        help="same as --output json",
    )


def add_colour_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-color",
        action="store_true",
        help="no colour even on a terminal (also: NO_COLOR set to any value)",
    )


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "text") == "json"


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def use_colour(stream: TextIO, *, no_color: bool = False) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` (https://no-color.org)."""
    if no_color or os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    return isatty(stream)


_SNAKE = re.compile(r"_([a-z0-9])")

# mappings whose keys are data (label names, cluster names), not field names
_DATA_KEYS = frozenset({"labels", "endpoints", "weights"})


def camel(name: str) -> str:
    """``path_prefix`` -> ``pathPrefix``; a name without ``_`` is kept as it is."""
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


def camelize(value: Any, *, _data: bool = False) -> Any:
    """Every field name of a JSON document in camelCase, as the manifest writes them.

    The keys of ``labels`` (and other mappings keyed by data) are kept as written."""
    if isinstance(value, Mapping):
        return {
            (str(k) if _data else camel(str(k))): camelize(v, _data=(not _data and k in _DATA_KEYS))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [camelize(v) for v in value]
    return value


def write_json(stream: TextIO, document: Any, *, compact: bool = False) -> None:
    text = json.dumps(camelize(document), separators=(",", ":") if compact else None,
                      indent=None if compact else 2)  # fmt: skip
    stream.write(text + "\n")
    stream.flush()


# --------------------------------------------------------------------------- token


def add_token_flags(g: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    g.add_argument(
        "--token-file",
        help="read the admin bearer token from this file (FEDGATE_TOKEN_FILE)",
    )
    g.add_argument(
        "--token",
        help="admin bearer token; visible in ps, prefer --token-file or FEDGATE_TOKEN",
    )


def resolve_token(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str | None:
    """``--token-file``, then ``--token``, then ``FEDGATE_TOKEN_FILE``, ``FEDGATE_TOKEN``,
    ``FEDGATE_ADMIN_TOKEN``; ``None`` when none is given."""
    env = os.environ if environ is None else environ
    path = getattr(args, "token_file", None)
    if path:
        return read_token_file(path, "--token-file")
    if getattr(args, "token", None):
        return str(args.token).strip()
    if env.get("FEDGATE_TOKEN_FILE"):
        return read_token_file(env["FEDGATE_TOKEN_FILE"], "FEDGATE_TOKEN_FILE")
    for var in TOKEN_ENV:
        if env.get(var, "").strip():
            return env[var].strip()
    return None


def read_token_file(path: str, what: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"{what} {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError(f"{what} {path}: not a text file", EXIT_USAGE) from None
    if not token or "\n" in token:
        raise CommandError(f"{what} {path}: expected one line holding the token", EXIT_USAGE)
    return token


# -------------------------------------------------------------------------- parser


def positive_seconds(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (a usage error, exit 2, otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line on stderr and exit 2."""

    def error(self, message: str) -> Any:  # argparse's signature returns NoReturn
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def guarded(command: str, body: Callable[[], int]) -> int:
    """Run a command's body under the contract: one line, the documented exit codes."""
    try:
        return body()
    except CommandError as exc:
        print(f"fedgate {command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt as exc:
        return interrupted_code(exc)
    except BrokenPipeError:
        silence_stdout()
        return EXIT_SIGPIPE
