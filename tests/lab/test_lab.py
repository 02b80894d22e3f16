"""The network lab itself: ``field-kit/lab`` and the ``lab_factory`` fixture.

Every check is on behaviour (a ping arrives or not, a datagram is seen or not), never
on a wall-clock figure; negative checks are bounded by ``ping -W1`` or ordered after a
positive control, so no test sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _nodes import LabFactory

from meshdesk.errors import LabError
from meshdesk.lab import Lab, LabProcess, new_prefix

if TYPE_CHECKING:
    from waits import WaitUntil

pytestmark = pytest.mark.lab

LAB = str(Path(__file__).resolve().parents[2] / "field-kit" / "lab")

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = "5353"

# Listens on the mDNS group for ~15 s at most; prints "ready", then "got TAG" per datagram.
RECEIVER = r"""
import socket, struct, sys, time
group, port, addr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(addr))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + 15
while time.monotonic() < end:
    try:
        data, src = s.recvfrom(512)
    except TimeoutError:
        continue
    print("got", data.decode(), src[0], flush=True)
"""

# Sends TAG three times to the group. No IP_MULTICAST_IF: it relies on the lab's
# 224.0.0.0/4 route, as tools that send to 224.0.0.251 themselves do.
SENDER = r"""
import socket, sys
group, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for _ in range(3):
    s.sendto(tag.encode(), (group, port))
"""


def lab_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", LAB, *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def netns_of(prefix: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    return {n for n in names if re.fullmatch(rf"{prefix}-(sw|h\d+)", n)}


def ping(lab: Lab, src: str, dst: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``ping -c1 -W1`` (or as ``extra`` says) from ``src`` to ``dst``'s address."""
    argv = ["ping", *(extra or ("-c1", "-W1")), lab.host(dst).addr]
    return lab.run(src, argv, check=False, timeout=15)


def reachable(lab: Lab, src: str, dst: str) -> bool:
    return ping(lab, src, dst).returncode == 0


def received(result: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"(\d+) received", result.stdout)
    assert match, result.stdout
    return int(match.group(1))


