"""Console fixtures: a fake node with a little deployment, and the app over it."""

from __future__ import annotations

import pytest

from meshdesk.tui.fake import FIXED_MS, FakeNode


@pytest.fixture
def fake() -> FakeNode:
    node = FakeNode(departments=("welfare", "housing"))
    node.add_peer("第一小学校避難所", "大町地区", departments=("welfare",), outbox=4, inbox=1)
    node.add_peer("Civic Gym shelter", "Minami ward", state="down", outbox=12)
    node.peer_list[1]["last_seen_ms"] = FIXED_MS - 95_000
    return node


SIZE = (120, 36)
