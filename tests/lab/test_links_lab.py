"""Links between real ``meshdesk run`` processes on a namespaced LAN.

Every node is a separate process in its own lab host, provisioned like a real kit
(the deployment builder runs ``deployment create`` / ``issue`` / ``init`` in the root
namespace: they need no network), ``meshdesk run`` runs inside the host. The tests
read each node's view through its control socket (``HOME/control.sock``, a file, so
it is reachable from the root namespace) and its log (stderr, one line per event).

Deadlines are the product's own acceptance limits (a lost peer is marked down within
6 s, a restored one is linked again within 2 s); everything else waits for behaviour
with ``wait_until`` and reports (never asserts) how long it took.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _nodes import (
    LabFactory,
    RunningNode,
    all_linked,
    deployment,
    hq_spec,
    member,
    meshdesk_cli,
    not_linked,
    start_node,
)

from meshdesk.config import load_config
from meshdesk.deploy import Deployment
from meshdesk.lab import Lab

if TYPE_CHECKING:
    from waits import WaitUntil

pytestmark = pytest.mark.lab

MESHDESK = str(Path(sys.executable).parent / "meshdesk")
PORT = 7420
#: The product's limits (acceptance criteria), not guesses about this machine.
MARKED_DOWN_WITHIN = 6.0  # dead_after = 5 s, plus one heartbeat tick
LINKED_AGAIN_WITHIN = 2.0
#: Generous bounds for things without a stated limit (start-up, mDNS, dialling).
SETTLE = 10.0

# Hostile clients against HOST:PORT, all at once, bounded in count and time; prints
# one JSON object saying how the server treated each kind.
HOSTILE = r"""
import json, os, socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
result = {}

def hung_up(sock, within):
    # True once the server closes (EOF or reset), False if it is still open.
    sock.settimeout(0.2)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False

def garbage():
    with socket.create_connection((host, port), timeout=3) as s:
        try:
            s.sendall(os.urandom(64 * 1024))
            result["garbage_sent"] = True
        except OSError:  # the server may hang up before reading it all
            result["garbage_sent"] = False
        result["garbage_hung_up"] = hung_up(s, 8)

def silent():
    with socket.create_connection((host, port), timeout=3) as s:
        result["silent_hung_up"] = hung_up(s, 9)

def client_hello_junk():
    # A TLS handshake record holding a ClientHello with random insides.
    body = b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) + os.urandom(160)
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hello).to_bytes(2, "big") + hello

def junk_flood(connections=20, records=50):
    hung = 0
    for _ in range(connections):
        with socket.create_connection((host, port), timeout=3) as s:
            try:
                for _ in range(records):
                    s.sendall(client_hello_junk())
            except OSError:
                pass
            hung += hung_up(s, 3)
    result["junk_connections"] = connections
    result["junk_hung_up"] = hung