def test_up_builds_the_lab_it_describes(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    p = lab.prefix
    assert re.fullmatch(r"md[0-9a-f]{4}", p)
    assert [(h.name, h.netns, h.addr, h.iface) for h in lab.hosts] == [
        (f"h{i}", f"{p}-h{i}", f"10.231.0.{10 + i}", "eth0") for i in (1, 2, 3)
    ]
    assert lab.host("h2") is lab.hosts[1]
    with pytest.raises(KeyError, match="no host 'h9'"):
        lab.host("h9")
    assert netns_of(p) == {f"{p}-sw", f"{p}-h1", f"{p}-h2", f"{p}-h3"}

    switch = ["ip", "netns", "exec", f"{p}-sw", "ip"]
    bridge = subprocess.run([*switch, "-d", "link", "show", "br0"], capture_output=True, text=True)
    assert "mcast_snooping 0" in bridge.stdout
    assert "state UP" in bridge.stdout
    ports = subprocess.run([*switch, "-o", "link", "show", "master", "br0"], capture_output=True)
    assert len(ports.stdout.splitlines()) == 3

    for h in lab.hosts:
        addr = lab.run(h.name, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert f"inet {h.addr}/24" in addr
        routes = lab.run(h.name, ["ip", "-4", "route"]).stdout
        assert "224.0.0.0/4 dev eth0" in routes
        assert "default" not in routes  # nothing leaves the lab

    # `lab exec` runs in the host's namespace; `lab ls` lists the lab and its owner.
    out = lab_cmd("exec", p, "h2", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert out.returncode == 0
    assert "inet 10.231.0.12/24" in out.stdout
    listed = {lab["prefix"]: lab for lab in json.loads(lab_cmd("ls", "--json").stdout)}
    assert listed[p]["hosts"] == 3
    assert listed[p]["owner"] == os.getpid()
    assert p in lab_cmd("ls").stdout


def test_hosts_reach_each_other(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    for src, dst in itertools.permutations(["h1", "h2", "h3"], 2):
        assert reachable(lab, src, dst), f"{src} cannot reach {dst}"


def test_cut_host_is_unreachable_until_restored(
    lab_factory: LabFactory, wait_until: WaitUntil
) -> None:
    lab = lab_factory(2)
    assert reachable(lab, "h2", "h1")

    lab.cut("h1")
    assert not reachable(lab, "h2", "h1")
    assert not reachable(lab, "h1", "h2")
    # From inside, a pulled cable: eth0 is still administratively up, without carrier.
    link = lab.run("h1", ["ip", "-o", "link", "show", "eth0"]).stdout
    assert "NO-CARRIER" in link
    assert ",UP" in link

    lab.restore("h1")
    wait_until(lambda: reachable(lab, "h2", "h1"), timeout=5, message="h1 back after restore")
    assert "LOWER_UP" in lab.run("h1", ["ip", "-o", "link", "show", "eth0"]).stdout


def test_netem_loss_drops_what_the_host_sends(lab_factory: LabFactory) -> None:
    lab = lab_factory(2)
    assert reachable(lab, "h1", "h2")  # also fills h1's neighbour cache

    lab.netem("h1", loss_pct=100)
    assert received(ping(lab, "h1", "h2", "-c3", "-i0.2", "-W1")) == 0

    lab.netem("h1", loss_pct=50)  # replaces the 100 %; P(all or none of 40) ≈ 2e-12
    assert 0 < received(ping(lab, "h1", "h2", "-c40", "-i0.02", "-W1")) < 40

    lab.clear_netem("h1")
    assert received(ping(lab, "h1", "h2", "-c3", "-i0.05", "-W1")) == 3


def test_netem_delay_lengthens_the_round_trip(lab_factory: LabFactory) -> None:
    lab = lab_factory(2)
    lab.netem("h1", delay_ms=150)  # skips where the kernel lacks sch_netem
    result = ping(lab, "h1", "h2", "-c3", "-i0.2", "-W2")
    rtts = [float(t) for t in re.findall(r"time=([\d.]+) ms", result.stdout)]
    assert rtts, result.stdout
    assert min(rtts) >= 150
    lab.clear_netem("h1")
    assert reachable(lab, "h1", "h2")


class Receiver:
    """A multicast listener on one host, read through its log."""

    def __init__(self, lab: Lab, host: str) -> None:
        self.lab = lab
        argv = [sys.executable, "-c", RECEIVER, MDNS_GROUP, MDNS_PORT, lab.host(host).addr]
        self.proc = lab.popen(host, argv)
        self.log = self.proc.log

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"receiver died: {self.lines()}"
        return "ready" in self.lines()

    def got(self, tag: str) -> bool:
        return any(line.startswith(f"got {tag} ") for line in self.lines())


def test_block_multicast_stops_multicast_both_ways(
    lab_factory: LabFactory, wait_until: WaitUntil
) -> None:
    lab = lab_factory(3)
    rx = {h: Receiver(lab, h) for h in ("h1", "h2", "h3")}
    wait_until(lambda: all(r.ready() for r in rx.values()), timeout=10, message="receivers")

    def send(host: str, tag: str) -> None:
        lab.run(host, [sys.executable, "-c", SENDER, MDNS_GROUP, MDNS_PORT, tag], timeout=10)

    # Control: multicast crosses the switch.
    send("h1", "a1")
    wait_until(lambda: rx["h2"].got("a1") and rx["h3"].got("a1"), timeout=5, message="a1")

    lab.block_multicast("h1")
    send("h1", "b1")
    send("h2", "b2")
    # b2 left after b1 through the same switch: once h3 has b2, b1 would have been there.
    wait_until(lambda: rx["h3"].got("b2") and rx["h2"].got("b2"), timeout=5, message="b2")
    assert not rx["h2"].got("b1"), "h1 sent multicast while blocked"
    assert not rx["h3"].got("b1"), "h1 sent multicast while blocked"
    assert not rx["h1"].got("b2"), "h1 received multicast while blocked"
    assert reachable(lab, "h1", "h2"), "unicast must still work"
    assert reachable(lab, "h3", "h1"), "unicast must still work"

    lab.unblock_multicast("h1")
    send("h1", "c1")
    send("h2", "c2")
    wait_until(lambda: rx["h2"].got("c1") and rx["h1"].got("c2"), timeout=5, message="c1, c2")


def test_down_kills_processes_and_leaves_no_namespace(
    lab_prefix: str, wait_until: WaitUntil
) -> None:
    up = lab_cmd("up", "2", "--prefix", lab_prefix)
    assert up.returncode == 0, up.stderr
    assert f"{lab_prefix}-h2" in up.stdout
    sleeper = subprocess.Popen(
        ["bash", LAB, "exec", lab_prefix, "h1", "--", "sleep", "60"], stdin=subprocess.DEVNULL
    )
    try:

        def in_h1() -> bool:  # `lab exec` execs in place: the same pid lands in h1
            pids = subprocess.run(
                ["ip", "netns", "pids", f"{lab_prefix}-h1"], capture_output=True, text=True
            )
            return str(sleeper.pid) in pids.stdout.split()

        wait_until(in_h1, timeout=5)
        down = lab_cmd("down", lab_prefix)
        assert down.returncode == 0, down.stderr
        assert sleeper.wait(timeout=5) == -15  # SIGTERM
        assert netns_of(lab_prefix) == set()
        assert lab_prefix not in lab_cmd("ls").stdout
        again = lab_cmd("down", lab_prefix)  # idempotent
        assert again.returncode == 0, again.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


def test_up_refuses_an_existing_lab(lab_factory: LabFactory) -> None:
    lab = lab_factory(1)
    again = lab_cmd("up", "2", "--prefix", lab.prefix)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert netns_of(lab.prefix) == {f"{lab.prefix}-sw", f"{lab.prefix}-h1"}


@pytest.mark.parametrize(
    ("args", "env", "status", "error"),
    [
        (["--subnet", "10.231.300"], None, 2, "octet is over 255"),
        (["--subnet", "8.8.8"], None, 2, "not private"),
        ([], {"LAB_TEST_FAIL_AFTER_HOST": "2"}, 1, "injected failure after host h2"),
    ],
    ids=["bad-subnet", "public-subnet", "fails-halfway"],
)
def test_failed_up_leaves_nothing_behind(
    lab_prefix: str, args: list[str], env: dict[str, str] | None, status: int, error: str
) -> None:
    result = lab_cmd("up", "3", "--prefix", lab_prefix, *args, env=env)
    assert result.returncode == status
    first, *rest = result.stderr.splitlines()
    assert first.startswith("lab: ")
    assert error in first
    assert rest == (["lab: up failed; removed the partial lab"] if env else [])
    assert netns_of(lab_prefix) == set()


def test_usage_errors_are_one_line() -> None:
    assert lab_cmd("help").returncode == 0
    for args in (["frob"], ["up"], ["up", "0"], ["cut", "mdnone"], ["cut", "mdnone", "h1"]):
        result = lab_cmd(*args)
        assert result.returncode in (1, 2), args
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("lab: "), result.stderr


# -- the harness (meshdesk.lab.Lab) -------------------------------------------------------


def test_leaving_the_block_stops_the_programs_and_removes_the_lab(tmp_path: Path) -> None:
    lab = Lab(2, log_dir=tmp_path)
    started: list[LabProcess] = []

    def fail_inside() -> None:
        with lab:
            assert re.fullmatch(r"md[0-9a-f]{4}", lab.prefix)
            started.append(lab.popen("h1", ["sleep", "60"], name="sleeper"))
            assert started[0].alive
            assert started[0].log.parent == tmp_path
            raise RuntimeError("the test failed here")

    with pytest.raises(RuntimeError, match="the test failed here"):
        fail_inside()
    prefix, (sleeper,) = lab.prefix, started
    assert sleeper.returncode == -15  # SIGTERM to its group
    assert netns_of(prefix) == set()
    with pytest.raises(LabError, match="is not up"):
        lab.popen("h1", ["true"])
    lab.close()  # idempotent


def test_a_program_that_ignores_sigterm_is_killed_after_the_grace(
    lab_factory: LabFactory, wait_until: WaitUntil
) -> None:
    lab = lab_factory(1)
    stubborn = lab.popen("h1", ["bash", "-c", "trap '' TERM; echo ready; sleep 60"])
    wait_until(lambda: "ready" in stubborn.log_text(), timeout=10, message="SIGTERM ignored")
    assert stubborn.stop(grace=0.5) == -9


def test_a_failing_program_is_one_lab_error_with_its_output(lab_factory: LabFactory) -> None:
    lab = lab_factory(1)
    with pytest.raises(
        LabError, match=r"on h1: sh -c echo out; echo why >&2; exit 3 exited 3: why"
    ):
        lab.run("h1", ["sh", "-c", "echo out; echo why >&2; exit 3"])
    assert lab.run("h1", ["sh", "-c", "exit 3"], check=False).returncode == 3
    with pytest.raises(KeyError, match="no host 'h2'"):
        lab.run("h2", ["true"])


async def test_async_with_builds_the_lab_and_tears_it_down() -> None:
    async with Lab(1) as lab:
        prefix = lab.prefix
        assert await asyncio.to_thread(netns_of, prefix) == {f"{prefix}-sw", f"{prefix}-h1"}
        done = await asyncio.to_thread(lab.run, "h1", ["ip", "-4", "-o", "addr", "show", "eth0"])
        assert lab.host("h1").addr in done.stdout
    assert await asyncio.to_thread(netns_of, prefix) == set()


def test_separate_drops_only_the_pairs_given(lab_factory: LabFactory) -> None:
    lab = lab_factory(3)
    assert reachable(lab, "h1", "h2")
    lab.separate({("h2", "h1")})
    assert not reachable(lab, "h1", "h2")
    assert not reachable(lab, "h2", "h1")
    assert reachable(lab, "h1", "h3")
    assert reachable(lab, "h2", "h3")
    lab.separate([("h1", "h3")])  # replaces the set
    assert reachable(lab, "h1", "h2")
    assert not reachable(lab, "h3", "h1")
    lab.separate([])
    assert reachable(lab, "h1", "h3")


def test_labs_left_by_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    # A stem of its own, so this process has not cleaned it yet (once per process).
    stem = "mdst"
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is free now: the owner of a lab "left by a run that died"
    stale, live = new_prefix(stem), new_prefix(stem)
    try:
        for prefix, owner in ((stale, dead.pid), (live, os.getpid())):
            made = lab_cmd("up", "1", "--prefix", prefix, "--owner", str(owner))
            assert made.returncode == 0, made.stderr
        with Lab(1, stem=stem, log_dir=tmp_path) as lab:
            assert lab.prefix not in (stale, live)
            assert netns_of(stale) == set()
            assert netns_of(live) == {f"{live}-sw", f"{live}-h1"}
    finally:
        for prefix in (stale, live):
            lab_cmd("down", prefix)
