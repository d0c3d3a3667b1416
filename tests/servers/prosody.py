"""A private Prosody 0.12 (or 13 from the Debian 13 root) for tests (config derived from the
aioxmpp spike's; 13 reads the same config)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from . import certs
from .base import ServerError, XmppServer
from .root import TRIXIE_ROOT, unavailable

PROSODY = "/usr/bin/prosody"
PROSODYCTL = "/usr/bin/prosodyctl"
PROSODY_MODULES = "/usr/lib/prosody/modules"
PROSODY_VERSION = "/usr/lib/prosody/prosody.version"
ADMIN_NS = "{xmpp:prosody.im/admin}"


def lua_str(value: str | os.PathLike) -> str:
    """A Lua string literal."""
    s = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


@dataclass
class ProsodyOptions:
    #: load mod_bookmarks (XEP-0402 <-> XEP-0048 sync, announces #compat); False keeps
    #: mod_private only, for legacy-bookmark tests
    bookmarks: bool = True
    #: rooms kept in memory (Prosody default 100); the bench sets it high
    muc_room_cache_size: int | None = None
    #: extra modules on the MUC component (in addition to muc_mam)
    muc_modules: tuple[str, ...] = ()
    #: extra global modules
    modules: tuple[str, ...] = ()
    #: directories with extra plugins (mod_*.lua)
    plugin_paths: tuple[str, ...] = ()
    #: Lua text added to the global section / to the MUC component section
    extra_config: str = ""
    extra_muc_config: str = ""
    #: how long a dropped XEP-0198 session keeps its rooms
    smacks_hibernation_time: int = 120
    log_level: str = "info"


class ProsodyServer(XmppServer):
    """Prosody with c2s on a free loopback port, a test CA, MUC at conference.localhost,
    a `mismatch.localhost` host served with the `localhost` certificate, and the admin
    shell on a unix socket (see shell())."""

    kind = "prosody"
    mismatch_domain = "mismatch.localhost"
    retract_notifications = True
    mam_extended = True
    # XEP-0357 push: Prosody 13 has mod_cloud_notify; 0.12 has it from Debian's prosody-modules
    push = any(Path(PROSODY_MODULES, *p).exists()
               for p in (("mod_cloud_notify.lua",), ("mod_cloud_notify", "mod_cloud_notify.lua")))

    def __init__(self, workdir: Path | None = None, options: ProsodyOptions | None = None):
        super().__init__(workdir)
        self.options = options or ProsodyOptions()
        self.bookmarks_compat = self.options.bookmarks
        self.config_file = self.workdir / "prosody.cfg.lua"
        self.log_file = self.workdir / "prosody.log"
        self.stdout_file = self.workdir / "stdout.log"
        self.admin_socket = self.workdir / "admin.sock"
        if len(str(self.admin_socket)) > 100:
            raise ServerError(f"workdir path too long for a unix socket: {self.admin_socket}")

    @classmethod
    def version(cls) -> str:
        """The installed Prosody's version ("0.12.3", "13.0.1"), as its package records it.
        The facts below follow it, not the fixture's name: `.ci/py313` runs the `prosody`
        fixture inside the Debian 13 root, where /usr/bin/prosody is 13.0."""
        path = Path(cls.root or "/", PROSODY_VERSION.lstrip("/"))
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ServerError(f"cannot tell which Prosody this is: {e}") from None

    @property
    def mam_counts(self) -> bool:  # type: ignore[override]
        # 13.0's internal archive store answers without an RSM count (0.12's gives one)
        return not self.version().startswith("13.")

    @classmethod
    def available(cls) -> str | None:
        """None if Prosody can run here, else why not."""
        if cls.root:
            if why_not := unavailable(cls.root, PROSODY, PROSODYCTL):
                return why_not
        elif not (os.access(PROSODY, os.X_OK) and os.access(PROSODYCTL, os.X_OK)):
            return f"{PROSODY} not installed"
        if not shutil.which("openssl"):
            return "openssl CLI not installed"
        return None

    def _setup(self) -> None:
        d = self.workdir / "certs"
        d.mkdir(exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        ca = certs.make_ca(d, "ca")
        certs.make_leaf(d, "localhost", [self.domain, self.muc_domain], ca)
        certs.make_ca(d, "wrong-ca")

    def _write_config(self) -> None:
        o, w = self.options, self.workdir
        modules = [
            "tls",
            "saslauth",
            "disco",
            "pep",
            "carbons",
            "mam",
            "ping",
            "smacks",
            "private",
            "roster",
            "posix",
            "admin_shell",
            *o.modules,
        ]
        if self.push:
            modules.append("cloud_notify")
        if o.bookmarks:
            modules.insert(modules.index("private"), "bookmarks")
        muc_modules = ["muc_mam", *o.muc_modules]
        lua_list = lambda items: "{ " + ", ".join(lua_str(i) for i in items) + " }"  # noqa: E731
        cert, key = lua_str(w / "certs/localhost.crt"), lua_str(w / "certs/localhost.key")
        cfg = f"""-- generated by tests/servers/prosody.py
{"run_as_root = true" if os.geteuid() == 0 else ""}
pidfile = {lua_str(w / "prosody.pid")}
data_path = {lua_str(w / "data")}
certificates = {lua_str(w / "certs")}
plugin_paths = {lua_list(o.plugin_paths)}
interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
s2s_interfaces = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
admin_socket = {lua_str(self.admin_socket)}
log = {{ {o.log_level} = {lua_str(self.log_file)} }}
modules_enabled = {lua_list(modules)}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = true
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
archive_expires_after = "1w"
smacks_hibernation_time = {o.smacks_hibernation_time}
smacks_max_unacked_stanzas = 0
limits = {{}}
push_notification_with_body = true -- the tests tell which message woke the phone
ssl = {{ certificate = {cert}; key = {key}; }}
{o.extra_config}

