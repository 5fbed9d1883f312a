"""Which engine addresses the gateway's security warning treats as reachable from the internet."""

from __future__ import annotations

import pytest

from cato.gateway.addresses import public_host


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "[::1]", "10.1.2.3", "192.168.0.7", "169.254.1.1", "0.0.0.0",
    "vllm-0", "vllm-0.vllm.cato.svc.cluster.local", "vllm.cato.svc", "gpu-box.local",
    "ip-10-0-0-5.ec2.internal", "LOCALHOST", "engine.localhost", "vllm-0.vllm.cato.svc.cluster.local.",
])
def test_loopback_private_and_cluster_names_are_not_public(host: str) -> None:
    assert not public_host(host)


@pytest.mark.parametrize("host", [
    "8.8.8.8", "[2001:4860:4860::8888]", "api.example.com", "vllm.example.org",
    "svc.example.com", "local.example.com",
])
def test_public_addresses_and_names_are_public(host: str) -> None:
    assert public_host(host)
