"""TLS and bearer-token authentication: a self-signed certificate made in the test, the token in metadata."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_server_support import WAIT, loopback, make_repository, random_images, self_signed

from miscause.client import InferenceClient
from miscause.server.app import BackgroundServer

TOKEN = "test-token-3f9c"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(folder)
    repo = make_repository(folder / "repo", ("alpha",))
    with BackgroundServer(loopback(repo, tls_cert=cert, tls_key=key, token=TOKEN)) as server:
        yield server, cert.read_bytes()


def test_tls_with_token_serves(secured):
    server, root = secured
    with InferenceClient(f"localhost:{server.grpc_port}", token=TOKEN, root_certificates=root) as client:
        assert client.ready()
        assert client.infer("alpha", random_images(2))["LABEL"].shape == (2,)


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_token_is_unauthenticated(secured, token):
    server, root = secured
    with InferenceClient(f"localhost:{server.grpc_port}", token=token, root_certificates=root) as client:
        for call in (client.ready, lambda: client.infer("alpha", random_images(1))):
            with pytest.raises(grpc.RpcError) as error:
                call()
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer token" in error.value.details()


def test_health_check_needs_no_token(secured):
    server, root = secured
    credentials = grpc.ssl_channel_credentials(root)
    with grpc.secure_channel(f"localhost:{server.grpc_port}", credentials) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=WAIT)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_client_cannot_talk_to_a_tls_server(secured):
    server, _ = secured
    with InferenceClient(f"localhost:{server.grpc_port}", token=TOKEN) as client:
        with pytest.raises(grpc.RpcError) as error:
            client.live(timeout=10)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("token", [None, TOKEN])
def test_malformed_bytes_are_authenticated_before_they_are_parsed(secured, token):
    """Bytes that are no ModelInferRequest: UNAUTHENTICATED without the token (nothing is parsed before
    authentication), INVALID_ARGUMENT with a reason once authenticated."""
    server, root = secured
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.secure_channel(f"localhost:{server.grpc_port}", grpc.ssl_channel_credentials(root)) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as error:
            call(b"\xff\xff\xff", metadata=metadata, timeout=WAIT)
    if token:
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a ModelInferRequest" in error.value.details()
    else:
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
