"""HTTP/2 and gRPC: the downstream server protocol (``server``), the upstream client
(``client``) and its transport behind the try loop's seam (``transport``), the gRPC
vocabulary (``grpc``). The gRPC health probe is ``federation/grpc_health.py``.
See docs/http2.md."""
