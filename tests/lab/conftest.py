"""The lab tier: real processes on a LAN made of network namespaces (``field-kit/lab``).

A lab is a switch namespace with a bridge and hosts ``h1..hN`` on it; nothing in it is
linked to the machine's own network. Tests get labs (:class:`meshdesk.lab.Lab`, the
harness that benches, drills and the demo use too) from ``lab_factory``::

    pytestmark = pytest.mark.lab

    def test_two_nodes_link(lab_factory, wait_until):
        lab = lab_factory(2)
        node = lab.popen("h1", [sys.executable, "-m", "meshdesk", ...])
        lab.cut("h2")
        ...

Every lab is torn down after its test, processes first, even when the test failed; a
failed test's report carries the tail of each process log. On a laptop without root
or network namespaces the lab tests skip; under ``CI=true`` they fail instead, since CI
must really run them. A test that asks for what this kernel cannot do (netem delay
without sch_netem: ``LabUnsupported``) skips: no package install fixes a kernel.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Generator

import pytest
from _nodes import LabFactory
from tiers import require

from meshdesk.errors import LabUnsupported
from meshdesk.lab import CHECKOUT_SCRIPT, Lab, lab_problems, new_prefix

LAB_SCRIPT = CHECKOUT_SCRIPT
TOOLS = ("ip", "nft", "ping")  # iproute2, nftables, iputils-ping
STEM = "md"  # the labs of this tier: md + 4 hex


@functools.cache
def _lab_problems() -> tuple[str, ...]:
    return tuple(lab_problems(LAB_SCRIPT, tools=TOOLS))


def require_lab() -> None:
    """Skip (on a laptop) or fail (under ``CI=true``) unless labs can be built here."""
    require(_lab_problems(), tier="lab")


_LABS_KEY = pytest.StashKey[list[Lab]]()


@pytest.fixture(autouse=True)
def _lab_required() -> None:
    """Every test in this tier needs a machine that can build labs."""
    require_lab()


@pytest.fixture
def lab_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Generator[LabFactory, None, None]:
    """``lab_factory(n, *, subnet=None) -> Lab``; every lab made is torn down afterwards."""
    labs: list[Lab] = []
    request.node.stash[_LABS_KEY] = labs
    log_dir = tmp_path_factory.mktemp("lab-logs")

    def factory(n: int, *, subnet: str | None = None) -> Lab:
        lab = Lab(
            n, stem=STEM, script=LAB_SCRIPT, log_dir=log_dir / f"lab{len(labs) + 1}", subnet=subnet
        )
        labs.append(lab)
        return lab.open()

    yield factory
    errors: list[BaseException] = []
    for lab in reversed(labs):
        try:
            lab.close()
        except Exception as exc:  # tear down the others all the same
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def lab_prefix() -> Generator[str, None, None]:
    """A fresh prefix for driving ``field-kit/lab`` by hand; ``lab down`` afterwards."""
    prefix = new_prefix(STEM)
    yield prefix
    down = subprocess.run(
        ["bash", str(LAB_SCRIPT), "down", prefix], capture_output=True, text=True, check=False
    )
    assert down.returncode == 0, down.stderr


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A kernel feature the lab lacks (``LabUnsupported``) skips the test; it does not
    fail it, and it is not the "needs root/namespaces" kind of skip that CI refuses."""
    try:
        return (yield)
    except LabUnsupported as exc:
        pytest.skip(f"kernel feature missing: {exc}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the lab processes' logs to a failed test's report."""
    report = yield
    if report.when == "call" and report.failed:
        for lab in item.stash.get(_LABS_KEY, []):
            for name, tail in lab.log_tails():
                report.sections.append((f"lab {lab.prefix} {name}", tail))
    return report
