"""The snapshot written by a child process fed only what changed (federation.snapshot_writer).

Real processes: every test runs the real ``python -m federation.snapshot_child``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
from pathlib import Path
from types import MappingProxyType

import pytest

from federation.model import (
    Endpoint,
    GatewayRecord,
    HealthState,
    Observation,
    RoutingView,
    Zone,
)
from federation.snapshot import decode_view, load_snapshot
from federation.snapshot_delta import Touched, changes
from federation.snapshot_writer import SnapshotWriter, snapshot_part
from federation.view import same_content
from federation.viewstate import ViewState
from tests.federation.test_view import LAYOUT, Facts, base_facts, cluster, service
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.timeout(60)
ROOT = str(Path(__file__).resolve().parents[2])


class Feed:
    """A ViewState fed puts one delta at a time, as the watcher feeds it."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.state = ViewState(LAYOUT)
        self.view = self.state.apply(dict(facts.kvs), revision=facts.revision, now=1.0)

    def put(self, key: str, value: object) -> list[str]:
        self.facts.put(key, value)
        self.view = self.state.apply(
            {key: self.facts.kvs[key]}, revision=self.facts.revision, now=1.0
        )
        return [key]

    def delete(self, key: str) -> list[str]:
        self.facts.delete(key)
        self.view = self.state.apply({key: None}, revision=self.facts.revision, now=1.0)
        return [key]


def richer_facts() -> Facts:
    f = base_facts()
    f.put(LAYOUT.federation(), {"name": "acme", "zones": [{"name": "acme.test"}]})
    f.put(LAYOUT.gateway("a", "gw-a"), GatewayRecord(id="gw-a", cluster="a"))
    f.put(
        LAYOUT.endpoints("shop", "a", "gw-a"),
        [Endpoint("10.1.0.1:8080", "a", "shop", source="kubernetes")],
    )
    f.put(LAYOUT.service("bad"), b"{")  # a rejection
    return f


def on_disk(path: Path) -> RoutingView | None:
    return load_snapshot(path) if path.exists() else None


async def test_round_trip_through_the_writer_process(tmp_path: Path) -> None:
    """Every kind of item goes over, changes and deletions follow, close writes the last."""
    path = tmp_path / "state" / "view.json"
    feed = Feed(richer_facts())
    writer = SnapshotWriter(path, layout=LAYOUT, debounce=0.01, min_interval=0.0)
    try:
        writer.schedule(feed.view, None)
        await writer.flush()
        first = on_disk(path)
        assert first is not None and same_content(first, snapshot_part(feed.view))
        assert first.zones == (Zone(name="acme.test"),) and first.rejected
        whole = writer.blocks_sent

        # one change of each kind: a gateway, an endpoint list, a service, a deletion
        keys = feed.put(
            LAYOUT.gateway("a", "gw-a"), GatewayRecord(id="gw-a", cluster="a", dns="x:53")
        )
        writer.schedule(feed.view, keys)
        keys = feed.put(
            LAYOUT.endpoints("shop", "b", "gw-b"),
            [Endpoint("10.2.0.1:8080", "b", "shop", source="kubernetes")],
        )
        writer.schedule(feed.view, keys)
        static = MappingProxyType({"b": ("10.0.0.5:8080", "10.0.0.6:8080")})
        keys = feed.put(LAYOUT.service("shop"), service("shop", ("a", "b"), endpoints=static))
        writer.schedule(feed.view, keys)
        keys = feed.delete(LAYOUT.endpoints("shop", "a", "gw-a"))
        writer.schedule(feed.view, keys)
        await writer.flush()
        second = on_disk(path)
        assert second is not None and same_content(second, snapshot_part(feed.view))
        assert second.revision == feed.view.revision
        assert second.gateways["gw-a"].dns == "x:53"
        assert len(second.endpoints_of("shop", "b")) == 3  # 2 static, 1 discovered
        assert ("shop", "a") not in second.endpoints
        # only the changed blocks were encoded: the gateway, two endpoint pairs (the
        # static one of the changed service among them), the service and the deletion
        assert writer.blocks_sent - whole <= 5
    finally:
        await writer.close()
    last = on_disk(path)
    assert last is not None and same_content(last, snapshot_part(feed.view))
    assert [p.name for p in path.parent.iterdir()] == ["view.json"]  # no temporary file


