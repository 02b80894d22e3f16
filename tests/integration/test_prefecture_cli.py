"""The hub-join ceremony through the CLI: prefecture side, city HQ side, one-line errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from clirun import Cli, Run, cli_runner, fails, ok

from meshdesk.errors import AuthError
from meshdesk.home import NodeHome
from meshdesk.identity.certs import cert_pem, private_key_pem
from meshdesk.prefecture import HubCredential, load_city_hub


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("MESHDESK_HOME", raising=False)
    monkeypatch.delenv("MESHDESK_PREFECTURE_HOME", raising=False)
    return cli_runner(capsys)


@dataclass
class Setup:
    pref: Path
    prefecture_id: str
    hq: Path
    root: Path


@pytest.fixture
def setup(cli: Cli, tmp_path: Path) -> Setup:
    pref = tmp_path / "pref"
    made = ok(cli("prefecture", "init", "--home", str(pref), "--name", "静岡県", "--json")).json()
    ok(cli("prefecture", "issue-server", "hub1", "--home", str(pref), "--host", "hub1.example"))
    hq = tmp_path / "hq"
    ok(cli("deployment", "create", "--home", str(hq), "--name", "静岡市"))
    return Setup(pref, str(made["prefecture_id"]), hq, tmp_path)


def _issue(cli: Cli, s: Setup, code: str, out: Path, *extra: str, pref: Path | None = None) -> Run:
    home = str(pref or s.pref)
    return cli(
        "prefecture", "issue-city", code, "--home", home, "--name", "静岡市",
        "--hub", "tls://127.0.0.1:7422", "-o", str(out), "--json", *extra,
    )  # fmt: skip


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_join_pins_the_prefecture_ca_and_revocation_unmaps_the_city(
    cli: Cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    cred = setup.root / "221007.cred"
    issued = ok(_issue(cli, setup, "221007", cred)).json()
    assert issued["servers"] == 1
    assert issued["prefecture_id"] == setup.prefecture_id

    # No terminal and no --yes: the fingerprint is shown, nothing is pinned.
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    refused = cli("hub", "join", str(cred), "--home", str(setup.hq))
    fails(refused, 2, "confirm the prefecture CA fingerprint")
    assert setup.prefecture_id in refused.out
    assert not (setup.hq / "hub").exists()

    joined = ok(cli("hub", "join", str(cred), "--home", str(setup.hq), "--yes", "--json")).json()
    assert joined["pinned_now"] is True
    assert joined["city_code"] == "221007"
    hub = setup.hq / "hub"
    assert stat.S_IMODE(os.stat(hub).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(hub / "city.key").st_mode) == 0o600
    pinned = (hub / "prefecture-ca.crt").read_bytes()
    assert pinned == (setup.pref / "ca.crt").read_bytes()

    listed = ok(cli("prefecture", "list", "--home", str(setup.pref), "--json")).json()
    cities = listed["cities"]
    assert isinstance(cities, list)
    subject = cities[0]["subject"]
    authz = ok(cli("prefecture", "authorization", "--home", str(setup.pref))).out
    # The block the hub servers run (hub-config writes the same): a city as a leaf
    # node only, carrying only the sourcing of its stream.
    (line,) = [x for x in authz.splitlines() if f'user: "{subject}"' in x]
    assert 'allowed_connection_types: ["LEAFNODE"]' in line
    assert 'publish: {allow: ["$JS.S.>", "$JSC.R.>"]}' in line

    # The projection's identity (meshdesk hub run) is admitted beside the cities.
    client = ok(cli("prefecture", "issue-client", "--home", str(setup.pref), "--json")).json()
    assert client["name"] == "projection"
    assert Path(str(client["cert_path"])).is_file()
    fails(cli("prefecture", "issue-client", "--home", str(setup.pref)), 4, "already")

    ok(cli("prefecture", "revoke", "221007", "--home", str(setup.pref), "--reason", "盗難"))
    authz = ok(cli("prefecture", "authorization", "--home", str(setup.pref))).out
    assert subject not in authz
    assert "CN=projection,OU=hub client," in authz
    listing = ok(cli("prefecture", "list", "--home", str(setup.pref))).out
    assert "REVOKED" in listing
    assert "盗難" in listing
    fails(cli("prefecture", "revoke", "221007", "--home", str(setup.pref), "--reason", "x"),
          2, "revoked already")  # fmt: skip

    # Re-admitted with a new credential: the join keeps the pin and swaps the rest.
    again = setup.root / "221007-2.cred"
    ok(_issue(cli, setup, "221007", again))
    rejoined = ok(cli("hub", "join", str(again), "--home", str(setup.hq), "--json")).json()
    assert rejoined["pinned_now"] is False
    assert (hub / "prefecture-ca.crt").read_bytes() == pinned

    # What the city's leaf node loads: the new credential, checked against the pin.
    loaded = load_city_hub(NodeHome(setup.hq), now=dt.datetime.now(dt.UTC))
    assert loaded.cert == HubCredential.read(again, now=dt.datetime.now(dt.UTC)).cert
    assert loaded.urls == ("tls://127.0.0.1:7422",)
    assert len(loaded.servers) == 1
    (hub / "city.crt").write_bytes(cred.read_bytes())  # not a certificate any more
    with pytest.raises(AuthError, match=r"city\.crt is damaged"):
        load_city_hub(NodeHome(setup.hq), now=dt.datetime.now(dt.UTC))


def test_join_refuses_another_prefecture_tampering_and_non_hq(
    cli: Cli, setup: Setup, tmp_path: Path
) -> None:
    cred = tmp_path / "221007.cred"
    ok(_issue(cli, setup, "221007", cred))
    ok(cli("hub", "join", str(cred), "--home", str(setup.hq), "--yes"))
    before = _digest(setup.hq / "hub")

    # A credential from another prefecture's CA, after the pin: refused, nothing changes.
    other = tmp_path / "other"
    ok(cli("prefecture", "init", "--home", str(other), "--name", "愛知県"))
    foreign = tmp_path / "foreign.cred"
    ok(_issue(cli, setup, "221007", foreign, pref=other))
    fails(cli("hub", "join", str(foreign), "--home", str(setup.hq), "--yes"), 6, "pinned")
    assert _digest(setup.hq / "hub") == before

    # A protected credential: the join needs its passphrase.
    secret = tmp_path / "pass.txt"
    secret.write_text("浜名湖\n", "utf-8")
    sealed = tmp_path / "sealed.cred"
    made = ok(_issue(cli, setup, "221007", sealed, "--replace", "--passphrase-file", str(secret)))
    assert made.json()["protected"] is True
    join = ("hub", "join", str(sealed), "--home", str(setup.hq), "--yes")
    fails(cli(*join), 6, "--passphrase-file")
    ok(cli(*join, "--passphrase-file", str(secret)))
    before = _digest(setup.hq / "hub")

    # Same prefecture, another city: this HQ joined as 221007.
    hamamatsu = tmp_path / "221309.cred"
    ok(_issue(cli, setup, "221309", hamamatsu))
    fails(cli("hub", "join", str(hamamatsu), "--home", str(setup.hq), "--yes"), 2, "as city 221007")

    # Tampered and truncated files: one clear line each.
    text = cred.read_text("utf-8")
    cut = tmp_path / "cut.cred"
    cut.write_text(text[: len(text) // 2], "utf-8")
    fails(cli("hub", "join", str(cut), "--home", str(setup.hq), "--yes"), 6, "hub credential")
    edited = tmp_path / "edited.cred"
    at = text.index("-----BEGIN") + 80
    edited.write_text(text[:at] + ("Q" if text[at] != "Q" else "R") + text[at + 1 :], "utf-8")
    fails(cli("hub", "join", str(edited), "--home", str(setup.hq), "--yes"), 6, "hub credential")
    assert _digest(setup.hq / "hub") == before

    # Only an HQ joins: a centre of the same city gets one line.
    kit = tmp_path / "centre.kit"
    ok(cli("deployment", "issue", "--home", str(setup.hq), "--name", "第一小学校", "--site",
           "大町", "--role", "center", "--out", str(kit)))  # fmt: skip
    centre = tmp_path / "centre"
    ok(cli("init", "--home", str(centre), "--kit", str(kit)))
    fails(cli("hub", "join", str(cred), "--home", str(centre), "--yes"), 2, "only the city's HQ")
    assert not (centre / "hub").exists()

    # The prefecture side's own mistakes.
    fails(_issue(cli, setup, "221008", tmp_path / "x.cred"), 2, "wrong check digit")
    fails(_issue(cli, setup, "221007", cred), 2, "exists")
    fails(cli("prefecture", "list", "--home", str(tmp_path / "nowhere")), 4, "no prefecture CA")

    # Files swapped behind the HQ's back: the leaf node's loader checks the pin again.
    now = dt.datetime.now(dt.UTC)
    alien = HubCredential.read(foreign, now=now)
    (setup.hq / "hub" / "city.crt").write_bytes(cert_pem(alien.cert))
    (setup.hq / "hub" / "city.key").write_bytes(private_key_pem(alien.key))
    with pytest.raises(AuthError, match="not signed by the prefecture CA"):
        load_city_hub(NodeHome(setup.hq), now=now)
