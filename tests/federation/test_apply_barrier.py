"""``fedgate apply`` at any size, against a real etcd with small limits: several
transactions behind the ``applying`` barrier, limits asked of etcd, a failed or killed
apply leaves the barrier, a concurrent apply is detected, ``--force`` and the exit codes
of ``--dry-run --detailed-exitcode``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.genmanifest import generate
from federation.cli import CommandError, main
from federation.commands import apply as apply_cmd
from federation.etcd import EtcdClient, EtcdError
from federation.keys import KeyLayout
from federation.manifest import load_manifest
from federation.store import ApplyRefused, apply_federation
from federation.txnsize import Limits, probe_limits
from tests.support.etcd import EtcdCluster

LAYOUT = KeyLayout("/fedgate/")
MAX_OPS = 8
MAX_BYTES = 32 * 1024


@pytest.fixture
def small_etcd() -> Iterator[EtcdCluster]:
    """An etcd that allows 8 operations and 32 KiB per transaction."""
    extra = ["--max-txn-ops", str(MAX_OPS), "--max-request-bytes", str(MAX_BYTES)]
    with EtcdCluster(size=1, extra_args=extra) as cluster:
        yield cluster


def write(tmp_path: Path, text: str, name: str = "fed.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def cli(etcd: EtcdCluster, *args: str) -> int:
    return main(["apply", *args, "--etcd", ",".join(etcd.endpoints)])


def snapshot(etcd: EtcdCluster, revision: int = 0) -> tuple[int, dict[str, bytes]]:
    async def read() -> tuple[int, dict[str, bytes]]:
        async with EtcdClient(etcd.endpoints) as client:
            rev, kvs = await client.get_prefix(LAYOUT.prefix, revision=revision)
            return rev, {kv.key: kv.value for kv in kvs}

    return asyncio.run(read())


def args_for(etcd: EtcdCluster, path: str, **extra: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "file": path,
        "dry_run": False,
        "prune": False,
        "force": False,
        "etcd": ",".join(etcd.endpoints),
        "prefix": None,
    }
    values.update(extra)
    return argparse.Namespace(**values)


def test_limits_are_asked_of_etcd(small_etcd: EtcdCluster) -> None:
    async def probe() -> Limits:
        async with EtcdClient(small_etcd.endpoints) as client:
            return await probe_limits(
                client, LAYOUT.applying(), need_ops=500, need_bytes=200_000, ceiling=Limits()
            )

    limits = asyncio.run(probe())
    assert limits.max_ops == MAX_OPS and limits.probed
    assert limits.max_bytes <= MAX_BYTES
    assert snapshot(small_etcd)[1] == {}  # probing wrote nothing


def test_big_apply_behind_the_barrier(
    small_etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, generate(10))  # 31 keys, ~28 kB: several transactions
    seen: list[tuple[int, int]] = []

    async def during(done: int, total: int) -> None:
        async with EtcdClient(small_etcd.endpoints) as client:
            barrier = await client.get(LAYOUT.applying())
            assert barrier is not None, "the barrier is present during the apply"
            value = json.loads(barrier.value)
            assert value["generation"] == 1 and value["by"].endswith(f" {os.getpid()}")
            # what a watcher reads at the barrier's create revision - 1: the old config
            _, before = await client.get_prefix(LAYOUT.prefix, revision=barrier.create_revision - 1)
            assert before == []
        seen.append((done, total))

    assert apply_cmd.run(args_for(small_etcd, path), between=during) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(seen) >= 3 and seen[-1][0] == seen[-1][1] - 1
    transactions = seen[-1][1]
    assert out[-1].startswith(f"applied in {transactions} transactions behind the barrier")
    _, kvs = snapshot(small_etcd)
    assert LAYOUT.applying() not in kvs  # gone after
    assert json.loads(kvs[LAYOUT.generation()])["generation"] == 1
    fed = load_manifest(path)
    assert sum(1 for k in kvs if k.startswith(LAYOUT.prefix + "services/")) == len(fed.services)

    # one change afterwards: one transaction, generation 2, the value shown in the diff
    changed = generate(10).replace("attempts: 2", "attempts: 3", 1)
    assert cli(small_etcd, write(tmp_path, changed, "v2.yaml")) == 0
    out = capsys.readouterr().out.splitlines()
    assert "    retries.attempts: 2 -> 3" in out
    assert out[-1].startswith("applied in one transaction")
    assert json.loads(snapshot(small_etcd)[1][LAYOUT.generation()])["generation"] == 2


def test_failed_apply_leaves_the_barrier_and_needs_force(
    small_etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, generate(10))

    async def fail(done: int, total: int) -> None:
        if done == 2:
            raise EtcdError("etcd txn failed: injected")

    with pytest.raises(CommandError) as info:
        apply_cmd.run(args_for(small_etcd, path), between=fail)
    assert info.value.code == 1
    assert str(info.value).startswith("apply stopped after 2 of ")
    _, kvs = snapshot(small_etcd)
    assert LAYOUT.applying() in kvs and LAYOUT.generation() not in kvs

    # this (live) process holds the barrier: the next apply refuses without --force
    assert cli(small_etcd, path) == 1
    err = capsys.readouterr().err
    assert "an apply is in progress or died midway" in err and "--force" in err
    assert err.count("\n") == 1
    assert cli(small_etcd, path, "--dry-run") == 1  # the dry run says so too

    assert cli(small_etcd, path, "--force") == 0
    captured = capsys.readouterr()
    assert "note: taking over the barrier" in captured.err
    _, kvs = snapshot(small_etcd)
    assert LAYOUT.applying() not in kvs
    assert json.loads(kvs[LAYOUT.generation()])["generation"] == 2  # 1 was never finished


def test_killed_apply_is_resumed_from_the_same_host(
    small_etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, generate(40))  # ~120 transactions of 8 operations
    proc = subprocess.Popen(
        [sys.executable, "-m", "federation.cli", "apply", path, "--etcd", small_etcd.endpoint],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def wait_barrier() -> bool:
            async with EtcdClient(small_etcd.endpoints) as client:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and proc.poll() is None:
                    if await client.get(LAYOUT.applying()) is not None:
                        proc.send_signal(signal.SIGKILL)
                        return True
                    await asyncio.sleep(0.002)  # poll until the 30 s deadline above
            return False

        caught = asyncio.run(wait_barrier())
    finally:
        proc.kill()
        proc.wait(timeout=10)
    if not caught:  # pragma: no cover - the machine was too slow to see the barrier
        pytest.skip("the apply finished before its barrier was seen")
    _, kvs = snapshot(small_etcd)
    assert LAYOUT.applying() in kvs and LAYOUT.generation() not in kvs
    # the holder (this host, a dead pid) is gone: the next apply takes over by itself
    assert cli(small_etcd, path) == 0
    assert "note: taking over the barrier" in capsys.readouterr().err
    _, kvs = snapshot(small_etcd)
    assert LAYOUT.applying() not in kvs and LAYOUT.generation() in kvs


def test_concurrent_apply_is_detected(small_etcd: EtcdCluster, tmp_path: Path) -> None:
    big = load_manifest(write(tmp_path, generate(10)))
    other = load_manifest(write(tmp_path, generate(3, name="gen-10"), "small.yaml"))
    refused: list[str] = []

    async def run() -> None:
        async with EtcdClient(small_etcd.endpoints) as client:

            async def race(done: int, total: int) -> None:
                if done == 1:
                    try:
                        await apply_federation(client, LAYOUT, other)
                    except ApplyRefused as exc:
                        refused.append(str(exc))

            await apply_federation(client, LAYOUT, big, between=race)

    asyncio.run(run())
    assert refused and "an apply is in progress" in refused[0]
    _, kvs = snapshot(small_etcd)
    assert sum(1 for k in kvs if "/services/" in k) == len(big.services)


def test_a_write_between_read_and_barrier_writes_nothing(
    small_etcd: EtcdCluster, tmp_path: Path
) -> None:
    path = write(tmp_path, generate(10))

    async def race() -> None:
        async with EtcdClient(small_etcd.endpoints) as client:
            await client.put(LAYOUT.cluster("intruder"), b"{}")

    with pytest.raises(CommandError, match="concurrent change"):
        apply_cmd.run(args_for(small_etcd, path), before_write=race)
    _, kvs = snapshot(small_etcd)
    assert set(kvs) == {LAYOUT.cluster("intruder")}  # no barrier, nothing of the manifest


def test_dry_run_detailed_exitcode(
    etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, generate(3))
    assert cli(etcd, path, "--dry-run", "--detailed-exitcode") == 1  # changes
    assert cli(etcd, path) == 0
    assert cli(etcd, path, "--dry-run", "--detailed-exitcode") == 0  # none
    bad = write(tmp_path, generate(3).replace("port: 8080", "port: 0", 1), "bad.yaml")
    assert cli(etcd, bad, "--dry-run", "--detailed-exitcode") == 2  # invalid
    capsys.readouterr()
    assert cli(etcd, path, "--detailed-exitcode") == 2  # usage: needs --dry-run
    assert capsys.readouterr().err.count("\n") == 1
    # long values are cut in the diff
    long = generate(3).replace("path: /healthz", "path: /" + "h" * 200, 1)
    assert cli(etcd, write(tmp_path, long, "long.yaml"), "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert "~ service svc-00000: healthCheck" in out
    lines = [x for x in out if x.startswith("    healthCheck.path: ")]
    assert len(lines) == 1 and lines[0].endswith("…") and len(lines[0]) < 160


def test_another_federations_prefix_needs_force(
    etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(etcd, write(tmp_path, generate(3, name="acme"))) == 0
    other = write(tmp_path, generate(3, name="globex"), "other.yaml")
    capsys.readouterr()
    assert cli(etcd, other) == 1
    err = capsys.readouterr().err
    assert "holds federation 'acme', not 'globex'" in err and err.count("\n") == 1
    assert cli(etcd, other, "--force") == 0


@pytest.mark.parametrize("endpoint", ["localhost:abc", "ftp://127.0.0.1:1", "http://:2379"])
def test_bad_etcd_flag_is_one_line(
    endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["apply", write(tmp_path, generate(2)), "--etcd", endpoint])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fedgate apply: --etcd") and err.count("\n") == 1


@pytest.mark.parametrize(
    "clusters", [20, 300], ids=["too-many-operations", "grpc-message-too-large"]
)
def test_a_transaction_over_the_limit_is_one_line_at_once(
    small_etcd: EtcdCluster, tmp_path: Path, clusters: int
) -> None:
    """Sized for limits etcd does not have (no probing): etcd's "too many operations"
    (over --max-request-bytes) and gRPC's "larger than max" (over it + 512 KiB) are not
    retried; one line, at once."""
    from federation.store import execute, plan_apply, read_config
    from federation.txnsize import TxnTooLarge

    fed = load_manifest(write(tmp_path, generate(clusters)))

    async def run() -> None:
        async with EtcdClient(small_etcd.endpoints, timeout=10.0) as client:
            plan = plan_apply(fed, await read_config(client, LAYOUT), LAYOUT)
            started = time.monotonic()
            with pytest.raises(TxnTooLarge) as info:
                await execute(client, plan, Limits(max_ops=100_000, max_bytes=64 * 1024 * 1024))
            assert time.monotonic() - started < 5.0  # not retried until the 10 s timeout
            message = str(info.value)
            assert "\n" not in message and "--max-request-bytes" in message

    asyncio.run(run())
    assert snapshot(small_etcd)[1] == {}


def test_chunks_respect_both_limits() -> None:
    from federation.etcd import Delete, Put
    from federation.txnsize import TxnTooLarge, chunk, op_bytes

    limits = Limits(max_ops=4, max_bytes=20 * 1024)
    ops: list[Put | Delete] = [Put(f"/k/{i}", b"v" * (i * 300)) for i in range(40)]
    ops.append(Delete("/k/gone"))
    chunks = chunk(ops, limits, guard_cost=100, last_reserve_ops=2, last_reserve_bytes=200)
    assert [op for c in chunks for op in c] == ops  # in order, each once
    assert all(len(c) <= 4 for c in chunks) and len(chunks[-1]) <= 2
    assert all(sum(op_bytes(op) for op in c) + 100 <= limits.budget for c in chunks)
    with pytest.raises(TxnTooLarge, match="does not fit"):
        chunk([Put("/big", b"x" * 30_000)], limits, guard_cost=0, last_reserve_ops=0,
              last_reserve_bytes=0)  # fmt: skip


def test_apply_never_reads_the_runtime_keys(tmp_path: Path) -> None:
    """Runtime keys (health, endpoints, gateways) are most of the prefix at scale: above
    gRPC's 64 MiB receive limit the whole-prefix read failed; apply reads config only."""
    extra = ["--max-request-bytes", str(8 * 1024 * 1024), "--quota-backend-bytes", str(2**31)]
    with EtcdCluster(size=1, extra_args=extra) as etcd:

        async def fill() -> None:
            async with EtcdClient(etcd.endpoints, timeout=30.0) as client:
                blob = b"x" * (7 * 1024 * 1024)
                for i in range(10):  # 70 MB of health observations
                    await client.put(LAYOUT.health_report("a", f"gw{i}"), blob)

        asyncio.run(fill())
        path = write(tmp_path, generate(3))
        assert main(["apply", path, "--etcd", etcd.endpoint]) == 0


def test_closed_stdout_is_one_line_and_writes_nothing(etcd: EtcdCluster, tmp_path: Path) -> None:
    """`fedgate apply big.yaml | head -1`: the diff cannot be shown, so nothing is written,
    and the error is one line (it was a BrokenPipeError traceback)."""
    path = write(tmp_path, generate(3))  # a few lines: the diff is flushed before the write
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader is gone before the first line
    with os.fdopen(write_fd, "wb") as closed:
        proc = subprocess.run(
            [sys.executable, "-m", "federation.cli", "apply", path, "--etcd", etcd.endpoint],
            stdout=closed,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err == "fedgate apply: standard output closed: nothing written\n"
    assert snapshot(etcd)[1] == {}