def test_a_health_write_changes_no_block() -> None:
    feed = Feed(richer_facts())
    before = feed.view
    keys = feed.put(
        LAYOUT.health_summary("a", "shop"),
        [Observation("gw-a", "a", "shop", "a", HealthState.HEALTHY, healthy=1, total=1, at=1.0)],
    )
    assert feed.view.observations != before.observations  # the view did change ...
    touched = Touched()
    touched.add(LAYOUT, keys)
    assert not touched.gateways and not touched.pairs
    assert list(changes(before, feed.view, touched)) == []  # ... not its snapshot part
    keys = feed.put(LAYOUT.gateway("b", "gw-b"), GatewayRecord(id="gw-b", cluster="b"))
    touched.add(LAYOUT, keys)
    assert [(t, k) for t, k, _ in changes(before, feed.view, touched)] == [("gateway", "gw-b")]
    # without the keys (a full reload) the parts are compared whole: the same answer
    assert [(t, k) for t, k, _ in changes(before, feed.view, None)] == [("gateway", "gw-b")]


async def test_a_killed_writer_process_is_restarted_and_the_snapshot_still_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="federation.snapshot_writer")
    path = tmp_path / "view.json"
    feed = Feed(richer_facts())
    writer = SnapshotWriter(path, layout=LAYOUT, debounce=0.01, min_interval=0.0)
    try:
        writer.schedule(feed.view, None)
        await writer.flush()
        pid = writer.pid
        assert pid is not None and on_disk(path) is not None
        os.kill(pid, signal.SIGKILL)
        await async_wait_for(lambda: writer.restarts >= 1 and writer.pid not in (None, pid),
                             timeout=20, what="a new writer process")  # fmt: skip
        keys = feed.put(LAYOUT.cluster("c"), cluster("c"))
        writer.schedule(feed.view, keys)

        def written() -> bool:
            view = on_disk(path)
            return view is not None and "c" in view.clusters

        # written by the new child alone (min_interval 0: at once), no flush asked
        await async_wait_for(written, timeout=20, what="the change written by the new child")
        view = on_disk(path)
        assert view is not None and same_content(view, snapshot_part(feed.view))
    finally:
        await writer.close()
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    exits = [e for e in events if e["event"] == "snapshot.writer_exited"]
    assert exits and exits[0]["returncode"] == -signal.SIGKILL and exits[0]["restart_in"] > 0


async def test_writes_are_coalesced(tmp_path: Path) -> None:
    path = tmp_path / "view.json"
    feed = Feed(richer_facts())
    writer = SnapshotWriter(path, layout=LAYOUT, debounce=0.0, min_interval=30.0)
    try:
        writer.schedule(feed.view, None)
        await writer.flush()
        assert writer.writes == 1
        for i in range(30):
            keys = feed.put(LAYOUT.cluster(f"x{i}"), cluster(f"x{i}"))
            writer.schedule(feed.view, keys)
            await async_wait_for(lambda n=i + 2: writer.handovers >= n, what="a hand-over")
        assert writer.writes == 1  # 30 hand-overs, no write within min_interval
    finally:
        await writer.close()  # ... but the last state is written at the end
    assert writer.writes == 2
    view = on_disk(path)
    assert view is not None and same_content(view, snapshot_part(feed.view))


