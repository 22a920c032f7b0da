"""HTTP/2 and gRPC: the downstream server protocol (``server``), the upstream client
(``client``), the gRPC vocabulary (``grpc``), the forwarding step for ``protocol: h2``
and ``protocol: grpc`` services (``forward``) and the gRPC health probe (``probe``).
See docs/http2.md."""
