"""The server certificate's hostname check, which fails on today's stack.

Defect: aioxmpp.security_layer.check_x509_hostname calls pyOpenSSL's X509.get_extension()
(removed in pyOpenSSL 24.3) and ssl.match_hostname() (removed in Python 3.12).  With today's
pyOpenSSL *every* verifying security layer fails with AttributeError, so the only way to
connect would be to switch verification off.  The replacement does RFC 6125 matching with
`cryptography`: DNS subjectAltNames (the CN only when there are none), one left-most
wildcard label.
Upstream: none filed in aioxmpp's tracker (the same breakage reported downstream:
https://github.com/bosch-thermostat/home-assistant-bosch-custom-component/issues/387).
Can go when: aioxmpp's own check runs on pyOpenSSL >= 24.3 and Python >= 3.12
(tests/compat/test_tls_hostname.py: test_stock_hostname_check_fails_on_this_stack fails).
"""

from __future__ import annotations

import aioxmpp.security_layer
import OpenSSL.crypto
from cryptography import x509 as cx509

_orig_check_x509_hostname = aioxmpp.security_layer.check_x509_hostname


def check_x509_hostname(x509: OpenSSL.crypto.X509, hostname: str) -> bool:
    cert = x509.to_cryptography()
    hostname = hostname.lower().rstrip(".")
    try:
        san = cert.extensions.get_extension_for_class(cx509.SubjectAlternativeName)
        names = san.value.get_values_for_type(cx509.DNSName)
    except cx509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(cx509.NameOID.COMMON_NAME)]
    for name in names:
        name = name.lower().rstrip(".")
        if name == hostname:
            return True
        if name.startswith("*.") and "." in hostname and hostname.split(".", 1)[1] == name[2:]:
            return True
    return False


def apply() -> None:
    aioxmpp.security_layer.check_x509_hostname = check_x509_hostname