@pytest.mark.parametrize("damage", ["flip", "cut", "empty", "old"])
async def test_a_damaged_snapshot_is_refused_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    caplog.set_level(logging.WARNING, logger="federation.snapshot")
    path = tmp_path / "view.json"
    writer = SnapshotWriter(path, layout=LAYOUT, debounce=0.0)
    writer.schedule(Feed(richer_facts()).view, None)
    await writer.close()
    data = path.read_bytes()
    assert decode_view(data) is not None
    damaged = {
        "flip": data.replace(b'"gw-a"', b'"gw-x"'),
        "cut": data[: len(data) // 2],
        "empty": b"",
        "old": b'{"format": "fedgate-view/1", "clusters": []}',
    }[damage]
    path.write_bytes(damaged)
    assert load_snapshot(path) is None  # the gateway then waits for etcd
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    ignored = [e for e in events if e["event"] == "snapshot.ignored"]
    assert len(ignored) == 1 and "\n" not in ignored[0]["error"]


def test_writer_process_with_no_input_writes_nothing(tmp_path: Path) -> None:
    """EOF before any commit: nothing half-made on disk."""
    import subprocess
    import sys

    path = tmp_path / "view.json"
    done = subprocess.run(
        [sys.executable, "-m", "federation.snapshot_child", str(path), "0"],
        input=b"", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == b"" and not path.exists()


async def test_the_last_view_reaches_disk_when_the_gateway_dies(tmp_path: Path) -> None:
    """The gateway SIGKILLed: the child sees the end of its pipe and writes what it holds."""
    import asyncio
    import sys

    path = tmp_path / "view.json"
    script = f"""
import asyncio, sys
sys.path.insert(0, {ROOT!r})
from federation.snapshot_writer import SnapshotWriter
from tests.federation.test_view import LAYOUT
from tests.federation.test_snapshot_writer import Feed, richer_facts
from tests.federation.test_view import cluster

async def main():
    w = SnapshotWriter({str(path)!r}, layout=LAYOUT, debounce=0.0, min_interval=3600.0)
    feed = Feed(richer_facts())
    w.schedule(feed.view, None)
    await w.flush()
    keys = feed.put(LAYOUT.cluster("late"), cluster("late"))
    w.schedule(feed.view, keys)
    deadline = asyncio.get_running_loop().time() + 30
    while w.handovers < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # poll under a deadline
    print("handed" if w.handovers >= 2 else "not handed", flush=True)
    await asyncio.sleep(3600)  # pacing: parked until the test SIGKILLs this process

asyncio.run(main())
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        assert await proc.stdout.readline() == b"handed\n"
    first = on_disk(path)
    assert first is not None and "late" not in first.clusters  # min_interval: not yet
    proc.kill()
    await proc.wait()

    def written() -> bool:
        view = on_disk(path)
        return view is not None and "late" in view.clusters

    await async_wait_for(written, timeout=20, what="the child's last write")


async def test_a_large_service_is_encoded_route_by_route(tmp_path: Path) -> None:
    """A service of many routes is encoded in pieces (the loop served between them) that
    make exactly its line."""
    from federation.model import Route
    from federation.snapshot import line
    from federation.snapshot_writer import _pieces

    routes = tuple(Route(host="one.example.com", path_prefix=f"/p{i}") for i in range(300))
    big = dataclasses.replace(service("shop", ("a", "b")), routes=routes)
    pieces = list(_pieces("service", big))
    assert len(pieces) == 302 and b"".join(pieces) == line("service", big)

    feed = Feed(richer_facts())
    path = tmp_path / "view.json"
    writer = SnapshotWriter(path, layout=LAYOUT, debounce=0.0)
    try:
        writer.schedule(feed.view, None)
        keys = feed.put(LAYOUT.service("shop"), big)
        writer.schedule(feed.view, keys)
        await writer.flush()
    finally:
        await writer.close()
    view = on_disk(path)
    assert view is not None and view.services["shop"].routes == routes


async def test_a_cut_snapshot_is_refused_and_the_gateway_waits_for_etcd(
    etcd: EtcdCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real watcher writes the snapshot through the child; the file cut in half is
    refused with one line, nothing is served, and etcd's view comes when etcd does."""
    from federation.etcd import EtcdClient
    from tests.federation.test_etcd_faults import watchers
    from tests.federation.test_watch import seed

    caplog.set_level(logging.WARNING)
    snapshot = tmp_path / "view.json"
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with watchers([etcd.endpoints], snapshot_path=str(snapshot)) as (run,):
            await run.reaches(rev)
    data = snapshot.read_bytes()
    assert decode_view(data).revision == rev  # written at the watcher's end
    snapshot.write_bytes(data[: len(data) // 2])
    etcd.stop()
    async with watchers([etcd.endpoints], snapshot_path=str(snapshot)) as (run,):
        await async_wait_for(lambda: run.watcher.stats.snapshot_loaded, timeout=20)
        assert run.views == []  # nothing served from a cut file
        events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
        ignored = [e for e in events if e["event"] == "snapshot.ignored"]
        assert len(ignored) == 1 and "digest mismatch" in ignored[0]["error"]
        assert "\n" not in ignored[0]["error"]
        assert any(e["event"] == "watch.no_snapshot" for e in events)
        etcd.restart()
        view = await run.reaches(rev, timeout=20)
        assert view.source == "etcd" and not view.stale


async def test_a_stopped_writer_process_blocks_nothing(tmp_path: Path) -> None:
    """A child that stops reading (SIGSTOP): updates go on, close() ends within its
    timeouts, the last view is written by the gateway itself and the child is killed."""
    import asyncio
    import time

    path = tmp_path / "view.json"
    feed = Feed(richer_facts())
    writer = SnapshotWriter(path, layout=LAYOUT, debounce=0.0, flush_timeout=1.0)
    writer.schedule(feed.view, None)
    await writer.flush()
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(20):
            keys = feed.put(LAYOUT.cluster(f"x{i}"), cluster(f"x{i}"))
            writer.schedule(feed.view, keys)
            await asyncio.sleep(0)  # the hand-overs run: into a pipe nobody reads
        started = time.monotonic()
        await writer.close()
        assert time.monotonic() - started < 15
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    view = on_disk(path)
    assert view is not None and same_content(view, snapshot_part(feed.view))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
