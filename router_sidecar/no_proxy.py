"""The `NO_PROXY` list: which provider hosts go direct instead of through the egress proxy.

Entries are separated by commas; blanks around them are ignored. Each entry is one of:

- `*`: every host goes direct;
- a domain name: `example.com`, `.example.com` and `*.example.com` all match example.com and any
  name under it (case-insensitively);
- an IP address (`10.1.2.3`, `fd00::1`, `[fd00::1]`): a provider URL that names that address;
- a CIDR range (`10.0.0.0/8`, `fd00::/8`): a provider URL that names an address inside it.

An entry may end in `:port` (`[fd00::1]:8443` for IPv6); it then matches that port only. Names
are never resolved to match ranges, as in curl and Go: a Kubernetes Service reached by name goes
direct when its domain (`.svc`, `.cluster.local`) is listed, not its Service CIDR. An entry that
cannot be read is left out with one WARNING that names it (the list holds no secret).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class NoProxy:
    everything: bool = False
    names: tuple[tuple[str, int | None], ...] = ()
    networks: tuple[tuple[Network, int | None], ...] = ()

    @classmethod
    def parse(cls, value: str | None) -> NoProxy:
        everything = False
        names: list[tuple[str, int | None]] = []
        networks: list[tuple[Network, int | None]] = []
        for raw in (value or "").split(","):
            entry = raw.strip()
            if not entry:
                continue
            if entry == "*":
                everything = True
                continue
            split = _split_port(entry)
            if split is None:
                log.warning("Ignoring the NO_PROXY entry %r: its port is not a number", entry)
                continue
            host, port = split
            try:
                networks.append((ipaddress.ip_network(host, strict=False), port))
                continue
            except ValueError:
                pass
            name = host.lower().lstrip("*").strip(".")
            if not name or "/" in name or ":" in name:
                log.warning("Ignoring the NO_PROXY entry %r: not a name, address or range", entry)
                continue
            names.append((name, port))
        return cls(everything, tuple(names), tuple(networks))

    def bypasses(self, host: str, port: int | None = None) -> bool:
        """True when a provider at `host` (a name or an address) and `port` goes direct."""
        if self.everything:
            return True
        host = host.lower().strip("[]").rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            return any(
                address.version == net.version
                and address in net
                and (want is None or want == port)
                for net, want in self.networks
            )
        return any(
            (host == name or host.endswith("." + name)) and (want is None or want == port)
            for name, want in self.names
        )


def _split_port(entry: str) -> tuple[str, int | None] | None:
    """`entry` as (host, port or None); None when it has a port that is not a number."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if not rest:
            return host, None
        port = rest.removeprefix(":")
        return (host, int(port)) if rest.startswith(":") and port.isdigit() else None
    if entry.count(":") != 1:
        return entry, None  # a name, an IPv4 address or range, or a bare IPv6 address or range
    host, _, port = entry.partition(":")
    return (host, int(port)) if port.isdigit() else None
