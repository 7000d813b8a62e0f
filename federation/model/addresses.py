"""Which addresses a Kubernetes EndpointSlice cannot hold.

kube-apiserver refuses unspecified, loopback, link-local and link-local
multicast addresses in an EndpointSlice (its ValidateNonSpecialIP).  The
emulator refuses them with the apiserver's words; the cluster agent leaves
such endpoints out of the slices it writes and says why."""

from __future__ import annotations

import functools
import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=65536)
def refused_by_kubernetes(address: str, *, loopback_allowed: bool = False) -> str | None:
    """Why kube-apiserver refuses ``address`` in an EndpointSlice, or None.
    ``loopback_allowed`` is the emulator's documented relaxation for
    simulated clusters, whose pods run on 127/8."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "must be a valid IP address"
    return _special(ip, loopback_allowed)


def _special(ip: IPAddress, loopback_allowed: bool) -> str | None:
    if ip.is_unspecified:
        return f"may not be unspecified ({ip})"
    if ip.is_loopback and not loopback_allowed:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if ip.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    packed = ip.packed
    if (ip.version == 4 and packed[:3] == b"\xe0\x00\x00") or (
        ip.version == 6 and packed[0] == 0xFF and packed[1] & 0x0F == 0x02
    ):
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return None


__all__ = ["refused_by_kubernetes"]
