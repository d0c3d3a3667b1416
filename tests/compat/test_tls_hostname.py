"""fixes.tls_hostname: aioxmpp's hostname check fails on today's pyOpenSSL and Python."""

import datetime as dt

import aioxmpp.security_layer
import OpenSSL.crypto
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from compat import streams  # noqa: F401  (applies the fixes)
from minimix.xmpp.compat.fixes import tls_hostname


def make_cert(*names: str, cn: str = "server") -> OpenSSL.crypto.X509:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    return OpenSSL.crypto.X509.from_cryptography(builder.sign(key, hashes.SHA256()))


def test_stock_hostname_check_fails_on_this_stack():
    with pytest.raises(AttributeError):
        tls_hostname._orig_check_x509_hostname(make_cert("localhost"), "localhost")


@pytest.mark.parametrize(
    ("names", "cn", "hostname", "ok"),
    [
        (("localhost", "conference.localhost"), "x", "localhost", True),
        (("localhost",), "x", "LOCALHOST.", True),
        (("localhost",), "x", "example.org", False),
        (("*.example.org",), "x", "chat.example.org", True),
        (("*.example.org",), "x", "a.chat.example.org", False),
        (("*.example.org",), "x", "example.org", False),
        ((), "localhost", "localhost", True),  # no SAN: fall back to the CN
        (("other.org",), "localhost", "localhost", False),  # SAN present: CN ignored
    ],
)
def test_hostname_check(names, cn, hostname, ok):
    assert aioxmpp.security_layer.check_x509_hostname is tls_hostname.check_x509_hostname
    assert tls_hostname.check_x509_hostname(make_cert(*names, cn=cn), hostname) is ok