VirtualHost "{self.domain}"
-- deliberately served with the localhost certificate: clients see a hostname mismatch
VirtualHost "{self.mismatch_domain}"

Component "{self.muc_domain}" "muc"
  modules_enabled = {lua_list(muc_modules)}
  muc_room_locking = false
  muc_room_default_persistent = true
  muc_room_default_public = true
  restrict_room_creation = false
  max_history_messages = 50
  {f"muc_room_cache_size = {o.muc_room_cache_size}" if o.muc_room_cache_size else ""}
{o.extra_muc_config}
"""
        self.config_file.write_text(cfg)

    def _launch(self) -> subprocess.Popen:
        with open(self.stdout_file, "ab") as out:
            return subprocess.Popen(
                self._command([PROSODY, "--config", str(self.config_file), "-F"]),
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def logs(self) -> str:
        parts = []
        for f in (self.stdout_file, self.log_file):
            if f.exists() and f.stat().st_size:
                parts.append(f.read_text(errors="replace"))
        return "\n".join(parts)

    # -- admin shell ----------------------------------------------------------------------

    def shell(self, command: str, timeout: float = 10.0) -> str:
        """Run one admin-shell line, exactly what `prosodyctl --config CFG shell 'command'`
        sends, over the admin socket (a few ms instead of a Lua start). A leading '>' runs
        plain Lua in Prosody's global environment. Returns the output lines and the result
        text; raises ServerError if the shell reports an error."""
        outputs, result = [], None
        parser = ET.XMLPullParser(events=("start", "end"))
        depth = 0
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.admin_socket))
            s.sendall(
                b"<?xml version='1.0'?><stream:stream xmlns='xmpp:prosody.im/admin' "
                b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
                + f"<repl-input>{escape(command)}</repl-input>".encode()
            )
            while result is None:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data = s.recv(65536)
                if not data:
                    raise ServerError(f"admin shell closed the connection on {command!r}")
                parser.feed(data)
                for event, el in parser.read_events():
                    depth += 1 if event == "start" else -1
                    if event == "end" and depth == 1:
                        if el.tag == ADMIN_NS + "repl-output":
                            outputs.append(el.text or "")
                        elif el.tag == ADMIN_NS + "repl-result":
                            result = el
            s.sendall(b"</stream:stream>")
        text = "\n".join([*outputs, result.text or ""]).strip()
        if result.get("type") == "error":
            raise ServerError(f"prosody shell {command!r}: {text}")
        return text

    def prosodyctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `prosodyctl --config CFG ARGS...` (e.g. "shell", "muc:list('conference.localhost')")."""
        return subprocess.run(
            self._command([PROSODYCTL, "--config", str(self.config_file), *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )

    def register(self, localpart: str, password: str, domain: str | None = None) -> str:
        jid = f"{localpart}@{domain or self.domain}"
        self.shell(f"user:create({lua_str(jid)}, {lua_str(password)})")
        return jid

    def remove_occupant(self, room: str, nick: str, notify_others: bool = True) -> str:
        """Make `room/nick` a ghost: the room forgets the occupant without telling its
        client (which still believes it is joined). With notify_others the remaining
        occupants get an unavailable presence with status 333, as when Prosody drops an
        occupant after a delivery error. Returns the shell's result text."""
        host = room.split("@", 1)[1]
        notify = (
            "for _, other in r:each_occupant() do "
            "r:publicise_occupant_status(o, x, nil, nil, nil, role, nil, other) end; "
            if notify_others
            else ""
        )
        lua = (
            f">local r = prosody.hosts[{lua_str(host)}].modules.muc.get_room_from_jid({lua_str(room)}); "
            f"local o = r and r:get_occupant_by_nick({lua_str(room + '/' + nick)}); "
            "if not o then return nil, 'no such occupant' end; "
            "local role = o.role; o.role = nil; r:save_occupant(o); "
            "local x = require'util.stanza'.stanza('x', {xmlns='http://jabber.org/protocol/muc#user'})"
            ":tag('status', {code='333'}):up(); "
            f"{notify}return 'removed'"
        )
        return self.shell(lua)


class Prosody13Server(ProsodyServer):
    """Prosody 13 (Debian 13's 13.0.1), run from the Debian 13 root (servers.root)."""

    kind = "prosody13"
    root = TRIXIE_ROOT
    # Its internal archive store (13.0.1): no RSM count (mam_counts, from version()), an
    # unknown after-id is not an error (the query matches nothing, or everything paging
    # backwards), and a start-only query also returns the last message before the start.
