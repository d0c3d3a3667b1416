"""Test certificates made with the openssl CLI (EC keys: fast to generate)."""

from __future__ import annotations

from pathlib import Path

from .base import run_quiet

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_DAYS = ["-days", "30"]


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: returns (cert, key) as directory/name.crt and .key."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    run_quiet(
        [
            "openssl",
            "req",
            "-x509",
            *_EC,
            *_DAYS,
            "-subj",
            f"/CN=minimix test {name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            key,
            "-out",
            crt,
        ]
    )
    return crt, key


def make_leaf(
    directory: Path, name: str, dns_names: list[str], ca: tuple[Path, Path] | None
) -> tuple[Path, Path]:
    """A server certificate for `dns_names` (SAN), signed by `ca`, or self-signed when
    ca is None (then the certificate is its own trust anchor)."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    san = "subjectAltName=" + ",".join(f"DNS:{n}" for n in dns_names)
    subj = f"/CN={dns_names[0]}"
    if ca is None:
        run_quiet(
            [
                "openssl",
                "req",
                "-x509",
                *_EC,
                *_DAYS,
                "-subj",
                subj,
                "-addext",
                san,
                "-keyout",
                key,
                "-out",
                crt,
            ]
        )
        return crt, key
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text(
        f"{san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    run_quiet(["openssl", "req", *_EC, "-subj", subj, "-keyout", key, "-out", csr])
    run_quiet(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca[0],
            "-CAkey",
            ca[1],
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            ext,
            "-out",
            crt,
        ]
    )
    return crt, key
