"""The real ``meshdesk tui`` in tmux against real ``meshdesk run`` nodes on loopback,
read back with ``tmux capture-pane -p``."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import WaitUntil

MESHDESK = str(Path(sys.executable).parent / "meshdesk")
TMUX = shutil.which("tmux")


def cli(*args: str | Path) -> str:
    proc = subprocess.run(
        [MESHDESK, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    if TMUX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is not installed (CI installs it in .ci/run)")
        pytest.skip("tmux is not installed")
    base = [TMUX, "-L", f"meshdesk-test-{secrets.token_hex(4)}", "-f", "/dev/null"]
    try:
        yield base
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def nodes(tmp_path: Path, wait_until: WaitUntil) -> Iterator[dict[str, Path]]:
    hq, centre = tmp_path / "hq", tmp_path / "centre"
    cli(
        "deployment",
        "create",
        "--home",
        hq,
        "--name",
        "テスト市",
        "--node-name",
        "本部",
        "--site",
        "市役所",
    )
    kit = tmp_path / "centre.kit"
    cli(
        "deployment",
        "issue",
        "--home",
        hq,
        "--name",
        "避難所A",
        "--site",
        "大町",
        "--role",
        "center",
        "--out",
        kit,
    )
    cli("init", "--home", centre, "--kit", kit)
    procs: list[subprocess.Popen[bytes]] = []

    def run(home: Path, *extra: str) -> None:
        with (home / "run.log").open("wb") as log:
            argv = [MESHDESK, "run", "--home", str(home), "--listen", "127.0.0.1:0", "--no-mdns"]
            procs.append(
                subprocess.Popen([*argv, *extra], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            )

    def status(home: Path) -> dict[str, object] | None:
        proc = subprocess.run(
            [MESHDESK, "status", "--home", str(home), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        live = json.loads(proc.stdout).get("live") if proc.returncode == 0 else None
        return live if isinstance(live, dict) else None

    try:
        run(hq)
        wait_until(lambda: status(hq) is not None, timeout=20, message="HQ answers")
        port = (status(hq) or {})["listen_port"]
        run(centre, "--peer", f"127.0.0.1:{port}")
        wait_until(
            lambda: (status(hq) or {}).get("peers_linked") == 1,
            timeout=20,
            message="centre linked",
        )
        yield {"hq": hq, "centre": centre}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


def screen(tmux: list[str], target: str) -> str:
    return subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", target], capture_output=True, text=True, check=True
    ).stdout


def test_console_in_tmux_attaches_shows_the_mesh_and_a_synced_case(
    tmux: list[str], nodes: dict[str, Path], wait_until: WaitUntil
) -> None:
    command = f"{MESHDESK} tui --home {nodes['hq']} --lang en --operator tmux"
    subprocess.run(
        [
            *tmux,
            "new-session",
            "-d",
            "-s",
            "desk",
            "-x",
            "120",
            "-y",
            "36",
            "-e",
            "LANG=C.UTF-8",
            command,
        ],
        check=True,
    )
    wait = wait_until  # the fixture: wait_until(predicate, timeout, message=...)
    wait(
        lambda: "Sites and peers" in screen(tmux, "desk"),
        timeout=20,
        message="the dashboard is drawn",
    )
    wait(
        lambda: "避難所A" in screen(tmux, "desk") and "linked" in screen(tmux, "desk"),
        timeout=20,
        message="the centre shows as linked",
    )
    cli(
        "case",
        "new",
        "--home",
        nodes["centre"],
        "--operator",
        "a",
        "--category",
        "housing",
        "--urgency",
        "immediate",
        "--name",
        "田中 花子",
    )
    subprocess.run([*tmux, "send-keys", "-t", "desk", "F2"], check=True)
    wait(
        lambda: "Immediate" in screen(tmux, "desk") and "1 of 1 cases" in screen(tmux, "desk"),
        timeout=20,
        message="the centre's case reached the HQ console's queue",
    )
    subprocess.run([*tmux, "send-keys", "-t", "desk", "C-q"], check=True)

    def gone() -> bool:
        listed = subprocess.run([*tmux, "list-sessions"], capture_output=True, check=False)
        return listed.returncode != 0 or b"desk" not in listed.stdout

    wait(gone, timeout=15, message="the console quit on Ctrl+Q")
