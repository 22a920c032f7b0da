"""An ACME (RFC 8555) orderer on ``acme``/``josepy``: one order per name, shared by Vault.

:meth:`AcmeOrderer.obtain` returns the certificate of a name, ordering it only when
Vault holds none still before its renewal time (2/3 of its lifetime) and only while
this process holds the name's etcd lock (:mod:`federation.acme_lock`); a gateway that
does not get the lock waits for the holder's certificate to appear in Vault. The
account is one for the federation, registered under its own lock. The holder answers
HTTP-01, TLS-ALPN-01 or DNS-01 (:meth:`AcmeOrderer._pick`), publishing what every
gateway needs through etcd (:mod:`federation.acme_records`). The blocking ACME calls
run in a worker thread: never on the request path.

Problem documents from the server (rate limits, rejected identifiers, failed
validation) are raised as :class:`AcmeProblem` with a one-line message: the caller
puts it in health, metrics and logs.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.b64 import b64encode
from josepy.jwk import JWK, JWKRSA

from federation.acme_lock import ACCOUNT, AcmeLock, Held
from federation.acme_store import AcmeAccount, AcmeCert, AcmeStore, validity
from federation.vault import backoff_delay


class AcmeProblem(Exception):
    """An ACME server refused or failed (its problem document, in one line)."""


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    directory: str
    email: str | None = None
    eab_kid: str | None = None
    eab_hmac_key: str | None = None  # base64url, as CAs hand it out
    challenge: str = "http-01"
    verify_tls: bool | str = True
    order_timeout: float = 90.0


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, messages.Error):
        return f"{exc.typ}: {exc.detail or exc.title or ''}".strip()
    if isinstance(exc, errors.ValidationError):
        probs = [a.body.error for a in exc.failed_authzrs if a.body.error is not None]
        return "validation failed: " + "; ".join(_one_line(p) for p in probs)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class _Response(challenges.KeyAuthorizationChallengeResponse):
    """The answer to any key-authorization challenge: an empty JSON object (RFC 8555
    7.5.1); the acme library has no TLS-ALPN-01 class, so one response serves all."""

    typ = "challenge"


def _typ(challb: messages.ChallengeBody) -> str:
    chall = challb.chall
    if isinstance(chall, challenges.UnrecognizedChallenge):
        return str(chall.jobj.get("type", ""))
    return str(chall.typ)


def _token(challb: messages.ChallengeBody) -> str:
    chall = challb.chall
    if isinstance(chall, challenges.UnrecognizedChallenge):
        token = chall.jobj.get("token")
        if not isinstance(token, str) or not token:
            raise AcmeProblem(f"{_typ(challb)} challenge without a token")
        return token
    return str(chall.encode("token"))


def _identifiers(
    name: str,
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    try:
        return [], [ipaddress.ip_address(name)]
    except ValueError:
        return [name], []


class AcmeOrderer:
    def __init__(
        self,
        config: AcmeConfig,
        store: AcmeStore,
        lock: AcmeLock,
        *,
        wait_poll: float = 0.5,
        rng: random.Random | None = None,
        dns_zone: Callable[[str], bool] | None = None,
        settle: Callable[[str, str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.lock = lock
        self.orders = 0  # orders this process placed (a metric)
        self.accounts = 0  # accounts this process registered (1 across the federation)
        self.challenges: dict[str, int] = {}  # challenges answered, by type
        # whether a name lies in a zone fedgate's DNS serves (DNS-01 possible)
        self.dns_zone: Callable[[str], bool] = dns_zone or (lambda _name: False)
        # awaited after publishing a challenge (form, name or token, value), before the
        # CA is told to validate: the gateway waits for its own view to hold it
        self.settle = settle
        self.last_problem: str | None = None
        self._wait_poll = wait_poll
        self._rng = rng or random.Random()
        self._client: client.ClientV2 | None = None
        self._account_key: JWK | None = None

    # -- account: one for the federation, registered under a lock
    async def _acme(self) -> client.ClientV2:
        """The ACME client on the federation's account. With none in Vault, the gateway
        holding the account lock registers it (after reading Vault again); the others
        wait for it to appear in Vault, so N gateways starting at once make one account."""
        if self._client is not None:
            return self._client
        deadline = time.monotonic() + self.config.order_timeout
        while True:
            stored = await asyncio.to_thread(self.store.read_account)
            if stored is not None:
                return await asyncio.to_thread(self._connect, stored)
            async with self.lock.hold(ACCOUNT) as held:
                if held is not None:
                    stored = await asyncio.to_thread(self.store.read_account)
                    if stored is not None:
                        return await asyncio.to_thread(self._connect, stored)
                    self._still_held(held, "account")
                    return await asyncio.to_thread(self._connect, None)
            if time.monotonic() >= deadline:
                raise AcmeProblem("no ACME account in Vault: its registration did not finish")
            await asyncio.sleep(self._wait_poll)

    async def account(self) -> str:
        """The federation's account URL (registering it if nobody has yet)."""
        account = (await self._acme()).net.account
        assert account is not None  # _connect sets it
        return str(account.uri)

    def _connect(self, stored: AcmeAccount | None) -> client.ClientV2:
        """Blocking: the directory, and the stored account or a new one written to Vault."""
        cfg = self.config
        if stored is not None:
            key = JWK.json_loads(stored.key_json)
        else:
            key = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        net = client.ClientNetwork(key, user_agent="fedgate-acme", verify_ssl=bool(cfg.verify_tls))
        directory = client.ClientV2.get_directory(cfg.directory, net)
        acme = client.ClientV2(directory, net)
        if stored is not None:
            net.account = messages.RegistrationResource(
                body=messages.Registration(), uri=stored.url
            )
        else:
            eab = None
            if cfg.eab_kid and cfg.eab_hmac_key:
                eab = messages.ExternalAccountBinding.from_data(
                    account_public_key=key.public_key(),
                    kid=cfg.eab_kid,
                    hmac_key=cfg.eab_hmac_key,
                    directory=directory,
                )
            reg = messages.NewRegistration.from_data(
                email=cfg.email, terms_of_service_agreed=True, external_account_binding=eab
            )
            regr = acme.new_account(reg)
            self.accounts += 1
            self.store.write_account(AcmeAccount(key.json_dumps(), regr.uri))
        self._client, self._account_key = acme, key
        return acme

    # -- one order (blocking parts in a thread; publishing through etcd in the loop)
    async def _order(self, name: str, held: Held) -> AcmeCert:
        acme = await self._acme()
        assert self._account_key is not None
        account_key = self._account_key
        pkey = ec.generate_private_key(ec.SECP256R1())
        key_pem = pkey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        domains, ips = _identifiers(name)
        csr = crypto_util.make_csr(key_pem, domains=domains or None, ipaddrs=ips or None)
        self._still_held(held, name)
        order = await asyncio.to_thread(acme.new_order, csr)
        self.orders += 1
        published: list[tuple[str, str]] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                form, chall = self._pick(name, authz.body)
                self._still_held(held, name)
                token = _token(chall)
                key_authz = f"{token}.{b64encode(account_key.thumbprint()).decode()}"
                ident, value = token, key_authz
                if form == "tls-alpn-01":
                    ident = authz.body.identifier.value.lower()
                elif form == "dns-01":
                    ident = name.lower()
                    value = b64encode(hashlib.sha256(key_authz.encode()).digest()).decode()
                await held.publish(ident, value, form)
                published.append((form, ident))
                if self.settle is not None:  # the gateways' views hold it before the CA asks
                    await self.settle(form, ident, value)
                self.challenges[form] = self.challenges.get(form, 0) + 1
                response = _Response(key_authorization=key_authz)
                await asyncio.to_thread(acme.answer_challenge, chall, response)
            deadline = datetime.datetime.now() + datetime.timedelta(
                seconds=self.config.order_timeout
            )
            done = await asyncio.to_thread(acme.poll_and_finalize, order, deadline)
        finally:
            for form, ident in published:
                await held.withdraw(ident, form)
        fullchain = str(done.fullchain_pem)
        nb, na = validity(fullchain)
        return AcmeCert(name, fullchain, key_pem.decode(), nb, na, str(done.uri))

    def _pick(self, name: str, authz: messages.Authorization) -> tuple[str, messages.ChallengeBody]:
        """The challenge to answer: the configured one when the CA offers it and this
        name allows it, else DNS-01 when the name lies in a zone of fedgate's DNS
        (a wildcard can only be proved so); else a one-line problem."""
        wildcard = bool(authz.wildcard) or name.startswith("*.")
        offered = {_typ(c): c for c in authz.challenges}
        for form in dict.fromkeys((self.config.challenge, "dns-01")):
            if form not in offered:
                continue
            if form == "dns-01" and not self.dns_zone(name):
                continue
            if form != "dns-01" and wildcard:
                continue
            if form == "tls-alpn-01" and _identifiers(name)[1]:
                continue  # an IP address (RFC 8738) is not answered by SNI here
            return form, offered[form]
        why = "a wildcard needs dns-01 and " if wildcard else ""
        raise AcmeProblem(
            f"{name}: no challenge to answer ({why}dns-01 needs the name in a zone of "
            f"fedgate's DNS; wanted {self.config.challenge}; offered "
            f"{', '.join(sorted(offered)) or 'none'})"
        )

    @staticmethod
    def _still_held(held: Held, name: str) -> None:
        if held.lost:
            raise AcmeProblem(f"{name}: lost the order lock (etcd lease not renewed)")

    async def _read(self, name: str) -> AcmeCert | None:
        return await asyncio.to_thread(self.store.read_cert, name)

    @staticmethod
    def fresh(cert: AcmeCert | None, now: float | None = None) -> bool:
        return cert is not None and (now or time.time()) < cert.renew_at()

    async def obtain(
        self, name: str, *, timeout: float = 120.0, replace: AcmeCert | None = None
    ) -> AcmeCert:
        """The certificate of ``name``: from Vault, or ordered once by whoever holds the lock.

        ``replace``: the certificate the caller has and wants renewed now even if it is
        still fresh; a different one already in Vault (another gateway renewed) is
        taken as is.
        """
        deadline = time.monotonic() + timeout
        attempt = 0

        def fresh(cert: AcmeCert | None) -> bool:
            if replace is not None and cert is not None:
                return cert.fullchain_pem != replace.fullchain_pem
            return self.fresh(cert)

        while True:
            cert = await self._read(name)
            if fresh(cert):
                assert cert is not None
                return cert
            async with self.lock.hold(name) as held:
                if held is not None:
                    cert = await self._read(name)  # a dead holder may have stored it
                    if fresh(cert):
                        assert cert is not None
                        return cert
                    try:
                        cert = await self._order(name, held)
                    except Exception as exc:  # the problem document, one line
                        self.last_problem = f"{name}: {_one_line(exc)}"
                        if time.monotonic() >= deadline:
                            raise AcmeProblem(self.last_problem) from None
                        await asyncio.sleep(
                            backoff_delay(attempt, initial=1.0, maximum=30.0, rng=self._rng)
                        )
                        attempt += 1
                        continue
                    await asyncio.to_thread(self.store.write_cert, cert)
                    self.last_problem = None
                    return cert
            if time.monotonic() >= deadline:
                raise AcmeProblem(f"{name}: no certificate in Vault after {timeout:.0f}s")
            await asyncio.sleep(self._wait_poll)
