"""A private ejabberd 23.01 (or 24.12, from the Debian 13 root) for tests, run as in the
ejabberd spike: `erl` directly (no ejabberdctl, which su's to the ejabberd user), no Erlang
distribution (so no epmd, node name or cookie), accounts registered over mod_http_api on a
second loopback port. 24.12 reads the same config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from string import Template

from . import certs
from .base import ServerError, XmppServer, free_port
from .root import TRIXIE_ROOT, unavailable

ERL = "/usr/bin/erl"
ERL_LIBS = "/usr/lib/x86_64-linux-gnu"
TEMPLATE = Path(__file__).with_name("ejabberd.yml.tmpl")


class EjabberdServer(XmppServer):
    """ejabberd with c2s (STARTTLS required) and mod_http_api on free loopback ports, MUC
    at conference.localhost, and a self-signed certificate that is also `ca_file`."""

    kind = "ejabberd"
    version = "23.01"
    mismatch_domain = "mismatch.localhost"
    bookmarks_compat = False  # legacy and PEP bookmarks are separate stores
    retract_notifications = False  # 23.01 sends no retract events to +notify resources
    mam_extended = False  # no urn:xmpp:mam:2#extended, after-id rejected
    push = True  # mod_push (XEP-0357)

    def __init__(self, workdir: Path | None = None):
        super().__init__(workdir)
        self.http_port = 0
        self.config_file = self.workdir / "ejabberd.yml"
        self.log_dir = self.workdir / "log"
        self.stdout_file = self.log_dir / "stdout.log"
        self.ca_file = self.workdir / "certs" / "server.crt"  # self-signed: its own trust anchor

    @classmethod
    def available(cls) -> str | None:
        """None if ejabberd can run here, else why not."""
        if cls.root:
            if why_not := unavailable(cls.root, ERL, f"{ERL_LIBS}/ejabberd-{cls.version}"):
                return why_not
        elif not os.access(ERL, os.X_OK) or not any(Path(ERL_LIBS).glob("ejabberd-*")):
            return "ejabberd (erl + ejabberd libs) not installed"
        if not shutil.which("openssl"):
            return "openssl CLI not installed"
        return None

    def _pick_ports(self) -> None:
        self.port = free_port(self.host)
        self.http_port = free_port(self.host)

    def _ports(self) -> list[int]:
        return [self.port, self.http_port]

    def _setup(self) -> None:
        d = self.workdir / "certs"
        for sub in (d, self.workdir / "db", self.log_dir):
            sub.mkdir(exist_ok=True)
        crt, key = certs.make_leaf(d, "server", [self.domain, self.muc_domain], ca=None)
        pem = d / "server.pem"
        pem.write_text(crt.read_text() + key.read_text())
        pem.chmod(0o600)
        certs.make_ca(d, "wrong-ca")

    def _write_config(self) -> None:
        self.config_file.write_text(
            Template(TEMPLATE.read_text()).substitute(
                domain=self.domain,
                mismatch_domain=self.mismatch_domain,
                host=self.host,
                port=self.port,
                http_port=self.http_port,
                certfile=self.workdir / "certs" / "server.pem",
            )
        )

    def _env(self) -> dict[str, str]:
        return dict(
            os.environ,
            EJABBERD_CONFIG_PATH=str(self.config_file),
            EJABBERD_LOG_PATH=str(self.log_dir / "ejabberd.log"),
            ERL_LIBS=ERL_LIBS,
            ERL_CRASH_DUMP=str(self.log_dir / "erl_crash.dump"),
            ERL_CRASH_DUMP_BYTES="0",
            HOME=str(self.workdir),  # keeps erl away from ~/.erlang.cookie
        )

    def _launch(self) -> subprocess.Popen:
        # erl execs erlexec, which execs beam.smp: the Popen pid is the server's pid.
        cmd = [
            ERL,
            "-noinput",
            "-noshell",
            "+K",
            "true",
            "-mnesia",
            "dir",
            f'"{self.workdir / "db"}"',
            "-s",
            "ejabberd",
        ]
        with open(self.stdout_file, "ab") as out:
            return subprocess.Popen(
                self._command(cmd),
                cwd=self.workdir,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def logs(self) -> str:
        parts = []
        for name in ("stdout.log", "error.log", "ejabberd.log"):
            f = self.log_dir / name
            if f.exists() and f.stat().st_size:
                parts.append(f"--- {name}\n" + f.read_text(errors="replace"))
        return "\n".join(parts)

    def api(self, command: str, **args) -> object:
        """Call a mod_http_api command (e.g. "registered_users", host="localhost")."""
        req = urllib.request.Request(
            f"http://{self.host}:{self.http_port}/api/{command}",
            data=json.dumps(args).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read().decode()
        except urllib.error.HTTPError as e:
            raise ServerError(
                f"ejabberd api {command} {args}: {e.code} {e.read().decode()}"
            ) from None
        return json.loads(body) if body else None

    def register(self, localpart: str, password: str, domain: str | None = None) -> str:
        domain = domain or self.domain
        self.api("register", user=localpart, host=domain, password=password)
        return f"{localpart}@{domain}"


class Ejabberd24Server(EjabberdServer):
    """ejabberd 24.12 (Debian 13's), run from the Debian 13 root (servers.root)."""

    kind = "ejabberd24"
    version = "24.12"
    root = TRIXIE_ROOT
    bookmarks_compat = True  # since 23.10 it syncs the stores itself and announces #compat
    retract_notifications = True  # since 24.12
