"""Keeps the ACME certificates of a gateway's names current: obtain, install, renew.

For each name: :meth:`AcmeOrderer.obtain` (Vault first, one order per name across the
federation), then the installer (the SNI contexts of :mod:`gateway.acme_sni`), then
sleep until 2/3 of the lifetime (with jitter) and again. A failure keeps the current
certificate serving and retries with the project's jittered backoff; the last problem
(the ACME server's problem document, in one line) is in :meth:`status` for
``/v1/health/global``, in the ``fedgate_acme_*`` counters and in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from federation.acme_client import AcmeOrderer
from federation.acme_store import AcmeCert
from federation.logging import get_logger
from federation.vault import backoff_delay

log = get_logger(__name__)

Installer = Callable[[AcmeCert], None]


@dataclass
class NameState:
    cert: AcmeCert | None = None
    problem: str | None = None
    failures: int = 0
    renewals: int = 0


@dataclass
class AcmeRenewer:
    orderer: AcmeOrderer
    install: Installer
    jitter: float = 0.05  # of the lifetime, so N gateways do not wake together
    retry_initial: float = 1.0
    retry_max: float = 300.0
    obtain_timeout: float = 120.0
    rng: random.Random = field(default_factory=random.Random)
    states: dict[str, NameState] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def ensure(self, names: set[str]) -> None:
        """Start a keeper per new name; stop the keepers of names no longer wanted."""
        for name in names - self._tasks.keys():
            self.states.setdefault(name, NameState())
            self._tasks[name] = asyncio.create_task(self._keep(name), name=f"acme:{name}")
        for name in self._tasks.keys() - names:
            self._tasks.pop(name).cancel()
            self.states.pop(name, None)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def renew_now(self, name: str) -> None:
        """One attempt (tests, and ``fedgate`` operators): order when due, install."""
        await self._once(name, force=True)

    async def _once(self, name: str, *, force: bool = False) -> None:
        st = self.states.setdefault(name, NameState())
        try:
            cert = await self.orderer.obtain(
                name, timeout=self.obtain_timeout, replace=st.cert if force else None
            )
            if st.cert is None or cert.fullchain_pem != st.cert.fullchain_pem:
                self.install(cert)
                if st.cert is not None:
                    st.renewals += 1
                st.cert = cert
            st.problem, st.failures = None, 0
        except Exception as exc:
            st.failures += 1
            st.problem = " ".join(str(exc).split())[:300] or type(exc).__name__
            log.warning("acme.renew_failed", name=name, error=st.problem, kept="current")
            if not force:
                raise

    async def _keep(self, name: str) -> None:
        st = self.states[name]
        while True:
            try:
                await self._once(name)
            except Exception:
                await asyncio.sleep(
                    backoff_delay(
                        st.failures - 1,
                        initial=self.retry_initial,
                        maximum=self.retry_max,
                        rng=self.rng,
                    )
                )
                continue
            assert st.cert is not None
            wake = st.cert.renew_at() + self.rng.uniform(0, self.jitter) * st.cert.lifetime
            await asyncio.sleep(max(1.0, wake - time.time()))

    def status(self) -> dict[str, object]:
        """For ``/v1/health/global``: per name, expiry and the last problem."""
        out: dict[str, object] = {}
        for name, st in sorted(self.states.items()):
            out[name] = {
                "serving": st.cert is not None,
                "notAfter": st.cert.not_after if st.cert else None,
                "renewAt": st.cert.renew_at() if st.cert else None,
                "problem": st.problem,
                "failures": st.failures,
                "renewals": st.renewals,
            }
        return out
