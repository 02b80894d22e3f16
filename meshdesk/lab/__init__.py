"""The one harness around the network lab (``field-kit/lab``).

A lab is a switch namespace with a bridge and hosts ``h1..hN`` on it (``field-kit/lab
help``); nothing in it is linked to the machine's own network. Tests, benches, drills
and the demo all build their labs through :class:`Lab`, the only Python code that
runs the script::

    with Lab(3, stem="md", log_dir=folder) as lab:      # or: async with Lab(...)
        hq = lab.popen("h1", ["meshdesk", "run", ...], name="hq")
        lab.cut("h2")
        ...

Entering the block builds the lab under a fresh prefix (``stem`` + 4 hex digits)
owned by this process, after removing the labs of the same stem whose owner process
has died (a run killed before its teardown). The lab then owns what it starts: each
program runs in its host in a process group of its own, its output in a log file.
Leaving the block — normally, on an error or on Ctrl-C — stops those programs
(SIGTERM to each group, SIGKILL after a grace period) and tears the lab down.
``async with`` does the same in a worker thread, so an event loop is never blocked
by the script; the other methods are quick and blocking (drills call them through
``asyncio.to_thread``).
"""

from __future__ import annotations

from meshdesk.lab._lab import Lab, LabHost
from meshdesk.lab._machine import CHECKOUT_SCRIPT, LAB_ENV, find_script, lab_problems, new_prefix
from meshdesk.lab._process import TERM_GRACE, LabProcess

__all__ = [
    "CHECKOUT_SCRIPT",
    "LAB_ENV",
    "TERM_GRACE",
    "Lab",
    "LabHost",
    "LabProcess",
    "find_script",
    "lab_problems",
    "new_prefix",
]
