"""Who a node is and who trusts it: node IDs, the deployment CA, kits, revocation."""

from __future__ import annotations

from meshdesk.identity.kit import KIT_VERSION, NodeKit, read_passphrase
from meshdesk.identity.nodeid import NodeId
from meshdesk.identity.pki import (
    CertificateAuthority,
    NodeInfo,
    Role,
    check_label,
    deployment_id,
    node_info,
    verify_node_cert,
)
from meshdesk.identity.revocation import RevocationList

__all__ = [
    "KIT_VERSION",
    "CertificateAuthority",
    "NodeId",
    "NodeInfo",
    "NodeKit",
    "RevocationList",
    "Role",
    "check_label",
    "deployment_id",
    "node_info",
    "read_passphrase",
    "verify_node_cert",
]
