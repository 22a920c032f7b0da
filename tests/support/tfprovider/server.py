"""A schema-only Terraform provider: ``python server.py NAME DIR``.

DIR is a provider package of the mirror :func:`tests.support.tfprovider.install_mirror`
lays out: it holds the encoded schema (``schema.pb``) and the server's TLS key and
certificate (``server.key``, ``server.crt``), made there once, so that a provider start
(Terraform starts each provider a few times per command) costs only Python and grpc.

Terraform starts a provider as a go-plugin child process and speaks gRPC to it. This
server does what Terraform needs from a provider to *validate* a configuration and to
run ``terraform test`` with ``mock_provider`` (which mocks every answer except the
schema and the config validations):

- the go-plugin handshake: checks ``TF_PLUGIN_MAGIC_COOKIE``, serves gRPC on a loopback
  port and prints ``1|6|tcp|127.0.0.1:PORT|grpc|CERT`` on stdout. Terraform runs its
  plugins with AutoMTLS: it puts its own client certificate in ``PLUGIN_CLIENT_CERT``
  and expects the server's self-signed certificate (base64 DER, no padding) as CERT
  (see :func:`serve` for why the client certificate is not required).
- tfplugin6 ``GetProviderSchema`` (the schema of :mod:`.kubernetes` or :mod:`.vault`),
  ``ValidateProviderConfig``/``ValidateResourceConfig``/``ValidateDataResourceConfig``
  (no diagnostics: Terraform itself checks names, types and required arguments against
  the schema), ``ConfigureProvider``, ``StopProvider``, ``GetFunctions`` (none);
- go-plugin's ``GRPCController.Shutdown`` (exit), ``GRPCBroker.StartStream`` and
  ``GRPCStdio.StreamStdio`` (held open until shutdown) and the ``plugin`` health check.

Anything else (plan, apply, read) answers UNIMPLEMENTED: this provider never manages a
real object.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
PROTOCOL_VERSION = 6
HEALTH_SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}

SCHEMA_FILE = "schema.pb"
KEY_FILE = "server.key"
CERT_FILE = "server.crt"


def der_base64(cert_pem: bytes) -> str:
    """The certificate as the handshake carries it: base64 of its DER without padding
    (a PEM's body is that base64, padded and wrapped)."""
    lines = cert_pem.decode().strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----")).rstrip("=")


class Plugin:
    """The gRPC services of one provider process."""

    def __init__(self, schema: bytes) -> None:
        self.schema_bytes = schema
        self.done = threading.Event()

    # unary answers ------------------------------------------------------------------

    def provider_schema(self, _request: bytes, _context: Any) -> bytes:
        return self.schema_bytes

    @staticmethod
    def empty(_request: bytes, _context: Any) -> bytes:
        """Validate*/Configure/Stop/GetFunctions: no diagnostics, no error, no functions."""
        return b""

    @staticmethod
    def health(_request: bytes, _context: Any) -> bytes:
        return HEALTH_SERVING

    def shutdown(self, _request: bytes, _context: Any) -> bytes:
        self.done.set()
        return b""

    # streams held open until shutdown -------------------------------------------------

    def hold(self, _request: Any, context: Any) -> Iterator[bytes]:
        while not self.done.wait(0.5) and context.is_active():
            pass
        return iter(())

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        def unary(fn: Callable[[bytes, Any], bytes]) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn)

        provider = {"GetProviderSchema": unary(self.provider_schema)} | {
            name: unary(self.empty)
            for name in (
                "ValidateProviderConfig",
                "ValidateResourceConfig",
                "ValidateDataResourceConfig",
                "ValidateEphemeralResourceConfig",
                "ConfigureProvider",
                "StopProvider",
                "GetFunctions",
            )
        }
        return [
            grpc.method_handlers_generic_handler("tfplugin6.Provider", provider),
            grpc.method_handlers_generic_handler(
                "plugin.GRPCController", {"Shutdown": unary(self.shutdown)}
            ),
            grpc.method_handlers_generic_handler(
                "plugin.GRPCBroker",
                {"StartStream": grpc.stream_stream_rpc_method_handler(self.hold)},
            ),
            grpc.method_handlers_generic_handler(
                "plugin.GRPCStdio",
                {"StreamStdio": grpc.unary_stream_rpc_method_handler(self.hold)},
            ),
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health", {"Check": unary(self.health)}
            ),
        ]


def serve(name: str, package: Path) -> int:
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE:
        print(
            "This binary is a plugin. These are not meant to be executed directly.\n"
            "Please execute the program that consumes these plugins, which will\n"
            "load any plugins automatically",
            file=sys.stderr,
        )
        return 1
    versions = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", str(PROTOCOL_VERSION)).split(",")
    if str(PROTOCOL_VERSION) not in versions:
        print(
            f"terraform-provider-{name}: speaks protocol 6 only, asked for {versions}",
            file=sys.stderr,
        )
        return 1
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "").encode()
    plugin = Plugin((package / SCHEMA_FILE).read_bytes())
    server = grpc.server(ThreadPoolExecutor(max_workers=8), handlers=plugin.handlers())
    if client_cert:
        key_pem, cert_pem = (package / KEY_FILE).read_bytes(), (package / CERT_FILE).read_bytes()
        # The client certificate is asked for, checked when sent, but not required:
        # Terraform 1.11's client sends none to gRPC's BoringSSL (requiring it fails the
        # handshake with PEER_DID_NOT_RETURN_A_CERTIFICATE), most likely because
        # go-plugin makes it on P-521, a curve BoringSSL does not offer to verify. This
        # server listens on loopback and only ever answers schemas.
        credentials = grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=client_cert, require_client_auth=False
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        cert_field = der_base64(cert_pem)
    else:  # a client without AutoMTLS (go-plugin's default): plain gRPC
        port = server.add_insecure_port("127.0.0.1:0")
        cert_field = ""
    server.start()
    sys.stdout.write(f"1|{PROTOCOL_VERSION}|tcp|127.0.0.1:{port}|grpc|{cert_field}\n")
    sys.stdout.flush()
    # until Shutdown, or until Terraform is gone without saying so (killed): a provider
    # never outlives the process that started it
    parent = os.getppid()
    while not plugin.done.wait(1.0) and os.getppid() == parent:
        pass
    server.stop(grace=0.5).wait()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not (Path(argv[1]) / SCHEMA_FILE).is_file():
        print("usage: server.py NAME DIR (a package of install_mirror's mirror)", file=sys.stderr)
        return 2
    return serve(argv[0], Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
