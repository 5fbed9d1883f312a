"""Which engine addresses are reachable from the internet: the gateway warns at start-up about
engines on public addresses (they should sit on loopback or a private network)."""

from __future__ import annotations

import ipaddress

_PRIVATE_DNS_SUFFIXES = (".svc", ".cluster.local", ".local", ".internal", ".lan", ".home.arpa")


def public_host(host: str) -> bool:
    """True for an address reachable from the internet (not loopback, private or link-local).
    Names count as public (they may resolve anywhere) except ``localhost``, single-label names
    (``vllm-0``: resolved by a search domain) and the private DNS suffixes of clusters and
    LANs (``.svc``, ``.cluster.local``, ``.local``, ``.internal``, ``.lan``, ``.home.arpa``:
    Kubernetes Services and pods, mDNS, cloud-internal names)."""
    h = host.strip("[]").rstrip(".").lower()
    if h in ("localhost", "") or h.endswith(".localhost"):
        return False
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return not ("." not in h or h.endswith(_PRIVATE_DNS_SUFFIXES))
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified)
