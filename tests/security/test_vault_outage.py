"""A gateway started while Vault is down: its last unexpired material from disk, or it
waits and says why; it never exits. Vault here is a closed loopback port (really down)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from federation import tls_cache
from federation.devstack.certs import TestCa
from federation.settings import VaultSettings
from federation.vault import VaultError, VaultTls
from gateway.tls import CertificateMaterial, gateway_spiffe_id
from tests.support.ports import free_port


def settings() -> VaultSettings:
    return VaultSettings.model_validate(
        {"addr": f"http://127.0.0.1:{free_port()}", "auth": {"method": "token", "token": "x"}}
    )


def material(ca: TestCa, *, hours: float = 1.0, uri: str = "") -> CertificateMaterial:
    i = ca.issue("gw", uris=(uri,) if uri else (), dns=("localhost",), hours=hours,
                 not_before_hours=min(-1.0, hours - 1))  # fmt: skip
    return CertificateMaterial(certificate=i.cert_pem, private_key=i.key_pem, ca_bundle=i.ca_pem)


def vault_tls(cache: Path | None) -> VaultTls:
    return VaultTls(
        settings(), cluster="eu", gateway_id="g", timeout=1, backoff_initial=0.05,
        cache_path=str(cache) if cache else None,
    )  # fmt: skip


async def test_starts_from_the_cached_material_when_vault_is_down(tmp_path: Path) -> None:
    ca = TestCa()
    cache = tmp_path / "state" / "gw.tls"
    ew = material(ca, uri=gateway_spiffe_id("fedgate.local", "eu"))
    tls_cache.save_material(str(cache), material(ca), ew)
    assert os.stat(cache).st_mode & 0o777 == 0o600
    vt = vault_tls(cache)
    contexts = await vt.start()
    assert contexts.east_west_server is not None and vt.served_from_cache
    status = vt.status()
    assert status["vault_ok"] is False and status["renewal_failing"] is True
    assert vt.east_west is not None and vt.east_west.material == ew


@pytest.mark.parametrize("case", ["expired", "world-readable", "garbage", "missing"])
async def test_unusable_cache_is_not_served(tmp_path: Path, case: str) -> None:
    ca = TestCa()
    cache = tmp_path / "gw.tls"
    hours = -0.5 if case == "expired" else 1.0
    if case != "missing":
        tls_cache.save_material(str(cache), None, material(ca, hours=hours))
    if case == "world-readable":
        os.chmod(cache, 0o644)
    if case == "garbage":
        cache.write_text("[[[")
    with pytest.raises(VaultError, match=r"vault http://127\.0\.0\.1"):
        await vault_tls(cache).start()


async def test_without_material_it_waits_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="federation.vault")
    with pytest.raises(TimeoutError):  # still waiting: it did not give up
        await asyncio.wait_for(vault_tls(None).start(wait=True), timeout=1.0)
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    retries = [e for e in events if e["event"] == "vault.unavailable"]
    assert len(retries) >= 2 and retries[0]["cache"] == "no TLS cache configured"
    assert retries[0]["retry_in"] > 0 and "vault http://127.0.0.1" in retries[0]["error"]
