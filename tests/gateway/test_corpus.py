"""The raw-socket corpus (tests/gateway/corpus/requests.yaml) against a real gateway.

Every case goes on its own connection, all at once, while a well-behaved client keeps
being served on another keep-alive connection: none of its requests may fail.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest
import yaml

from gateway.telemetry import Telemetry
from tests.gateway.harness import running_gateway, service, settings_for, view_of
from tests.support.backend import Backend, RawUpstream

CORPUS = Path(__file__).parent / "corpus" / "requests.yaml"
HEADER_TIMEOUT = 1.0
MAX_HEADER_BYTES = 8192

BAD_UPSTREAMS = {
    "bad-cl-te": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc",
    "bad-te": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
}


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
    return cases


def expand(text: str) -> bytes:
    def sub(m: re.Match[str]) -> str:
        kind, n = m.group(1), int(m.group(2))
        if kind == "big":
            return "a" * n
        return "".join(f"X-H{i}: vvvvvvvvvv\r\n" for i in range(n))

    return re.sub(r"\{(big|many):(\d+)\}", sub, text).encode("latin-1")


class _Responses:
    """Collects the responses on one connection (httptools parser callbacks)."""

    def __init__(self) -> None:
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._headers, self._body = {}, bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:  # 100 Continue is not an answer
            self.done.append((status, self._headers, bytes(self._body)))


async def run_case(host: str, port: int, case: dict[str, Any]) -> dict[str, Any]:
    parts = case["send"] if isinstance(case["send"], list) else [case["send"]]
    expect = case["expect"]
    wanted = len(expect) if isinstance(expect, list) else 1
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    got = _Responses()
    state = {"closed": False, "error": None}

    async def read_answers() -> None:
        deadline = time.monotonic() + 3 * HEADER_TIMEOUT + 2
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except TimeoutError:
                return
            except ConnectionError:
                state["closed"] = True
                return
            if not data:
                state["closed"] = True
                return
            try:
                got.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                state["error"] = f"unparseable answer: {exc}"
                return
            if len(got.done) >= wanted and not case.get("closes"):
                return

    answers = asyncio.create_task(read_answers())
    try:
        for i, part in enumerate(parts):
            if i and case.get("pause"):
                await asyncio.sleep(case["pause"])  # the slow client under test
            if answers.done():
                break
            if part:
                writer.write(expand(part))
                await writer.drain()
    except ConnectionError:
        pass  # the gateway hung up on us: what it answered is being read
    await answers
    writer.close()
    if state["error"]:
        return {"error": state["error"]}
    closed = state["closed"]
    return {"responses": got.done, "closed": closed, "elapsed": time.monotonic() - started}


def check(case: dict[str, Any], result: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if "error" in result:
        return [result["error"]]
    responses = result["responses"]
    expect = case["expect"]
    if expect == "closed":
        if responses or not result["closed"]:
            problems.append(f"expected a silent close, got {[r[0] for r in responses]}")
        return problems
    statuses = [r[0] for r in responses]
    want = expect if isinstance(expect, list) else [expect]
    if statuses != want:
        problems.append(f"expected {want}, got {statuses}")
        return problems
    if case.get("closes") and not result["closed"]:
        problems.append("connection stayed open")
    status, _headers, body = responses[-1]
    if status == 200 and any(k in case for k in ("absent", "present", "saw_trace_of", "body_seen")):
        seen = json.loads(body)
        names: dict[str, str] = {}
        for k, v in seen["headers"]:
            names[k] = v
        for name in case.get("absent", []):
            if name in names:
                problems.append(f"backend saw {name}: {names[name]}")
        for name, value in (case.get("present") or {}).items():
            if names.get(name) != value:
                problems.append(f"backend saw {name}={names.get(name)!r}, expected {value!r}")
        if "body_seen" in case and seen["body"] != case["body_seen"]:
            problems.append(f"backend saw body {seen['body']!r}")
        if "saw_trace_of" in case:
            tp = names.get("traceparent", "")
            m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]", tp)
            if not m:
                problems.append(f"backend saw traceparent {tp!r}")
            elif case["saw_trace_of"] != "any":
                if m.group(1) != case["saw_trace_of"]:
                    problems.append(f"trace id not propagated: {tp}")
                if m.group(2) == "b7ad6b7169203331":
                    problems.append("the gateway did not start its own span")
    return problems


def test_corpus_is_large_enough() -> None:
    cases = load_cases()
    assert len(cases) >= 30
    assert {c["group"] for c in cases} >= {"framing", "open-proxy", "oversize", "slow", "hygiene"}
    assert len({c["name"] for c in cases}) == len(cases)


@pytest.mark.timeout(120)
async def test_corpus_while_a_good_client_is_served() -> None:
    cases = load_cases()
    async with (
        Backend("echo", host="127.0.0.2") as echo,
        RawUpstream(BAD_UPSTREAMS["bad-cl-te"], host="127.0.0.3") as u1,
        RawUpstream(BAD_UPSTREAMS["bad-cl"], host="127.0.0.3") as u2,
        RawUpstream(BAD_UPSTREAMS["bad-te"], host="127.0.0.3") as u3,
    ):
        services = [
            service("shop", "shop.test"),
            service("wild", "*.wild.test"),
            service("limited", "limited.test", max_body_bytes=1000),
            service("bad-cl-te", "bad-cl-te.test"),
            service("bad-cl", "bad-cl.test"),
            service("bad-te", "bad-te.test"),
        ]
        endpoints = {
            ("shop", "c1"): [echo.address],
            ("wild", "c1"): [echo.address],
            ("limited", "c1"): [echo.address],
            ("bad-cl-te", "c1"): [u1.address],
            ("bad-cl", "c1"): [u2.address],
            ("bad-te", "c1"): [u3.address],
        }
        settings = settings_for(
            limits={"maxHeaderBytes": MAX_HEADER_BYTES, "headerTimeout": HEADER_TIMEOUT}
        )
        telemetry = Telemetry(
            gateway_id="gw", cluster="c1", metrics=True, access_log=False, tracing=True
        )
        async with running_gateway(
            view_of(services, endpoints=endpoints), settings=settings, telemetry=telemetry
        ) as gw:
            host, port = gw.addr()
            stop = asyncio.Event()
            good = {"ok": 0, "failed": []}

            async def well_behaved() -> None:
                async with httpx.AsyncClient(base_url=gw.url(), timeout=5) as client:
                    while not stop.is_set():
                        try:
                            r = await client.get("/ok", headers={"host": "shop.test"})
                            if r.status_code == 200 and r.json()["path"] == "/ok":
                                good["ok"] += 1
                            else:
                                good["failed"].append(r.status_code)
                        except httpx.HTTPError as exc:
                            good["failed"].append(repr(exc))
                        await asyncio.sleep(0.01)  # pacing of the steady client

            client_task = asyncio.create_task(well_behaved())
            try:
                results = await asyncio.gather(*(run_case(host, port, c) for c in cases))
            finally:
                stop.set()
                await client_task

    failures = []
    for case, result in zip(cases, results, strict=True):
        for p in check(case, result):
            failures.append(f"[{case['group']}] {case['name']}: {p}")
    assert not failures, "\n".join(failures)
    assert not good["failed"], good["failed"]
    assert good["ok"] >= 5  # it was served all along (the count depends on machine load)
    slow = {c["name"]: r for c, r in zip(cases, results, strict=True) if c["group"] == "slow"}
    # slow clients were cut off by the head deadline, not held
    assert slow["slowloris head (a header every 0.3 s)"]["elapsed"] < HEADER_TIMEOUT + 1.5
