"""Today's servers (Prosody 13, ejabberd 24.12) on this Debian 12 host: run with chroot from a
Debian 13 root that `.ci/trixie-root` builds once and caches (`make servers` does it).

Each server process gets its own mount namespace: /proc, a private /tmp and its workdir,
bind-mounted at the same path inside the root (so paths in configs and logs match). The
mounts die with the process, so nothing is ever mounted under the root in the host's view:
a crashed test run leaves no mount behind, and no `rm -rf` can walk through one into the host.
"""

from __future__ import annotations

import os
from pathlib import Path

#: where the Debian 13 root is cached (the same default in the Makefile and .ci/run)
TRIXIE_ROOT = Path(os.environ.get("MINIMIX_TRIXIE_ROOT", "/var/cache/minimix/trixie"))

_ENTER = """
root=$1 dir=$2; shift 2
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/tmp"
mkdir -p "$root$dir"
mount --bind "$dir" "$root$dir"
exec chroot "$root" env --chdir="$dir" "$@"
"""


def unavailable(root: Path, *programs: str) -> str | None:
    """None if `programs` (absolute paths inside `root`) can run from it here, else why not."""
    if os.geteuid() != 0:
        return f"running servers from the Debian 13 root {root} needs root (chroot, mounts)"
    missing = [p for p in programs if not os.path.lexists(root / p.lstrip("/"))]
    if missing:
        return (
            f"{', '.join(missing)} missing from the Debian 13 root {root} "
            "(`make servers` builds it; MINIMIX_TRIXIE_ROOT moves it)"
        )
    return None


def chrooted(root: Path, workdir: Path, argv: list[str]) -> list[str]:
    """`argv` run inside `root` with `workdir` visible at the same path and as the cwd.

    unshare, sh, chroot and env all exec: the returned command's pid is argv's pid."""
    return ["unshare", "--mount", "sh", "-euc", _ENTER, "sh", str(root), str(workdir), *argv]
