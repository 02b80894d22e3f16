"""The CLI end to end: provisioning flows, JSON output, and one-line errors.

Most tests call :func:`meshdesk.cli.main` in-process (fast); a few run the installed
console script to prove the real entry point behaves the same.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from clirun import Cli, cli_runner, fails, ok

from meshdesk import __version__


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("MESHDESK_HOME", raising=False)
    return cli_runner(capsys)


@dataclass
class Deployment:
    root: Path
    hq: Path
    deployment_id: str


@pytest.fixture
def deployment(tmp_path: Path, cli: Cli) -> Deployment:
    hq = tmp_path / "hq"
    created = ok(cli("deployment", "create", "--home", str(hq), "--name", "秋田市", "--json"))
    data = created.json()
    assert isinstance(data, dict)
    return Deployment(tmp_path, hq, data["deployment_id"])


def issue(cli: Cli, dep: Deployment, name: str, *extra: str) -> Path:
    kit = dep.root / f"{name}.kit"
    ok(
        cli(
            "deployment", "issue", "--home", str(dep.hq), "--name", name,
            "--site", "大町", "--role", "center", "--out", str(kit), *extra,
        )
    )  # fmt: skip
    return kit


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- happy paths ------------------------------------------------------------------


def test_version(cli: Cli) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("--version")
    assert exit_info.value.code == 0


def test_create_issue_init_status(cli: Cli, deployment: Deployment) -> None:
    kit = issue(cli, deployment, "第一小学校", "--dept", "welfare", "--dept", "福祉課")
    assert stat.S_IMODE(kit.stat().st_mode) == 0o600
    home = deployment.root / "school"
    init = ok(
        cli(
            "init", "--home", str(home), "--kit", str(kit),
            "--deployment-id", deployment.deployment_id.lower(), "--json",
        )
    ).json()  # fmt: skip
    assert isinstance(init, dict)
    assert init["name"] == "第一小学校"
    assert init["departments"] == ["welfare", "福祉課"]
    assert stat.S_IMODE((home / "identity" / "node.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "identity" / "sealing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert not (home / "identity" / "ca.key").exists()

    status = ok(cli("status", "--home", str(home), "--json")).json()
    assert isinstance(status, dict)
    assert status["node_id"] == init["node_id"]
    assert status["role"] == "center"
    assert status["site"] == "大町"
    assert status["deployment"] == "秋田市"
    assert status["deployment_id"] == deployment.deployment_id
    assert status["holds_ca"] is False
    assert status["store"]["events"] == 0

    text = ok(cli("status", "--home", str(home))).out
    assert init["node_id"] in text
    assert "第一小学校" in text


def test_hq_status_counts_issued_kits(cli: Cli, deployment: Deployment) -> None:
    issue(cli, deployment, "a")
    issue(cli, deployment, "b")
    status = ok(cli("status", "--home", str(deployment.hq), "--json")).json()
    assert isinstance(status, dict)
    assert status["role"] == "hq"
    assert status["holds_ca"] is True
    assert status["store"]["issued_nodes"] == 3  # HQ itself and two kits


def test_home_from_environment(
    cli: Cli, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHDESK_HOME", str(deployment.hq))
    status = ok(cli("status", "--json")).json()
    assert isinstance(status, dict)
    assert status["home"] == str(deployment.hq)


def test_passphrase_protected_kit(cli: Cli, deployment: Deployment) -> None:
    secret = deployment.root / "pw.txt"
    secret.write_text("合言葉 for the shelter\n", encoding="utf-8")
    kit = issue(cli, deployment, "gym", "--passphrase-file", str(secret))
    assert b"ENCRYPTED" in kit.read_bytes()
    home = deployment.root / "gym"
    fails(cli("init", "--home", str(home), "--kit", str(kit)), 5, "--passphrase-file")
    wrong = deployment.root / "wrong.txt"
    wrong.write_text("nope\n")
    fails(
        cli("init", "--home", str(home), "--kit", str(kit), "--passphrase-file", str(wrong)),
        5,
        "wrong passphrase",
    )
    assert not (home / "identity" / "node.key").exists()
    ok(cli("init", "--home", str(home), "--kit", str(kit), "--passphrase-file", str(secret)))


def test_revoke_by_name_and_list(cli: Cli, deployment: Deployment) -> None:
    issue(cli, deployment, "lost laptop")
    issue(cli, deployment, "kept laptop")
    revoked = ok(
        cli("deployment", "revoke", "--home", str(deployment.hq), "lost laptop", "--json")
    ).json()
    assert isinstance(revoked, dict)
    assert revoked["revocation_list"] == 1
    nodes = ok(cli("deployment", "nodes", "--home", str(deployment.hq), "--json")).json()
    assert isinstance(nodes, list)
    flags = {n["name"]: n["revoked"] for n in nodes}
    assert flags == {"HQ": False, "lost laptop": True, "kept laptop": False}
    # Revoking by ID prefix bumps the list number.
    kept = next(n for n in nodes if n["name"] == "kept laptop")
    again = ok(
        cli("deployment", "revoke", "--home", str(deployment.hq), kept["node_id"][:9], "--json")
    ).json()
    assert isinstance(again, dict)
    assert again["revocation_list"] == 2
    status = ok(cli("status", "--home", str(deployment.hq), "--json")).json()
    assert isinstance(status, dict)
    assert status["store"]["revoked_nodes"] == 2
    assert status["store"]["revocation_list"] == 2


def test_qr_code_is_printed(cli: Cli, deployment: Deployment) -> None:
    out = ok(cli("status", "--home", str(deployment.hq), "--qr")).out
    assert "█" in out or "▀" in out or "▄" in out
    assert "QR code of" in out


def test_demo_in_a_folder(cli: Cli, tmp_path: Path) -> None:
    out = ok(cli("demo", "--dir", str(tmp_path / "demo"), "--provision-only")).out
    assert out.count("fingerprint (node id)") == 2
    assert out.count("-- meshdesk status") == 3
    for name in ("hq", "centre1", "centre2"):
        assert (tmp_path / "demo" / name / "identity" / "node.key").exists()


def test_demo_without_a_terminal_runs_links_syncs_reports_and_stops(
    cli: Cli, tmp_path: Path
) -> None:
    root = tmp_path / "demo"
    out = ok(cli("demo", "--dir", str(root), "--loopback")).out
    assert out.count(": linked (found by") == 2
    assert "4 sample cases synced to HQ" in out
    assert "山田 花子" in out
    assert "Maria Santos" in out
    assert "not opening the console" in out
    assert "Stopped every node the demo started" in out
    for name in ("hq", "centre1", "centre2"):
        assert not (root / name / "control.sock").exists(), f"{name} still runs"


# -- every expected failure is one line ----------------------------------------------


def test_missing_home(cli: Cli, tmp_path: Path) -> None:
    fails(cli("status", "--home", str(tmp_path / "nowhere")), 4, "no meshdesk home")


def test_home_without_node(cli: Cli, tmp_path: Path) -> None:
    fails(cli("status", "--home", str(tmp_path)), 4, "holds no node identity")


def test_create_twice_refuses(cli: Cli, deployment: Deployment) -> None:
    fails(
        cli("deployment", "create", "--home", str(deployment.hq), "--name", "x"),
        4,
        "already holds a node",
    )


def test_issue_needs_the_ca(cli: Cli, deployment: Deployment) -> None:
    kit = issue(cli, deployment, "centre")
    home = deployment.root / "centre"
    ok(cli("init", "--home", str(home), "--kit", str(kit)))
    fails(
        cli(
            "deployment", "issue", "--home", str(home), "--name", "n", "--site", "s",
            "--role", "desk", "--out", str(deployment.root / "n.kit"),
        ),
        4,
        "holds no deployment CA",
    )  # fmt: skip


def test_issue_refuses_existing_out_and_duplicate_name(cli: Cli, deployment: Deployment) -> None:
    kit = issue(cli, deployment, "one")
    before = sha(kit)
    base = ("deployment", "issue", "--home", str(deployment.hq), "--site", "s", "--role", "desk")
    fails(cli(*base, "--name", "two", "--out", str(kit)), 2, "does not overwrite")
    assert sha(kit) == before
    fails(cli(*base, "--name", "one", "--out", str(kit) + "2"), 2, "exists already")
    fails(cli(*base, "--name", "", "--out", str(kit) + "3"), 2, "must not be empty")


def test_truncated_kit(cli: Cli, deployment: Deployment) -> None:
    kit = issue(cli, deployment, "centre")
    kit.write_bytes(kit.read_bytes()[:300])
    fails(cli("init", "--home", str(deployment.root / "c"), "--kit", str(kit)), 5, "truncated")
    assert not (deployment.root / "c" / "identity" / "node.key").exists()


def test_wrong_file_as_kit(cli: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(os.urandom(2000))
    fails(cli("init", "--home", str(tmp_path / "h"), "--kit", str(junk)), 5, "not a meshdesk")
    fails(
        cli("init", "--home", str(tmp_path / "h"), "--kit", str(tmp_path / "x")), 5, "no kit file"
    )


def test_kit_of_another_deployment(cli: Cli, deployment: Deployment, tmp_path: Path) -> None:
    other_hq = tmp_path / "other-hq"
    ok(cli("deployment", "create", "--home", str(other_hq), "--name", "Other City"))
    foreign = tmp_path / "foreign.kit"
    ok(
        cli(
            "deployment", "issue", "--home", str(other_hq), "--name", "x", "--site", "s",
            "--role", "center", "--out", str(foreign),
        )
    )  # fmt: skip
    fails(
        cli(
            "init", "--home", str(tmp_path / "n"), "--kit", str(foreign),
            "--deployment-id", deployment.deployment_id,
        ),
        5,
        "belongs to deployment 'Other City'",
    )  # fmt: skip
    # A node of one deployment cannot be re-provisioned with a kit of another.
    fails(cli("init", "--home", str(deployment.hq), "--kit", str(foreign)), 5, "is a node of")
    fails(
        cli("init", "--home", str(tmp_path / "n"), "--kit", str(foreign), "--deployment-id", "AAA"),
        2,
        "--deployment-id",
    )


def test_a_short_name_is_not_read_as_an_id_prefix(cli: Cli, deployment: Deployment) -> None:
    hq_id = ok(cli("status", "--home", str(deployment.hq), "--json")).json()["node_id"]  # type: ignore[index]
    name = hq_id[0].lower()  # a one-letter name that is also the HQ id's first character
    issue(cli, deployment, name)
    revoked = ok(cli("deployment", "revoke", "--home", str(deployment.hq), name, "--json")).json()
    assert revoked["name"] == name  # type: ignore[index]
    fails(cli("deployment", "revoke", "--home", str(deployment.hq), "ZZ"), 2, "at least 4")


def test_revoke_errors(cli: Cli, deployment: Deployment) -> None:
    fails(cli("deployment", "revoke", "--home", str(deployment.hq), "ghost"), 2, "no node")
    fails(
        cli("deployment", "revoke", "--home", str(deployment.hq), "HQ"), 2, "cannot revoke itself"
    )
    issue(cli, deployment, "x")
    ok(cli("deployment", "revoke", "--home", str(deployment.hq), "x"))
    fails(cli("deployment", "revoke", "--home", str(deployment.hq), "x"), 2, "revoked already")


def test_corrupt_database_is_reported_and_untouched(cli: Cli, deployment: Deployment) -> None:
    db = deployment.hq / "store.db"
    db.write_bytes(b"this is not a database" * 100)
    before = sha(db)
    fails(cli("status", "--home", str(deployment.hq)), 7, str(db))
    assert sha(db) == before


def test_newer_database_is_reported_and_untouched(cli: Cli, deployment: Deployment) -> None:
    db = deployment.hq / "store.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = sha(db)
    fails(cli("status", "--home", str(deployment.hq)), 7, "999")
    assert sha(db) == before


def test_bad_config(cli: Cli, deployment: Deployment) -> None:
    config = deployment.hq / "config.toml"
    config.write_text("[network]\nlisen = '0.0.0.0:1'\n")
    fails(cli("status", "--home", str(deployment.hq)), 3, "network.lisen")
    config.write_text("[network]\nlisten = 'nowhere'\n")
    fails(cli("status", "--home", str(deployment.hq)), 3, "network.listen")
    config.write_text("[network\n")
    fails(cli("status", "--home", str(deployment.hq)), 3, "invalid TOML")


def test_key_readable_by_others_is_refused(cli: Cli, deployment: Deployment) -> None:
    key = deployment.hq / "identity" / "node.key"
    key.chmod(0o644)
    fails(cli("status", "--home", str(deployment.hq)), 4, "chmod 600")


def test_damaged_identity_file(cli: Cli, deployment: Deployment) -> None:
    (deployment.hq / "identity" / "node.crt").write_text("garbage")
    fails(cli("status", "--home", str(deployment.hq)), 5, "damaged")
    (deployment.hq / "identity" / "node.crt").unlink()
    fails(cli("status", "--home", str(deployment.hq)), 4, "missing")


def test_unreadable_passphrase_file(cli: Cli, deployment: Deployment) -> None:
    fails(
        cli(
            "deployment", "issue", "--home", str(deployment.hq), "--name", "n", "--site", "s",
            "--role", "desk", "--out", str(deployment.root / "n.kit"),
            "--passphrase-file", str(deployment.root / "missing.txt"),
        ),
        5,
        "cannot read passphrase file",
    )  # fmt: skip
    assert not (deployment.root / "n.kit").exists()


# -- the installed console script --------------------------------------------------


@pytest.fixture
def console_script() -> str:
    path = shutil.which("meshdesk", path=str(Path(sys.executable).parent))
    assert path is not None, "the meshdesk console script is not installed next to python"
    return path


def test_console_script_version_and_error(console_script: str, tmp_path: Path) -> None:
    version = subprocess.run(
        [console_script, "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0
    assert version.stdout.strip() == f"meshdesk {__version__}"
    missing = subprocess.run(
        [console_script, "status", "--home", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert missing.returncode == 4
    assert missing.stderr.startswith("meshdesk: error: no meshdesk home")
    assert "Traceback" not in missing.stderr


def test_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshdesk", "status", "--home", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 4
