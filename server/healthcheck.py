"""Exit 0 when the server on this host answers the standard gRPC health check with SERVING, else 1.

For container health checks (the Docker image's HEALTHCHECK), where no gRPC probe binary is at hand.

example:
  python -m miscause.server.healthcheck --port 8001
  python -m miscause.server.healthcheck --port 8001 --ca /certs/ca.crt --server-name inference.example.com
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def healthy(target: str, ca: Path | None = None, server_name: str | None = None, timeout: float = 5.0) -> bool:
    """Whether `target` reports SERVING for the whole server."""
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if ca is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca.read_bytes()), options=options)
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--ca", type=Path, help="PEM root certificate when the server uses TLS")
    parser.add_argument("--server-name", help="name the certificate was issued for, when not the host")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    return 0 if healthy(f"{args.host}:{args.port}", args.ca, args.server_name, args.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
