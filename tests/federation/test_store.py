"""``fedgate apply`` against a real etcd: diff, one guarded transaction, dry run, prune,
concurrent change, a bad manifest writes nothing."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from federation import codec
from federation.cli import main
from federation.commands import apply as apply_cmd
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.manifest import load_manifest
from federation.model import GatewayRecord
from federation.store import (
    ConcurrentChange,
    apply_federation,
    execute,
    plan_apply,
    read_config,
)
from federation.view import load_view
from tests.support.etcd import EtcdCluster

LAYOUT = KeyLayout("/fedgate/")

CLUSTER = """
  - name: {name}
    region: {region}
    cloud: {cloud}
    tier: {tier}
    gateway:
      eastWest: https://gw.{name}.example.net:15443
"""

SERVICE = """
  - name: {name}
    routes:
      - host: {name}.example.com
        pathPrefix: /
    port: 8080
    clusters: [{clusters}]
    retries: {{attempts: {attempts}}}
"""


def manifest(
    clusters: list[tuple[str, str, str, int]],
    services: list[tuple[str, str, int]],
    *,
    name: str = "acme",
) -> str:
    text = f"apiVersion: fedgate/v1\nkind: Federation\nmetadata:\n  name: {name}\nclusters:\n"
    for cname, region, cloud, tier in clusters:
        text += CLUSTER.format(name=cname, region=region, cloud=cloud, tier=tier)
    text += "services:\n"
    for sname, cl, attempts in services:
        text += SERVICE.format(name=sname, clusters=cl, attempts=attempts)
    return text


BASE_CLUSTERS = [("aws-a", "eu-west-1", "aws", 0), ("gcp-b", "europe-west4", "gcp", 0)]
BASE_SERVICES = [("shop", "aws-a, gcp-b", 2), ("pay", "aws-a", 2)]


def write(tmp_path: Path, text: str, name: str = "fed.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def cli(etcd: EtcdCluster, *args: str) -> int:
    return main(["apply", *args, "--etcd", ",".join(etcd.endpoints)])


def etcd_state(etcd: EtcdCluster) -> tuple[int, dict[str, bytes]]:
    async def read() -> tuple[int, dict[str, bytes]]:
        async with EtcdClient(etcd.endpoints) as client:
            revision, kvs = await client.get_prefix(LAYOUT.prefix)
            return revision, {kv.key: kv.value for kv in kvs}

    return asyncio.run(read())


def test_apply_prints_the_diff_and_writes_in_one_transaction(
    etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, manifest(BASE_CLUSTERS, BASE_SERVICES))
    assert cli(etcd, path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:5] == [
        "+ federation acme",
        "+ cluster aws-a",
        "+ cluster gcp-b",
        "+ service pay",
        "+ service shop",
    ]
    assert "5 to add, 0 to change, 0 to remove" in out[5]
    revision, kvs = etcd_state(etcd)
    assert out[6] == f"applied in one transaction: etcd revision {revision}"
    # one transaction: every key has the same mod revision
    assert set(kvs) == {
        LAYOUT.federation(),
        LAYOUT.cluster("aws-a"),
        LAYOUT.cluster("gcp-b"),
        LAYOUT.service("shop"),
        LAYOUT.service("pay"),
        LAYOUT.generation(),
    }
    assert revision == 2  # a fresh etcd is at 1: one write

    # the view a gateway builds from it equals the manifest
    fed = load_manifest(path)

    async def view_services() -> set[str]:
        async with EtcdClient(etcd.endpoints) as client:
            view = await load_view(client, LAYOUT)
            assert view.rejected == ()
            assert dict(view.services) == {s.name: s for s in fed.services}
            return set(view.clusters)

    assert asyncio.run(view_services()) == {"aws-a", "gcp-b"}

    # the same manifest again: no changes, nothing written
    assert cli(etcd, path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no changes"
    assert etcd_state(etcd)[0] == revision


def test_changes_dry_run_and_prune(
    etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(etcd, write(tmp_path, manifest(BASE_CLUSTERS, BASE_SERVICES))) == 0
    capsys.readouterr()
    # change shop's retries, drop pay, add a cluster
    clusters = [*BASE_CLUSTERS, ("onprem-c", "fra1", "onprem", 1)]
    changed = write(tmp_path, manifest(clusters, [("shop", "aws-a, onprem-c", 3)]), "v2.yaml")
    before = etcd_state(etcd)

    assert cli(etcd, changed, "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert "+ cluster onprem-c" in out
    assert "~ service shop: clusters, retries" in out
    assert "  service pay: not in manifest (kept; --prune removes)" in out
    assert out[-1] == "dry run: nothing written"
    assert etcd_state(etcd) == before  # dry run wrote nothing

    assert cli(etcd, changed, "--dry-run", "--prune") == 0
    out = capsys.readouterr().out.splitlines()
    assert "- service pay" in out and "1 to add, 1 to change, 1 to remove" in out[-2]
    assert etcd_state(etcd) == before

    assert cli(etcd, changed) == 0  # without --prune: pay is kept
    capsys.readouterr()
    _, kvs = etcd_state(etcd)
    assert LAYOUT.service("pay") in kvs and LAYOUT.cluster("onprem-c") in kvs

    assert cli(etcd, changed, "--prune") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "- service pay" and out[-1].startswith("applied")
    _, kvs = etcd_state(etcd)
    assert LAYOUT.service("pay") not in kvs


def test_runtime_keys_are_never_touched(
    etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def register() -> None:
        async with EtcdClient(etcd.endpoints) as client:
            await client.put(
                LAYOUT.gateway("aws-a", "gw1"), codec.encode(GatewayRecord("gw1", "aws-a"))
            )

    asyncio.run(register())
    assert cli(etcd, write(tmp_path, manifest(BASE_CLUSTERS, BASE_SERVICES)), "--prune") == 0
    _, kvs = etcd_state(etcd)
    assert LAYOUT.gateway("aws-a", "gw1") in kvs


def test_bad_manifest_writes_nothing(
    etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = etcd_state(etcd)
    bad = write(tmp_path, manifest(BASE_CLUSTERS, [("shop", "aws-a, nowhere", 2)]))
    assert cli(etcd, bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith(bad + ":") for line in err)
    assert any("nowhere" in line for line in err)
    assert etcd_state(etcd) == before  # the revision did not move


def test_etcd_unreachable_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.ports import free_port

    path = write(tmp_path, manifest(BASE_CLUSTERS, BASE_SERVICES))
    code = main(["apply", path, "--etcd", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("fedgate apply: etcd unreachable") and err.count("\n") == 1


def _race(etcd: EtcdCluster, key: str, value: bytes) -> Callable[[], Awaitable[None]]:
    async def change() -> None:
        async with EtcdClient(etcd.endpoints) as other:
            await other.put(key, value)

    return change


@pytest.mark.parametrize(
    "raced_key",
    [
        LAYOUT.service("shop"),  # a key the manifest changes
        LAYOUT.service("pay"),  # a key the manifest leaves alone
        LAYOUT.service("brand-new"),  # a key that appears meanwhile
    ],
)
def test_concurrent_change_is_reported_and_nothing_written(
    etcd: EtcdCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], raced_key: str
) -> None:
    assert cli(etcd, write(tmp_path, manifest(BASE_CLUSTERS, BASE_SERVICES))) == 0
    v2 = write(tmp_path, manifest(BASE_CLUSTERS, [("shop", "aws-a", 5), ("pay", "aws-a", 2)]))
    read_at = etcd_state(etcd)[0]
    capsys.readouterr()
    args = argparse.Namespace(
        file=v2, dry_run=False, prune=False, etcd=",".join(etcd.endpoints), prefix=None
    )
    race = _race(etcd, raced_key, b"{}")
    from federation.cli import CommandError

    with pytest.raises(CommandError) as info:
        apply_cmd.run(args, before_write=race)
    assert str(info.value) == (
        f"concurrent change: etcd moved from revision {read_at}; "
        "nothing was written; run apply again"
    )
    assert info.value.code == 1
    revision, kvs = etcd_state(etcd)
    assert revision == read_at + 1  # only the racing write landed
    assert b'"attempts":5' not in kvs[LAYOUT.service("shop")]


async def test_store_with_a_stale_read_writes_nothing(etcd: EtcdCluster, tmp_path: Path) -> None:
    fed = load_manifest(write(tmp_path, manifest(BASE_CLUSTERS, BASE_SERVICES)))
    async with EtcdClient(etcd.endpoints) as client:
        state = await read_config(client, LAYOUT)
        plan = plan_apply(fed, state, LAYOUT)
        # someone else applies first
        await apply_federation(client, LAYOUT, fed)
        revision = (await client.get_prefix(LAYOUT.prefix))[0]
        with pytest.raises(ConcurrentChange):
            await execute(client, plan)
        assert (await client.get_prefix(LAYOUT.prefix))[0] == revision
