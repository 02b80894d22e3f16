"""The one error tree of meshdesk.

Every failure a user or a peer can cause is a :class:`MeshdeskError`. Errors of
third-party libraries are translated where meshdesk calls them
(``raise StoreError(...) from exc``), so callers and the CLI only ever handle this
tree. The CLI prints ``str(error)`` as one line and exits with ``exit_code``.

::

    MeshdeskError
    ├── UsageError       arguments name nothing, or something ambiguous
    ├── ConfigError      bad or unreadable config.toml, unknown key, bad value
    ├── HomeError        node home missing, not provisioned, or already provisioned
    ├── KitError         node kit unreadable, truncated, tampered, wrong passphrase
    ├── AuthError        certificate not of this deployment, revoked, bad signature
    ├── StoreError       database corrupt, of a newer schema, or unwritable
    │   └── StoreFull    the disk is full: nothing written; retried when space returns
    ├── WireError        malformed, oversized or unknown frame
    ├── LinkError        a link to a peer failed or closed
    │   └── ChannelClosed   the channel is closed (EOF, goodbye, reset)
    ├── SyncError        replication refused a batch (added with replication)
    ├── CallError        a call could not be placed or kept (added with calls)
    ├── DrillError       a drill scenario is malformed or a drill could not run
    │   └── DrillFailed     the drill ran, but records were lost or stores did not converge
    └── LabError         the network lab (field-kit/lab) failed: tests, benches, drills, demo
        └── LabUnsupported  this machine cannot do it (e.g. netem delay without sch_netem)
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "CallError",
    "ChannelClosed",
    "ConfigError",
    "DrillError",
    "DrillFailed",
    "HomeError",
    "KitError",
    "LabError",
    "LabUnsupported",
    "LinkError",
    "MeshdeskError",
    "StoreError",
    "StoreFull",
    "SyncError",
    "UsageError",
    "WireError",
]


class MeshdeskError(Exception):
    """Root of every error meshdesk raises on purpose."""

    #: Process exit code the CLI uses when this error ends a command.
    exit_code: int = 1


class UsageError(MeshdeskError):
    """A command's arguments name nothing that exists, or more than one thing."""

    exit_code = 2


class ConfigError(MeshdeskError):
    """The node's configuration file is unreadable or holds a bad key or value."""

    exit_code = 3


class HomeError(MeshdeskError):
    """The node home is missing, not provisioned, or provisioned already."""

    exit_code = 4


class KitError(MeshdeskError):
    """A node kit cannot be used: unreadable, truncated, tampered, wrong passphrase."""

    exit_code = 5


class AuthError(MeshdeskError):
    """A certificate, signature or revocation list does not hold up."""

    exit_code = 6


class StoreError(MeshdeskError):
    """The local database cannot be used (corrupt, newer schema, I/O failure)."""

    exit_code = 7


class StoreFull(StoreError):
    """The disk holding the database is full: nothing of the write was stored.

    Not a fault of the data: once space is freed the same write succeeds, so sync
    defers such runs instead of refusing them.
    """


class WireError(MeshdeskError):
    """Bytes from the network are not a valid meshdesk frame."""

    exit_code = 8


class LinkError(MeshdeskError):
    """A link to a peer could not be opened or kept up."""

    exit_code = 11


class ChannelClosed(LinkError):
    """The channel is closed: the peer said goodbye, hung up, or it was closed here."""


class SyncError(MeshdeskError):
    """Replication refused or could not apply what a peer sent."""

    exit_code = 9


class CallError(MeshdeskError):
    """A call could not be placed, accepted or kept up."""

    exit_code = 10


class DrillError(MeshdeskError):
    """A drill scenario is malformed (the message names the line), or the drill
    cannot run here (lab mode without root, a scenario the mode cannot play)."""

    exit_code = 12


class DrillFailed(DrillError):
    """The drill ran to the end, but records were lost or the stores did not converge.

    The report is written before this is raised; it says what went wrong.
    """

    exit_code = 13


class LabError(MeshdeskError):
    """The network lab (``field-kit/lab``) failed, or a program in a lab host did.

    Not a user's mistake in the product: it comes from the harness that tests,
    benches, drills and the demo share (:mod:`meshdesk.lab`).
    """


class LabUnsupported(LabError):
    """This machine cannot do what was asked of the lab (a kernel feature is missing)."""
