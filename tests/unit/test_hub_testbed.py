"""The hub test bed's ports: below the kernel's ephemeral range, free, never twice."""

from __future__ import annotations

import socket
from pathlib import Path

from meshdesk.hub.testbed import HOST, free_port


def test_free_ports_are_below_the_ephemeral_range_and_never_given_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(400)]  # far more than a bed of three servers
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
    with socket.socket() as s:  # free when given
        s.bind((HOST, ports[-1]))
