"""Nothing acknowledged is lost at a power cut (issue: durable before acknowledged).

The store sits on the power-loss filesystem (``conftest.power_fs``): whatever was not
fsync'ed is gone after ``cut()``. First the harness shows it can fail — plain SQLite in
WAL mode with ``synchronous = NORMAL`` loses rows it reported committed — then a real
``meshdesk run`` node acknowledges cases, the power goes, and every one is there
after the restart, in a store that passes ``PRAGMA integrity_check`` and whose chains
verify up to their signed checkpoints.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshdesk import control
from meshdesk.cases.chain import verify_run
from meshdesk.cli import main
from meshdesk.home import NodeHome
from meshdesk.store import Store

pytestmark = pytest.mark.durability

ROWS = 20

# A writer that commits ROWS rows one by one, says so, and waits to be killed (closing
# the connection would checkpoint the WAL into the database and sync it).
WRITER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute(f"PRAGMA synchronous = {sys.argv[2]}")
db.execute("CREATE TABLE IF NOT EXISTS t (x)")
for i in range(int(sys.argv[3])):
    db.execute("INSERT INTO t VALUES (?)", (i,))
print("committed", flush=True)
time.sleep(600)
"""


def _rows_after_cut(power_fs: Any, synchronous: str) -> int:
    path = power_fs.path / f"plain-{synchronous.lower()}.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), synchronous, str(ROWS)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "committed"
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    power_fs.cut()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = db.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall()
        return int(db.execute("SELECT count(*) FROM t").fetchone()[0]) if tables else 0
    finally:
        db.close()


def test_the_harness_loses_what_sqlite_normal_did_not_sync(power_fs: Any) -> None:
    # The harness can fail: NORMAL commits without fsync and loses them all here.
    assert _rows_after_cut(power_fs, "NORMAL") < ROWS
    # ... and FULL, which syncs the WAL at every commit, keeps every row.
    assert _rows_after_cut(power_fs, "FULL") == ROWS


def _store_on(power_fs: Any, home: NodeHome) -> Path:
    """Move the home's store onto the power-loss filesystem (the home keeps a symlink:
    the control socket cannot live on FUSE)."""
    target = power_fs.path / "store.db"
    data = home.store_path.read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    home.store_path.unlink()
    home.store_path.symlink_to(target)
    return target


async def _wait_for_node(home: NodeHome, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30):
        while True:
            assert proc.returncode is None, "the node exited while starting"
            if await control.try_call(home.control_socket, "status") is not None:
                return
            await asyncio.sleep(0.1)


async def _verify_chains(path: Path, home: NodeHome) -> int:
    """Every author's chain verifies up to its last checkpoint, which is its head."""
    der = (home.path / "identity" / "node.crt").read_bytes()
    key = x509.load_pem_x509_certificate(der).public_key()
    assert isinstance(key, Ed25519PublicKey)
    async with Store.open(path) as store:
        heads = await store.heads()
        assert heads, "no events at all"
        total = 0
        for author, (seq, digest) in heads.items():
            events = await store.events_after(author, 0, seq)
            checkpoints = await store.checkpoints(author)
            assert checkpoints[-1].seq == seq
            assert checkpoints[-1].hash == digest
            verified = verify_run(author, None, events, checkpoints[-1], key)
            assert [e.hash for e in verified] == [e.hash for e in events]
            total += len(events)
        return total


async def test_acknowledged_cases_survive_a_power_cut(
    power_fs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = NodeHome(tmp_path / "hq")
    created = ["deployment", "create", "--home", str(home.path), "--name", "停電市"]
    assert await asyncio.to_thread(main, created) == 0
    store_path = _store_on(power_fs, home)
    log = (tmp_path / "node.log").open("wb")
    node = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshdesk", "run", "--home", str(home.path),
        "--listen", "127.0.0.1:0", "--no-mdns",
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    acknowledged: list[str] = []
    try:
        await _wait_for_node(home, node)
        capsys.readouterr()
        for i in range(ROWS):
            code = await asyncio.to_thread(
                main,
                ["case", "new", "--home", str(home.path), "--category", "supplies",
                 "--urgency", "normal", "--name", f"避難者 {i}", "--summary", "毛布が足りない",
                 "--operator", "佐藤", "--json"],
            )  # fmt: skip
            out = capsys.readouterr()
            assert code == 0, out.err
            acknowledged.append(json.loads(out.out)["id"])
    finally:
        # The power goes: the node dies with the machine, then the disk forgets.
        node.send_signal(signal.SIGKILL)
        await node.wait()
        log.close()
    power_fs.cut()

    db = sqlite3.connect(store_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    async with Store.open(store_path) as store:
        assert sorted(await store.case_ids()) == sorted(acknowledged)
    assert await _verify_chains(store_path, home) == ROWS * 2  # opening + summary note


async def test_a_bundle_said_imported_survives_a_power_cut(
    power_fs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A shelter that never linked records cases and writes them to a stick.
    home = NodeHome(tmp_path / "hq")
    created = ["deployment", "create", "--home", str(home.path), "--name", "停電市"]
    assert await asyncio.to_thread(main, created) == 0
    kit = tmp_path / "shelter.kit"
    issue = ["deployment", "issue", "--home", str(home.path), "--name", "避難所", "--site",
             "体育館", "--role", "center", "--out", str(kit)]  # fmt: skip
    assert await asyncio.to_thread(main, issue) == 0
    shelter = tmp_path / "shelter"
    assert await asyncio.to_thread(main, ["init", "--home", str(shelter), "--kit", str(kit)]) == 0
    for i in range(ROWS):
        new = ["case", "new", "--home", str(shelter), "--category", "supplies", "--urgency",
               "normal", "--name", f"避難者 {i}", "--operator", "佐藤", "--json"]  # fmt: skip
        assert await asyncio.to_thread(main, new) == 0
    stick = tmp_path / "stick.bundle"
    export = ["bundle", "export", "--home", str(shelter), "--out", str(stick)]
    assert await asyncio.to_thread(main, export) == 0
    capsys.readouterr()

    # HQ's node imports it; once the CLI said "imported", the power goes.
    store_path = _store_on(power_fs, home)
    log = (tmp_path / "node.log").open("wb")
    node = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshdesk", "run", "--home", str(home.path),
        "--listen", "127.0.0.1:0", "--no-mdns",
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        await _wait_for_node(home, node)
        imported = ["bundle", "import", str(stick), "--home", str(home.path), "--json"]
        assert await asyncio.to_thread(main, imported) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["new_events"] == ROWS
    finally:
        node.send_signal(signal.SIGKILL)
        await node.wait()
        log.close()
    power_fs.cut()

    async with Store.open(store_path) as store:
        assert len(await store.case_ids()) == ROWS
