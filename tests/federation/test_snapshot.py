"""The snapshot format (fedgate-view/2): a digest over every line, every line decoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation.model import GatewayRecord
from federation.snapshot import (
    FORMAT,
    SnapshotError,
    decode_view,
    encode_view,
    load_snapshot,
    write_snapshot,
)
from federation.view import same_content
from tests.federation.test_view import LAYOUT, base_facts


def test_a_changed_or_cut_snapshot_is_refused(tmp_path: Path) -> None:
    f = base_facts()
    f.put(LAYOUT.gateway("a", "gw-a"), GatewayRecord(id="gw-a", cluster="a"))
    view = f.view()
    data = encode_view(view)
    assert same_content(decode_view(data), view)
    tampered = data.replace(b'"gw-a"', b'"gw-b"')
    assert tampered != data
    with pytest.raises(SnapshotError, match="digest mismatch"):
        decode_view(tampered)
    with pytest.raises(SnapshotError, match="digest mismatch"):
        decode_view(data[:-10])
    path = tmp_path / "view.json"
    path.write_bytes(tampered)
    assert load_snapshot(path) is None  # logged and ignored: the gateway waits for etcd
    write_snapshot(path, view)
    assert load_snapshot(path) is not None


def test_a_snapshot_with_a_good_digest_but_bad_items_is_refused() -> None:
    import hashlib

    data = encode_view(base_facts().view())
    _, _, body = data.partition(b"\n")
    for bad_line in (b'["service",{"name":3}]', b'["nosuchpart",{}]', b"[1,2,3]", b"{"):
        forged = body + bad_line + b"\n"
        digest = hashlib.sha256(forged).hexdigest()
        header = json.dumps({"format": FORMAT, "sha256": digest}).encode()
        with pytest.raises(SnapshotError, match=r"bad snapshot|not valid"):
            decode_view(header + b"\n" + forged)


def test_the_old_format_is_refused() -> None:
    with pytest.raises(SnapshotError, match="not a fedgate-view/2"):
        decode_view(json.dumps({"format": "fedgate-view/1", "clusters": []}).encode())