threads = [threading.Thread(target=f) for f in (garbage, silent, junk_flood)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=15)
print(json.dumps(result), flush=True)
"""


# -- deployment (root namespace, no network) -------------------------------------------


@pytest.fixture
def city(tmp_path: Path) -> Deployment:
    """Our deployment: HQ ``hq`` plus centres ``c1`` and ``c2``."""
    return deployment(tmp_path / "city", "City", hq_spec(), member("c1"), member("c2"))


# -- running nodes ---------------------------------------------------------------------


def stays(
    predicate: Callable[[], bool], seconds: float, *, message: str, wait_until: WaitUntil
) -> None:
    """Assert ``predicate`` holds at every poll for ``seconds`` (a bounded negative check:
    time must pass, and ``wait_until`` polls it)."""
    __tracebackhide__ = True
    end = time.monotonic() + seconds

    def held_to_the_end() -> bool:
        assert predicate(), message
        return time.monotonic() >= end

    wait_until(held_to_the_end, timeout=seconds + SETTLE, interval=0.1, message=message)


def linked_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if f"linked with {name} (" in line]


def down_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if f"link with {name} (" in line and "down" in line]


def start_trio(lab: Lab, city: Deployment, wait_until: WaitUntil) -> list[RunningNode]:
    """HQ, c1 and c2 on h1..h3, found by mDNS; returns once all are linked."""
    nodes = [
        start_node(lab, f"h{i}", name, city.homes[name], wait_until=wait_until)
        for i, name in enumerate(("hq", "c1", "c2"), start=1)
    ]
    wait_until(all_linked(nodes), timeout=SETTLE, message="hq, c1, c2 all linked")
    return nodes


@pytest.fixture
def trio(
    lab_factory: LabFactory, city: Deployment, wait_until: WaitUntil
) -> tuple[Lab, list[RunningNode]]:
    """A 3-host lab running :func:`start_trio`."""
    lab = lab_factory(3)
    return lab, start_trio(lab, city, wait_until)


# -- tests -----------------------------------------------------------------------------


def test_three_nodes_find_each_other_by_mdns_and_link(
    trio: tuple[Lab, list[RunningNode]],
) -> None:
    _, nodes = trio
    for node in nodes:
        # The CLI itself, end to end: peers --json from the root namespace.
        peers = json.loads(meshdesk_cli("peers", "--home", node.home.path, "--json"))
        others = {p["name"]: p for p in peers}
        assert set(others) == {n.name for n in nodes} - {node.name}
        for other in nodes:
            if other is node:
                continue
            peer = others[other.name]
            assert peer["state"] == "linked"
            assert "mdns" in peer["found_by"], peer
            assert f"{other.host.addr}:{PORT}" in peer["addresses"], peer
            assert peer["rtt_ms"] is not None
        status = json.loads(meshdesk_cli("status", "--home", node.home.path, "--json"))
        assert status["running"] is True
        assert status["live"]["peers_linked"] == 2, status


def test_a_node_of_another_deployment_is_refused_by_all(
    lab_factory: LabFactory, city: Deployment, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(4)
    ours = start_trio(lab, city, wait_until)
    # The foreign HQ is on our LAN (h4, same switch): our nodes see it by mDNS.
    other = deployment(tmp_path / "other", "Elsewhere", hq_spec("rogue-hq"))
    rogue = start_node(lab, "h4", "rogue-hq", other.homes["rogue-hq"], wait_until=wait_until)
    rogue_addr = re.escape(rogue.host.addr)

    def refused_everywhere() -> bool:
        for node in ours:
            peer = node.peer("rogue-hq")
            if peer is None or peer["state"] != "refused":
                return False
            log = node.log_text()
            # We dial it (its certificate fails our check) and it dials us (ours fails
            # its check, so OpenSSL ends the handshake and no fingerprint is known).
            if not re.search(rf"refused peer at {rogue_addr}:{PORT}", log):
                return False
            if not re.search(rf"refused \S+ from {rogue_addr}:\d+", log):
                return False
        return True

    wait_until(refused_everywhere, timeout=SETTLE, message="every node refuses rogue-hq")
    # Keep watching a while: the rogue node is still on the LAN and announcing itself.
    stays(
        all_linked(ours),
        2.0,
        message="our nodes stay linked among themselves",
        wait_until=wait_until,
    )
    for node in ours:
        text = node.log_text()
        assert linked_lines(text, "rogue-hq") == [], f"{node.name} linked the rogue node"
        for friend in ours:
            assert down_lines(text, friend.name) == [], f"{node.name} lost {friend.name}"
        peer = node.peer("rogue-hq")
        assert peer is not None
        assert peer["state"] == "refused"
        assert "not of this deployment" in (peer["reason"] or ""), peer
    assert all(p["state"] != "linked" for p in rogue.peers())


def test_a_revoked_node_is_cut_off_and_stays_out(
    trio: tuple[Lab, list[RunningNode]], wait_until: WaitUntil
) -> None:
    lab, (hq, c1, c2) = trio
    out = meshdesk_cli(
        "deployment", "revoke", "--home", hq.home.path, "--reason", "stolen", "c2", "--json"
    )
    assert json.loads(out)["applied_by_running_node"] is True, out
    # The running HQ applies the new list at once and gossips it to c1.
    wait_until(not_linked([hq, c1], "c2"), timeout=5, message="hq and c1 show c2 not linked")
    for node in (hq, c1):
        node.mark_log()
    stays(
        not_linked([hq, c1], "c2"),
        3.0,
        message="c2 came back after its revocation",
        wait_until=wait_until,
    )
    for node in (hq, c1):
        assert linked_lines(node.log_since_mark(), "c2") == [], f"{node.name} relinked c2"
        peer = node.peer("c2")
        assert peer is not None
        assert "revoked" in (peer["reason"] or ""), (node.name, peer)
    assert hq.states()["c1"] == "linked"
    assert c1.states()["hq"] == "linked"
    # The revoked node still runs (and knocks), but has lost every link.
    assert c2.proc.poll() is None
    assert all(state != "linked" for state in c2.states().values()), c2.states()

    # c1 stored the list: restarted, it refuses c2 on its own, from the first moment.
    c1.proc.send_signal(signal.SIGTERM)
    assert c1.proc.wait(timeout=10) == 0
    status = json.loads(meshdesk_cli("status", "--home", c1.home.path, "--json"))
    assert status["store"]["revocation_list"] == 1, status
    c1 = start_node(lab, "h2", "c1", c1.home, wait_until=wait_until)

    def c1_back_and_refusing_c2() -> bool:
        states = c1.states()
        return states.get("hq") == "linked" and states.get("c2") == "refused"

    wait_until(c1_back_and_refusing_c2, timeout=SETTLE, message="restarted c1 refuses c2")
    assert linked_lines(c1.log_text(), "c2") == []


def test_a_cut_cable_is_noticed_and_a_restored_one_relinks(
    trio: tuple[Lab, list[RunningNode]], wait_until: WaitUntil
) -> None:
    lab, (hq, c1, c2) = trio
    # The cut comes right after the links' first frames: the worst case for the limit.
    cut_at = time.monotonic()
    lab.cut(c2.host.name)
    wait_until(
        not_linked([hq, c1], "c2"),
        timeout=MARKED_DOWN_WITHIN,
        message=f"hq and c1 mark c2 down within {MARKED_DOWN_WITHIN:g} s of the cut",
    )
    detected = time.monotonic() - cut_at
    assert hq.states()["c1"] == "linked"

    restored_at = time.monotonic()
    lab.restore(c2.host.name)
    wait_until(
        all_linked([hq, c1, c2]),
        timeout=LINKED_AGAIN_WITHIN,
        message=f"c2 linked again within {LINKED_AGAIN_WITHIN:g} s of the restore",
    )
    relinked = time.monotonic() - restored_at
    print(f"cut noticed after {detected:.2f} s; relinked {relinked:.2f} s after restore")


def test_a_node_that_comes_into_reach_late_is_found_by_mdns(
    lab_factory: LabFactory, city: Deployment, wait_until: WaitUntil
) -> None:
    # A courier laptop switched on away from the network and carried in later: by
    # then zeroconf's own queries have backed off (1, 2, 4 … 32 s apart and growing),
    # so only the node's periodic refresh (discovery_refresh) finds it soon.
    for name in ("hq", "c1"):
        home = city.homes[name]
        config = load_config(home.config_path)
        assert config.timings.discovery_refresh == 20.0
        timings = dataclasses.replace(config.timings, discovery_refresh=2.0)
        home.write_config(dataclasses.replace(config, timings=timings))
    lab = lab_factory(2)
    lab.cut("h2")
    hq = start_node(lab, "h1", "hq", city.homes["hq"], wait_until=wait_until)
    courier = start_node(lab, "h2", "c1", city.homes["c1"], wait_until=wait_until)
    time.sleep(35)  # past zeroconf's 31 s query: its next one is about 30 s away
    assert hq.peer("c1") is None, "hq cannot have met the courier while it was away"
    restored_at = time.monotonic()
    lab.restore("h2")
    wait_until(
        all_linked([hq, courier]),
        timeout=8.0,
        message="the courier is found and linked within 8 s of arriving (refresh every 2 s)",
    )
    print(f"courier linked {time.monotonic() - restored_at:.2f} s after it arrived")
    # Whichever side's refresh saw the other first dialled; HQ's own refresh sees the
    # courier too within a refresh period or two.
    wait_until(
        lambda: "mdns" in hq.peer("c1")["found_by"],
        timeout=6.0,
        message="hq's mDNS refresh sees the courier",
    )


def test_a_node_without_multicast_links_everyone_through_one_static_peer(
    lab_factory: LabFactory, city: Deployment, wait_until: WaitUntil
) -> None:
    lab = lab_factory(3)
    lab.block_multicast("h3")
    hq = start_node(lab, "h1", "hq", city.homes["hq"], wait_until=wait_until)
    c1 = start_node(lab, "h2", "c1", city.homes["c1"], wait_until=wait_until)
    wait_until(all_linked([hq, c1]), timeout=SETTLE, message="hq and c1 linked by mDNS")

    started = time.monotonic()
    c2 = start_node(
        lab, "h3", "c2", city.homes["c2"], "--peer", f"{hq.host.addr}:{PORT}", wait_until=wait_until
    )
    wait_until(all_linked([hq, c1, c2]), timeout=10, message="c2 linked with hq and c1")
    took = time.monotonic() - started
    print(f"c2 linked with both {took:.2f} s after start (static + exchange)")

    peers = {p["name"]: p for p in c2.peers()}
    assert "static" in peers["hq"]["found_by"], peers["hq"]
    # c2 cannot have seen c1 by mDNS: it learned c1's address from hq.
    assert "exchange" in peers["c1"]["found_by"], f"c2 found c1 by {peers['c1']['found_by']}"
    assert all("mdns" not in p["found_by"] for p in peers.values()), peers
    assert "mdns" not in {s for n in (hq, c1) for s in (n.peer("c2") or {})["found_by"]}


def test_hostile_clients_do_not_disturb_a_node(
    lab_factory: LabFactory, city: Deployment, wait_until: WaitUntil
) -> None:
    lab = lab_factory(3)
    hq = start_node(lab, "h1", "hq", city.homes["hq"], wait_until=wait_until)
    c1 = start_node(lab, "h2", "c1", city.homes["c1"], wait_until=wait_until)
    wait_until(all_linked([hq, c1]), timeout=SETTLE, message="hq and c1 linked")

    hostile = lab.popen("h3", [sys.executable, "-c", HOSTILE, hq.host.addr, str(PORT)])

    def link_holds_until_hostile_ends() -> bool:
        # Asserted at every poll: the link holds and hq answers throughout.
        assert hq.states().get("c1") == "linked", "hq lost c1 under attack"
        return hostile.poll() is not None

    wait_until(link_holds_until_hostile_ends, timeout=20, message="hostile clients finish")
    assert hostile.returncode == 0, hostile.log_text()
    report = json.loads(hostile.log_text().strip().splitlines()[-1])
    # The server hangs up on each kind (no TLS, a handshake that never comes, junk).
    assert report["garbage_hung_up"] is True, report
    assert report["silent_hung_up"] is True, report
    assert report["junk_hung_up"] == report["junk_connections"] == 20, report

    text = hq.log_text()
    assert down_lines(text, "c1") == []
    assert len(linked_lines(text, "c1")) == 1
    # Refusals are logged, summarised per address (a knocking host cannot flood the log).
    assert re.search(rf"refused - from {re.escape(lab.host('h3').addr)}:\d+", text), text
    assert hq.proc.poll() is None

    # A legitimate node on the attacker's host still gets in.
    c2 = start_node(lab, "h3", "c2", city.homes["c2"], wait_until=wait_until)
    wait_until(all_linked([hq, c2]), timeout=5, message="a fresh c2 links with hq")
    print(f"hostile report: {report}")


def test_sigterm_shuts_a_node_down_cleanly_and_says_goodbye(
    trio: tuple[Lab, list[RunningNode]], wait_until: WaitUntil
) -> None:
    _, (hq, c1, c2) = trio
    for node in (hq, c1):
        node.mark_log()  # a duplicate link replaced at start-up is not what we look at
    sent = time.monotonic()
    c2.proc.send_signal(signal.SIGTERM)
    # Well under dead_after (5 s): c2 sends Goodbye on every link before closing, so
    # its peers learn at once instead of waiting for missed heartbeats. The bound is
    # the product's 6 s limit; the log check below proves it was the goodbye.
    wait_until(
        not_linked([hq, c1], "c2"),
        timeout=MARKED_DOWN_WITHIN,
        message="hq and c1 mark c2 down after its SIGTERM",
    )
    noticed = time.monotonic() - sent
    assert c2.proc.wait(timeout=10) == 0
    text = c2.log_text()
    assert "shutting down" in text
    assert "stopped" in text
    assert not c2.control_socket.exists()
    for node in (hq, c1):
        text = node.log_since_mark()
        lines = down_lines(text, "c2")
        assert lines, f"{node.name} logged no loss of c2"
        assert "peer said goodbye" in lines[0], lines
        # A node that is leaving takes no new link (its peers redial at once).
        assert linked_lines(text, "c2") == [], text
    assert hq.states()["c1"] == "linked"
    print(f"c2's peers marked it down {noticed:.2f} s after SIGTERM")
