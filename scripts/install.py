"""`pip install`, with aioxmpp 0.13.3 allowed the lxml that the running Python has wheels for.

Usage: PYTHON scripts/install.py PIP-INSTALL-ARGUMENTS…   e.g.  venv/bin/python scripts/install.py .

Why: aioxmpp 0.13.3, its last release, requires lxml~=4.0 (>=4.0,<5). lxml 4 has no wheels for
Python 3.13 and its C sources do not compile against 3.13, but nothing in aioxmpp needs lxml 4:
minimix's tests pass with lxml 4.9 on 3.11 and with lxml 6 on 3.11 to 3.14. pip cannot
override a requirement of a dependency, so this script builds aioxmpp 0.13.3 from its source
release on PyPI (checked against the hash below), changes that one line of its metadata to
lxml>=4.0,<7, labels the wheel 0.13.3+minimix.1 (a PEP 440 local version: never mistaken for
PyPI's, still satisfies minimix's aioxmpp==0.13.3, and sorts above 0.13.3 so pip prefers it),
and runs `pip install --find-links` with it and the arguments given. Everything else resolves
as usual against pyproject.toml's bounds, and `pip check` stays clean.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.13.3"
LABEL = "minimix.1"
# the source release on PyPI; pip refuses any other file
SDIST = "aioxmpp==0.13.3 --hash=sha256:a2299e84f6d61137c6a046e2470aeebd8cd25515c1f3cefd681c322242d8056d"
PINNED = "Requires-Dist: lxml~=4.0\n"
RELAXED = "Requires-Dist: lxml<7,>=4.0\n"


def pip(*args: str | Path) -> None:
    """Run this Python's pip; stop with its exit code when it fails (it said why)."""
    code = subprocess.run([sys.executable, "-m", "pip", *map(str, args)]).returncode
    if code:
        sys.exit(code)


def relabel(wheel: Path, out: Path) -> Path:
    """A copy of aioxmpp's wheel in `out` with the lxml requirement relaxed and the local
    version label added; every other file byte for byte."""
    old, new = f"aioxmpp-{VERSION}.dist-info/", f"aioxmpp-{VERSION}+{LABEL}.dist-info/"
    with zipfile.ZipFile(wheel) as z:
        files = {n.replace(old, new, 1): z.read(n) for n in z.namelist()}
    metadata = files[new + "METADATA"].decode()
    if metadata.count(PINNED) != 1 or metadata.count(f"\nVersion: {VERSION}\n") != 1:
        sys.exit(f"install.py: {wheel.name} does not have the metadata this script expects")
    metadata = metadata.replace(PINNED, RELAXED)
    metadata = metadata.replace(f"\nVersion: {VERSION}\n", f"\nVersion: {VERSION}+{LABEL}\n")
    files[new + "METADATA"] = metadata.encode()
    record = new + "RECORD"
    files[record] = "".join(
        f"{name},sha256={digest(data)},{len(data)}\n"
        for name, data in files.items()
        if name != record
    ).encode() + f"{record},,\n".encode()
    target = out / wheel.name.replace(f"aioxmpp-{VERSION}-", f"aioxmpp-{VERSION}+{LABEL}-")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return target


def digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main(args: list[str]) -> None:
    if not args:
        sys.exit(__doc__.split("\n\n")[1])
    with tempfile.TemporaryDirectory(prefix="minimix-install-") as tmp:
        built, wheels = Path(tmp, "built"), Path(tmp, "wheels")
        wheels.mkdir()
        Path(tmp, "aioxmpp.txt").write_text(SDIST + "\n")
        pip("wheel", "--quiet", "--no-deps", "--require-hashes",
            "-r", Path(tmp, "aioxmpp.txt"), "-w", built)
        (wheel,) = built.glob(f"aioxmpp-{VERSION}-*.whl")
        relabel(wheel, wheels)
        # named exactly, so that pip cannot fall back to PyPI's aioxmpp 0.13.3 and with it
        # quietly downgrade lxml to 4
        pip("install", "--find-links", wheels, f"aioxmpp=={VERSION}+{LABEL}", *args)


if __name__ == "__main__":
    main(sys.argv[1:])
