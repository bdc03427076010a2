"""The synthesised services, the ports they are standard on, and how a packet's service is decided."""

from __future__ import annotations

from netdiff_lib.payloads import dhcp, dns, ntp, ports, text, tls
from netdiff_lib.payloads.base import Service

SERVICES: dict[str, Service] = {s.name: s for s in (dhcp.SERVICE, dns.DNS, dns.MDNS, ntp.SERVICE, text.HTTP,
                                                    text.SSDP, tls.SERVICE)}
#: (transport, server port) -> service, as IANA assigns them (and tshark dissects them).
STANDARD: dict[tuple[str, int], str] = {
    ("udp", 67): "dhcp", ("udp", 68): "dhcp", ("udp", 53): "dns", ("udp", 5353): "mdns", ("udp", 123): "ntp",
    ("udp", 1900): "ssdp", ("tcp", 80): "http", ("tcp", 8080): "http", ("tcp", 443): "tls", ("tcp", 8443): "tls",
}
#: Services recognised by their payload alone on other ports (strong signatures only).
BY_SIGNATURE: dict[str, tuple[str, ...]] = {"tcp": ("tls", "http"), "udp": ("ssdp", "dhcp", "dns")}
L4_NAMES = ("tcp", "udp")


def key(l4: str, port: int) -> str:
    return f"{l4}/{int(port)}"


def decide(l4: str, server_port: int, learned: dict[str, str]) -> str | None:
    """The service of a flow: the standard one of its server port, else one learned for the port in training
    (only where no dissector claims the port, so that tshark reads it as data)."""
    std = STANDARD.get((l4, int(server_port)))
    if std is not None:
        return std
    name = learned.get(key(l4, server_port))
    if name in SERVICES and SERVICES[name].l4 == l4 and not ports.listed(l4, server_port):
        return name
    return None
