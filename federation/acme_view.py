"""The ACME challenges every gateway answers, as the view state holds them.

HTTP-01 key authorizations by token (``acme/challenge/{token}``), TLS-ALPN-01 key
authorizations by name (``acme/alpn/{name}``) and DNS-01 TXT values by name
(``acme/dns/{name}``) and by the TXT record's owner (``_acme-challenge.<name>``);
``acme/lock/{name}`` feeds nothing. A change rebuilds only the TXT owners it touched.
"""

from __future__ import annotations

from federation.acme_records import txt_name


class AcmeChallenges:
    def __init__(self) -> None:
        self.http: dict[str, str] = {}
        self.alpn: dict[str, str] = {}
        self.txt: dict[str, tuple[str, ...]] = {}
        self._dns: dict[str, str] = {}
        self._txt_touched: set[str] = set()

    def update(self, form: str, ident: str, value: str | None) -> bool:
        """Record one key's value (None: gone or rejected, so not answered); whether
        what the gateways answer changed. Call :meth:`settle` after a batch."""
        table = {"challenge": self.http, "alpn": self.alpn, "dns": self._dns}.get(form)
        if table is None:
            return False  # lock/{name}
        if value is None:
            differs = table.pop(ident, None) is not None
        elif table.get(ident) != value:
            table[ident] = value
            differs = True
        else:
            differs = False
        if differs and form == "dns":
            self._txt_touched.add(txt_name(ident))
        return differs

    def settle(self) -> None:
        """Rebuild the TXT records of the owners the batch touched."""
        for owner in self._txt_touched:
            values = tuple(sorted(v for n, v in self._dns.items() if txt_name(n) == owner))
            if values:
                self.txt[owner] = values
            else:
                self.txt.pop(owner, None)
        self._txt_touched.clear()
