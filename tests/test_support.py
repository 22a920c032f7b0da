"""The test support itself: a real etcd starts, answers and stops."""

from __future__ import annotations

import json
import urllib.request

from tests.support.etcd import EtcdCluster


def test_three_member_etcd_elects_a_leader_and_answers(etcd3: EtcdCluster) -> None:
    leader = etcd3.leader()
    assert leader in etcd3.members
    req = urllib.request.Request(
        f"{leader.client_url}/v3/kv/put",
        data=json.dumps({"key": "Zm9v", "value": "YmFy"}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.loads(r.read())["header"]["revision"] == "2"
