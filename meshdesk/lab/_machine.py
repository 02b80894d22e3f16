"""The machine side of the lab: where the script is, whether labs can be built here."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from meshdesk.errors import LabError

__all__ = [
    "CHECKOUT_SCRIPT",
    "LAB_ENV",
    "find_script",
    "lab_problems",
    "netns_names",
    "new_prefix",
    "pid_alive",
    "run_command",
]

#: Names the lab script when no path is given (``--lab`` of the benches comes first).
LAB_ENV = "MESHDESK_LAB"
#: The lab script of the checkout this package runs from (an editable install).
CHECKOUT_SCRIPT = Path(__file__).resolve().parents[2] / "field-kit" / "lab"
_CWD_SCRIPT = Path("field-kit") / "lab"
_TIMEOUT = 60.0
_PACKAGES = {"ip": "iproute2", "nft": "nftables", "ping": "iputils-ping"}


def find_script(
    arg: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """The lab script: ``arg``, else ``$MESHDESK_LAB``, else the checkout's
    ``field-kit/lab`` (the source tree of this package), else ``./field-kit/lab``.

    Raises:
        LabError: there is no script there; the message says how the path was chosen.
    """
    env = os.environ if env is None else env
    if arg:
        path, named = Path(arg), f"--lab {arg}"
    elif env.get(LAB_ENV):
        path, named = Path(env[LAB_ENV]), f"${LAB_ENV}={env[LAB_ENV]}"
    elif CHECKOUT_SCRIPT.is_file():
        path, named = CHECKOUT_SCRIPT, str(CHECKOUT_SCRIPT)
    else:
        path, named = _CWD_SCRIPT, f"./{_CWD_SCRIPT} (give --lab PATH or set {LAB_ENV})"
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    if not path.is_file():
        raise LabError(f"there is no lab script at {named}")
    return path


def lab_problems(
    script: Path | None = CHECKOUT_SCRIPT, tools: Iterable[str] = ("ip", "nft")
) -> list[str]:
    """Why this machine cannot build labs (empty: it can).

    Checks root, the ``tools`` (iproute2's ``ip``; ``nft`` for loss without sch_netem,
    multicast blocks and pair filters), that network namespaces can really be made
    here (not in every container), and ``script`` unless None.
    """
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (network namespaces); run it with sudo")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = " ".join(dict.fromkeys(_PACKAGES.get(tool, tool) for tool in missing))
        problems.append(f"needs {', '.join(missing)} (apt-get install {packages})")
    if not problems:
        probe = f"mdprobe{os.getpid() % 100000}"
        made = run_command(["ip", "netns", "add", probe])
        if made.returncode != 0:
            problems.append(f"ip netns is unusable here: {made.stderr.strip()}")
        else:
            run_command(["ip", "netns", "delete", probe])
    if script is not None and not script.is_file():
        problems.append(f"needs the lab script {script} (run from a meshdesk checkout)")
    return problems


def run_command(
    argv: Sequence[str], *, timeout: float = _TIMEOUT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv[:4])} … did not finish within {timeout:g} s") from exc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def netns_names() -> set[str]:
    out = run_command(["ip", "netns", "list"])
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def new_prefix(stem: str) -> str:
    """A fresh lab prefix: ``stem`` and 4 hex digits that no namespace here uses yet.

    ``stem`` is 1-6 characters a-z0-9 starting with a letter: ``md`` for tests, ``dr``
    drills, ``bd``/``bc`` benches, ``mddemo`` the demo. (Another run may still take the
    same prefix a moment later; :class:`~meshdesk.lab.Lab` then tries another.)
    """
    if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", stem):
        raise ValueError(f"bad lab stem {stem!r}: 1-6 characters a-z0-9, starting a-z")
    taken = {name.rsplit("-", 1)[0] for name in netns_names()}
    for _ in range(100):
        prefix = f"{stem}{secrets.token_hex(2)}"
        if prefix not in taken:
            return prefix
    raise LabError(f"no free lab prefix {stem}XXXX after 100 tries")  # pragma: no cover
