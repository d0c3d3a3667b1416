"""The account the daemon logs into, and how: TLS required and verified."""

from __future__ import annotations

from dataclasses import dataclass

import aioxmpp
import aioxmpp.security_layer
import OpenSSL.SSL


@dataclass(frozen=True, slots=True)
class Account:
    jid: aioxmpp.JID  # full JID: bare account JID + resource
    password: str
    host: str | None = None
    port: int = 5222
    ca_file: str | None = None

    @classmethod
    def of(cls, jid: str, resource: str, password: str, *, host: str | None = None, port: int = 5222,
           ca_file: str | None = None) -> Account:
        """The account as configured; ValueError if stringprep refuses the JID or resource
        (what the config file's own check cannot tell)."""
        return cls(aioxmpp.JID.fromstr(jid).replace(resource=resource), password, host, port, ca_file)

    @property
    def address(self) -> str:
        """Our full JID, as text."""
        return str(self.jid)

    @property
    def bare(self) -> str:
        return str(self.jid.bare())

    @property
    def localpart(self) -> str | None:
        return self.jid.localpart

    @property
    def server(self) -> str:
        """Where it connects, for the log: the configured host, else the domain's SRV."""
        return f"{self.host}:{self.port}" if self.host else f"{self.jid.domain} (SRV)"


def security_layer(password: str, ca_file: str | None = None) -> aioxmpp.security_layer.SecurityLayer:
    """TLS required and verified (PKIX against the system roots, plus ``ca_file``)."""

    def ssl_context() -> OpenSSL.SSL.Context:
        ctx = aioxmpp.security_layer.default_ssl_context()
        if ca_file:
            ctx.load_verify_locations(ca_file)
        return ctx

    async def password_provider(jid: aioxmpp.JID, attempt: int) -> str | None:
        return password if attempt == 0 else None

    return aioxmpp.security_layer.SecurityLayer(
        ssl_context,
        aioxmpp.security_layer.PKIXCertificateVerifier,
        True,
        (aioxmpp.security_layer.PasswordSASLProvider(password_provider),),
    )
