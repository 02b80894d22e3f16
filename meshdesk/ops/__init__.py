"""Control operations: one registry of name → argument schema, help and handler.

:data:`OPS` holds every operation a node serves on its control socket, by topic:
node (:mod:`meshdesk.ops.node`), case (:mod:`meshdesk.ops.cases`), call
(:mod:`meshdesk.ops.calls`), invite (:mod:`meshdesk.ops.invites`), notice
(:mod:`meshdesk.ops.notices`) and bundle (:mod:`meshdesk.ops.bundles`). The node
serves it over its parts, the CLI runs the case topic on a store when no node
runs and builds ``meshdesk case …`` from it, and the console's fake node checks
every request through it too. Arguments are checked against the operation's
schema before a handler runs (:mod:`meshdesk.ops._schema`), so a bad one is
refused in one place, the same way for every client.

The wire shape stays one JSON object per line: ``{"op": NAME, "args": {...}}``.
"""

from __future__ import annotations

from meshdesk.ops._registry import Binding, Dispatcher, OpSpec, Registry, Topic
from meshdesk.ops._schema import (
    Args,
    Kind,
    Param,
    check_args,
    choice,
    date,
    flag,
    integer,
    text,
    texts,
)
from meshdesk.ops.bundles import BUNDLE_OPS
from meshdesk.ops.calls import CALL_OPS
from meshdesk.ops.cases import CASE_OPS
from meshdesk.ops.invites import INVITE_OPS
from meshdesk.ops.node import NODE_OPS, NodeParts
from meshdesk.ops.notices import NOTICE_OPS

__all__ = [
    "BUNDLE_OPS",
    "CALL_OPS",
    "CASE_OPS",
    "INVITE_OPS",
    "NODE_OPS",
    "NOTICE_OPS",
    "OPS",
    "Args",
    "Binding",
    "Dispatcher",
    "Kind",
    "NodeParts",
    "OpSpec",
    "Param",
    "Registry",
    "Topic",
    "check_args",
    "choice",
    "date",
    "flag",
    "integer",
    "text",
    "texts",
]

#: Every operation of the control socket.
OPS = Registry(NODE_OPS, CASE_OPS, CALL_OPS, INVITE_OPS, NOTICE_OPS, BUNDLE_OPS)
