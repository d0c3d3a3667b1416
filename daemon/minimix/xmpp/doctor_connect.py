"""``minimix doctor``'s connection: what the security layer saw (the certificate
verification, the SASL negotiation), and the verdicts on it, whether a session came up or
not.  :mod:`minimix.xmpp.doctor` runs the session and the checks in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosasl
import aioxmpp
import aioxmpp.errors
import aioxmpp.security_layer
import OpenSSL.SSL
from cryptography import x509

from minimix import doctor as verdict
from minimix.config import Config
from minimix.doctor import Check, Status
from minimix.password import password_source
from minimix.xmpp import compat


@dataclass
class Outcome:
    """The doctor's network checks, and whether the server refused the login."""

    checks: list[Check]
    login_refused: bool = False


@dataclass
class TlsRecord:
    errors: list[tuple[int, int, str]] = field(default_factory=list)  # (X509 error, depth, text)
    mismatch_names: list[str] | None = None  # names of a certificate not naming the host
    leaf: x509.Certificate | None = None
    done: bool = False
    version: str | None = None
    cipher: str | None = None
    chain: list[x509.Certificate] = field(default_factory=list)
    peer: str | None = None


@dataclass
class SaslRecord:
    offered: list[str] = field(default_factory=list)
    mechanism: str | None = None


def _x509_error_text(code: int) -> str:
    try:
        from OpenSSL._util import ffi, lib  # the only way to OpenSSL's text for the code

        return ffi.string(lib.X509_verify_cert_error_string(code)).decode()
    except Exception:
        return f"X509 error {code}"


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return san.value.get_values_for_type(x509.DNSName)


def recording_layer(
    layer: aioxmpp.security_layer.SecurityLayer, tls: TlsRecord, sasl: SaslRecord
) -> aioxmpp.security_layer.SecurityLayer:
    """``layer`` (from :func:`~minimix.xmpp.account.security_layer`: same trust, same SASL) noting what the
    certificate verification and the SASL negotiation saw."""

    assert layer.certificate_verifier_factory is aioxmpp.security_layer.PKIXCertificateVerifier

    class Verifier(aioxmpp.security_layer.PKIXCertificateVerifier):
        def verify_callback(self, conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
            result = super().verify_callback(conn, cert, errno, depth, ok)
            if depth == 0:
                tls.leaf = cert.to_cryptography()
            if not ok:
                tls.errors.append((errno, depth, _x509_error_text(errno)))
            elif not result and depth == 0:  # passed OpenSSL, failed the hostname check
                tls.mismatch_names = _dns_names(cert.to_cryptography())
            return result

        async def post_handshake(self, transport: Any) -> None:
            await super().post_handshake(transport)
            conn: OpenSSL.SSL.Connection = transport.get_extra_info("ssl_object")
            tls.done = True
            tls.version = conn.get_protocol_version_name()
            tls.cipher = conn.get_cipher_name()
            tls.chain = conn.get_verified_chain(as_cryptography=True) or []
            peer = transport.get_extra_info("peername")
            if peer:
                tls.peer = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"

    (provider,) = layer.sasl_providers
    execute, execute_mechanism = provider.execute, provider._execute

    async def recording_execute(client_jid: Any, features: Any, xmlstream: Any, tls_transport: Any) -> Any:
        with contextlib.suppress(KeyError):
            sasl.offered = list(features[aioxmpp.security_layer.SASLMechanisms].get_mechanism_list())
        return await execute(client_jid, features, xmlstream, tls_transport)

    async def recording_mechanism(intf: Any, mechanism: Any, token: Any) -> Any:
        sasl.mechanism = token[0] if isinstance(token, tuple) else str(token)  # SCRAM: (name, hash)
        return await execute_mechanism(intf, mechanism, token)

    provider.execute, provider._execute = recording_execute, recording_mechanism
    return layer._replace(certificate_verifier_factory=Verifier)


def anchor(chain: Sequence[x509.Certificate], ca_file: Path | None) -> str:
    """Which trust anchor verified the chain: a certificate of ca_file, or the system's."""
    if chain and ca_file is not None:
        with contextlib.suppress(OSError, ValueError):
            ours = x509.load_pem_x509_certificates(ca_file.read_bytes())
            if any(cert in ours for cert in chain):
                return f"ca_file {ca_file}"
    root = chain[-1].subject.rfc4514_string() if chain else "?"
    return f"system trust store ({root})"


def describe(exc: BaseException) -> str:
    """An error as the doctor's report says it (each distinct cause of a MultiOSError once)."""
    if isinstance(exc, aioxmpp.errors.MultiOSError) and getattr(exc, "exceptions", None):
        return "; ".join(dict.fromkeys(describe(e) for e in exc.exceptions))
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def not_connected(error: BaseException, tls: TlsRecord, sasl: SaslRecord, config: Config, server: str) -> Outcome:
    """The verdicts when no session came up with ``error`` (``server``: where it tried)."""
    account = config.account
    hostname = aioxmpp.JID.fromstr(account.jid).domain
    source = password_source(config)
    tls_trouble = bool(tls.errors or tls.mismatch_names is not None) or isinstance(
        error,
        aioxmpp.errors.TLSFailure
        | aioxmpp.errors.TLSUnavailable
        | OpenSSL.SSL.Error
        | asyncio.InvalidStateError,
    )
    rest = [n for n in verdict.NETWORK_CHECKS if n not in ("connection", "tls", "login")]
    if isinstance(error, compat.FatalLoginError):
        checks = [
            verdict.judge_connection(tls.peer or server, None),
            tls_ok(tls, hostname, account.ca_file),
            verdict.judge_login(sasl.mechanism, sasl.offered, True, source),
        ]
        return Outcome(checks + verdict.skipped(rest, "the login failed"), login_refused=True)
    if tls_trouble and not tls.done:
        issuer = tls.leaf.issuer.rfc4514_string() if tls.leaf is not None else None
        checks = [
            verdict.judge_connection(server, None),
            verdict.judge_tls_failure(
                hostname=hostname,
                errors=tls.errors,
                mismatch_names=tls.mismatch_names,
                issuer=issuer,
                ca_file=account.ca_file,
                error=describe(error),
            ),
        ]
        return Outcome(checks + verdict.skipped(["login", *rest], "no TLS connection"))
    if isinstance(error, aiosasl.SASLError) or (tls.done and isinstance(error, TimeoutError)):
        checks = [
            verdict.judge_connection(tls.peer or server, None),
            tls_ok(tls, hostname, account.ca_file),
            Check("login", Status.FAIL, f"login failed: {describe(error)}",
                  f"check account.jid and the password (from {source})"),
        ]
        return Outcome(checks + verdict.skipped(rest, "the login failed"))
    checks = [verdict.judge_connection(server, describe(error))]
    return Outcome(checks + verdict.skipped(["tls", "login", *rest], "no connection"))


def tls_ok(tls: TlsRecord, hostname: str, ca_file: Path | None) -> Check:
    """The verdict on a TLS handshake that went through (a skip if there was none)."""
    if not tls.done:
        return Check("tls", Status.SKIP, "skipped: no TLS handshake")
    return verdict.judge_tls_ok(
        version=tls.version,
        cipher=tls.cipher,
        hostname=hostname,
        anchor=anchor(tls.chain, ca_file),
        not_after=tls.leaf.not_valid_after_utc if tls.leaf is not None else None,
        now=dt.datetime.now(dt.UTC),
    )
