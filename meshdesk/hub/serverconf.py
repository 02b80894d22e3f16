"""A prefecture hub server's whole configuration, from the prefecture home
(``meshdesk prefecture hub-config``; the test bed and the lab test render theirs
here too).

What goes in: the server's certificate (``meshdesk prefecture issue-server``), the
authorization block of the roster as it is now (admitted cities, and the
prefecture's hub clients held to their allow lists:
:func:`~meshdesk.hub.natsconf.hub_authorization`), and the server's addresses;
:func:`~meshdesk.hub.natsconf.hub_server_config` places them. After a city is
admitted or revoked the file is written again with the same plan and the server
reloads it (``nats-server --signal reload``, or SIGHUP): the users change, nothing
else does.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meshdesk._fs import write_private
from meshdesk.config import Endpoint
from meshdesk.errors import HomeError
from meshdesk.hub.natsconf import TlsFiles, hub_authorization, hub_server_config
from meshdesk.prefecture.home import PrefectureHome

__all__ = ["HubServerPlan", "hub_server_text", "write_hub_server_config"]


@dataclass(frozen=True, slots=True)
class HubServerPlan:
    """Where one hub server listens and keeps its data.

    ``tls_dir``: the folder that holds the server's certificate, key and the
    prefecture CA on the server's own machine (named as in the prefecture home's
    ``servers/`` and ``ca.crt``); None names the prefecture home's own files (a
    server on the prefecture's machine).
    """

    name: str
    listen: Endpoint
    cluster: Endpoint
    leaf: Endpoint
    routes: tuple[Endpoint, ...]
    store_dir: Path
    http: Endpoint | None = None
    tls_dir: Path | None = None

    def tls(self, prefecture: PrefectureHome) -> TlsFiles:
        files = prefecture.server_files(self.name)
        if self.tls_dir is None:
            return TlsFiles(files.cert_path, files.key_path, files.ca_path)
        d = self.tls_dir
        return TlsFiles(d / files.cert_path.name, d / files.key_path.name, d / files.ca_path.name)


def hub_server_text(
    prefecture: PrefectureHome, plan: HubServerPlan, *, now: dt.datetime, header: str | None = None
) -> str:
    """The configuration text of ``plan``'s server, with the roster as it is now.

    Raises:
        HomeError: the server has no certificate in the prefecture home yet.
        AuthError: the roster or a hub client certificate does not check.
        ValueError: a value that cannot be written into NATS configuration text.
    """
    files = prefecture.server_files(plan.name)
    if not files.cert_path.is_file():
        raise HomeError(
            f"hub server {plan.name} has no certificate in {prefecture.path}:"
            f" run `meshdesk prefecture issue-server {plan.name} --host …` first"
        )
    users = hub_authorization(prefecture.load_roster(), prefecture.client_subjects(), now=now)
    return hub_server_config(name=plan.name, listen=plan.listen, cluster=plan.cluster,
                             leaf=plan.leaf, routes=plan.routes, store_dir=plan.store_dir,
                             tls=plan.tls(prefecture), authorization=users, http=plan.http,
                             header=header)  # fmt: skip


def write_hub_server_config(
    prefecture: PrefectureHome,
    plan: HubServerPlan,
    out: Path,
    *,
    now: dt.datetime,
    command: Sequence[str] = (),
) -> str:
    """Write ``plan``'s configuration to ``out`` (owner-only, atomically: a server
    reloading meanwhile reads the old file or the new one); returns the text.
    ``command``: the command line that wrote it, named in the file's header so the
    next operator runs the same one after a revocation.

    Raises:
        HomeError: as :func:`hub_server_text`, or ``out`` cannot be written.
    """
    again = shlex.join(command)
    if not again.isprintable():  # one comment line, whatever the arguments held
        again = "meshdesk prefecture hub-config …"
    header = (
        f"# Hub server {plan.name} of {prefecture.path}: written by meshdesk at"
        f" {now:%Y-%m-%d %H:%M} UTC.\n"
        "# After a city is admitted or revoked, write it again and reload the server:\n"
        f"#   {again or 'meshdesk prefecture hub-config …'}\n"
        "#   nats-server --signal reload   (or: kill -HUP <pid>)\n"
    )
    text = hub_server_text(prefecture, plan, now=now, header=header)
    try:
        write_private(out, text.encode("utf-8"), overwrite=True)
    except OSError as exc:
        raise HomeError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return text
