"""Admin token and Vault address cases: refused at start with one line, never silently.

Before: an empty token file silently disabled the admin API, a 1-character token was
accepted, a world-readable token file was not noticed, ``/metrics`` needed no token
and a remote ``http://`` Vault address was accepted.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml

from federation.api import create_admin_app
from federation.model import RoutingView
from federation.settings import GatewaySettings, SettingsError, load_settings
from gateway.types import ViewHolder
from tests.federation.test_serve_cli import gateway_settings, one_line_error, serve
from tests.support.ports import free_port

GOOD = "0123456789abcdef-long-enough"


def settings(tmp_path: Path, token: str | None, mode: int = 0o600) -> GatewaySettings:
    data: dict[str, object] = {"cluster": "a"}
    if token is not None:
        f = tmp_path / "token"
        f.write_text(token)
        os.chmod(f, mode)
        data["admin"] = {"tokenFile": str(f)}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path, environ={})


@pytest.mark.parametrize(
    ("token", "mode", "needle"),
    [
        ("", 0o600, "empty"),
        ("\n  \n", 0o600, "empty"),
        ("x", 0o600, "too short (1 bytes, at least 16)"),
        ("fifteen-bytes-x", 0o600, "too short"),
        (GOOD, 0o644, "readable by every user"),
        (GOOD, 0o604, "readable by every user"),
    ],
)
def test_bad_token_files_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str, mode: int, needle: str
) -> None:
    monkeypatch.delenv("FEDGATE_ADMIN_TOKEN", raising=False)
    with pytest.raises(SettingsError, match=r"admin\.tokenFile") as exc:
        settings(tmp_path, token, mode).admin_token()
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_good_token_file_and_short_env_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDGATE_ADMIN_TOKEN", raising=False)
    assert settings(tmp_path, GOOD + "\n", 0o640).admin_token() == GOOD
    monkeypatch.setenv("FEDGATE_ADMIN_TOKEN", "short")
    with pytest.raises(SettingsError, match="FEDGATE_ADMIN_TOKEN: the admin token is too short"):
        settings(tmp_path, None).admin_token()


def test_serve_refuses_an_empty_token_file_in_one_line(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("")
    os.chmod(token, 0o600)
    data = gateway_settings(public=free_port(), admin=free_port())
    data["admin"] = {"tokenFile": str(token)}
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(data))
    env_free = os.environ.pop("FEDGATE_ADMIN_TOKEN", None)
    try:
        one_line_error(serve(config, "--check"), 2, "admin.tokenFile", "empty")
    finally:
        if env_free is not None:
            os.environ["FEDGATE_ADMIN_TOKEN"] = env_free


def _admin(public_metrics: bool) -> httpx.AsyncClient:
    app = create_admin_app(
        holder=ViewHolder(RoutingView()), token=GOOD, gateway_id="g", cluster="a", telemetry=None,
        explain=lambda *a: {}, ready=lambda: True, status=dict, public_metrics=public_metrics,
    )  # fmt: skip
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a")


async def test_metrics_need_the_token_unless_public() -> None:
    async with _admin(False) as c:
        assert (await c.get("/metrics")).status_code == 401
        bad = await c.get("/metrics", headers={"Authorization": "Bearer wrong-token-xxxxxxx"})
        assert bad.status_code == 401
        ok = await c.get("/metrics", headers={"Authorization": f"Bearer {GOOD}"})
        assert ok.status_code == 200
    async with _admin(True) as c:
        assert (await c.get("/metrics")).status_code == 200
        assert (await c.get("/v1/status")).status_code == 401  # only metrics go public


@pytest.mark.parametrize(
    ("addr", "insecure", "ok"),
    [
        ("http://vault.example.com:8200", False, False),
        ("http://10.0.0.5:8200", False, False),
        ("http://vault.example.com:8200", True, True),
        ("http://127.0.0.1:8200", False, True),
        ("http://localhost:8200", False, True),
        ("https://vault.example.com:8200", False, True),
    ],
)
def test_remote_plain_http_vault_is_refused(addr: str, insecure: bool, ok: bool) -> None:
    overrides = {"cluster": "a", "vault.addr": addr, "vault.insecure": insecure}
    if ok:
        assert load_settings(overrides=overrides, environ={}).vault is not None
    else:
        with pytest.raises(SettingsError, match="remote plain HTTP"):
            load_settings(overrides=overrides, environ={})
