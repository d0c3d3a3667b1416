"""The verdicts on what the server does: :mod:`minimix.xmpp.doctor` gathers the facts (it
talks to the server) and hands them to the ``judge_*`` functions here, which turn them into
:class:`~minimix.doctor.report.Check` rows: a status, a one-line detail (what it means for
minimix) and a fix where there is one.  Nothing here ever sees the password."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from minimix.doctor.report import Check, Status, worst

# -- connection and TLS ---------------------------------------------------------------------

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) seen in the certificate verify callback.
X509_NOT_YET_VALID = 9
X509_EXPIRED = 10
X509_UNTRUSTED = {
    2,  # unable to get issuer certificate
    18,  # self-signed certificate
    19,  # self-signed certificate in certificate chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
    27,  # certificate not trusted
}
CERT_EXPIRY_WARN_DAYS = 14


def judge_connection(server: str, error: str | None) -> Check:
    if error is None:
        return Check("connection", Status.OK, f"connected to {server}")
    return Check(
        "connection",
        Status.FAIL,
        f"cannot reach {server}: {error}",
        "check account.host and account.port (without host: the domain's SRV record "
        "_xmpp-client._tcp), and that the server is running and reachable from here",
    )


def judge_tls_ok(
    *,
    version: str | None,
    cipher: str | None,
    hostname: str,
    anchor: str,
    not_after: dt.datetime | None,
    now: dt.datetime,
) -> Check:
    parts = [f"{version or 'TLS'}" + (f" ({cipher})" if cipher else "")]
    parts.append(f"certificate verified for {hostname}")
    parts.append(f"trust anchor: {anchor}")
    status, fix = Status.OK, None
    if not_after is not None:
        days = (not_after - now).days
        parts.append(f"expires {not_after:%Y-%m-%d}")
        if days < CERT_EXPIRY_WARN_DAYS:
            status = Status.WARN
            parts[-1] += f" (in {max(days, 0)} days): minimix will stop connecting then"
            fix = "the server's administrator must renew the certificate"
    return Check("tls", status, "; ".join(parts), fix)


def judge_tls_failure(
    *,
    hostname: str,
    errors: Sequence[tuple[int, int, str]],
    mismatch_names: Sequence[str] | None,
    issuer: str | None,
    ca_file: Path | None,
    error: str | None,
) -> Check:
    """*errors*: (X509 error code, depth, text) from the verify callback; *mismatch_names*:
    the names of a certificate that passed verification but does not name *hostname*."""
    consequence = "minimix cannot log in (it never connects without a verified certificate)"
    codes = {code for code, _depth, _text in errors}
    if codes & X509_UNTRUSTED:
        text = next(t for c, _d, t in errors if c in X509_UNTRUSTED)
        by = f" (issued by {issuer})" if issuer else ""
        detail = f"certificate of {hostname} not trusted: {text}{by}; {consequence}"
        if ca_file is not None:
            fix = (
                f"account.ca_file ({ca_file}) is not the CA that issued the server's certificate: "
                "point it at that CA's certificate (PEM), or remove it if the certificate is "
                "publicly trusted"
            )
        else:
            fix = (
                "if the server uses a private CA or a self-signed certificate, set "
                "account.ca_file to that CA's certificate (PEM); otherwise install the system's "
                "CA certificates (Debian: ca-certificates)"
            )
        return Check("tls", Status.FAIL, detail, fix)
    if X509_EXPIRED in codes or X509_NOT_YET_VALID in codes:
        when = "has expired" if X509_EXPIRED in codes else "is not valid yet"
        return Check(
            "tls",
            Status.FAIL,
            f"the certificate of {hostname} {when}; {consequence}",
            "the server's administrator must renew it (or check this machine's clock)",
        )
    if mismatch_names is not None:
        names = ", ".join(mismatch_names) or "no DNS name"
        return Check(
            "tls",
            Status.FAIL,
            f"the certificate is for {names}, not {hostname}; {consequence}",
            f"the server must present a certificate naming {hostname} (the domain of "
            "account.jid); account.host changes where minimix connects, not the name it checks",
        )
    if errors:
        text = "; ".join(sorted({t for _c, _d, t in errors}))
        return Check("tls", Status.FAIL, f"certificate of {hostname} rejected: {text}; {consequence}",
                     "check the server's certificate chain (openssl s_client -starttls xmpp)")
    return Check(
        "tls",
        Status.FAIL,
        f"TLS failed: {error or 'unknown error'}; {consequence}",
        "check that account.host/port is an XMPP client port offering STARTTLS",
    )


# -- login -------------------------------------------------------------------------------------


def judge_login(mechanism: str | None, offered: Sequence[str], refused: bool, source: str) -> Check:
    offer = f"offered: {', '.join(offered)}" if offered else "offered: unknown"
    if refused:
        return Check(
            "login",
            Status.FAIL,
            f"the server refused the credentials ({mechanism or 'SASL'}; {offer}); minimix "
            "exits 77 on this and systemd does not restart it",
            f"check account.jid and the password (from {source})",
        )
    if mechanism is None:
        return Check("login", Status.WARN, f"logged in, mechanism unknown ({offer})")
    if mechanism.upper().startswith("SCRAM-"):
        return Check("login", Status.OK, f"SASL {mechanism} ({offer})")
    return Check(
        "login",
        Status.WARN,
        f"SASL {mechanism} ({offer}): the server may not support SCRAM, so the password "
        "itself is sent (inside TLS) and the server may store it in a reversible form",
        "enable SCRAM on the server (Prosody: authentication = \"internal_hashed\")",
    )


# -- stream features ----------------------------------------------------------------------------


def judge_stream_management(offered: bool, enabled: bool, resumable: bool, max_s: int | None) -> Check:
    if offered and enabled and resumable:
        limit = f" for up to {max_s} s" if max_s else ""
        return Check(
            "stream management",
            Status.OK,
            f"XEP-0198 enabled with resumption{limit}: after a short network drop minimix "
            "resumes the session and stays in its rooms",
        )
    consequence = "after any network drop minimix logs in anew and rejoins every room"
    if offered and enabled:
        return Check("stream management", Status.WARN,
                     f"XEP-0198 enabled but the server refused resumption: {consequence}",
                     "allow session resumption on the server")
    if offered:
        return Check("stream management", Status.WARN,
                     f"XEP-0198 offered but could not be enabled: {consequence}")
    return Check(
        "stream management",
        Status.WARN,
        f"XEP-0198 (urn:xmpp:sm:3) not offered: {consequence}",
        "enable stream management on the server (Prosody: mod_smacks; ejabberd: "
        "mod_stream_mgmt)",
    )


def judge_carbons(features: Iterable[str]) -> Check:
    if "urn:xmpp:carbons:2" in set(features):
        return Check("carbons", Status.INFO, "XEP-0280 carbons advertised; minimix marks its "
                     "relays <private/> so they are not copied to your other clients")
    return Check("carbons", Status.INFO, "XEP-0280 carbons not advertised (minimix does not need them)")


def judge_account_mam(features: Iterable[str]) -> Check:
    if "urn:xmpp:mam:2" in set(features):
        return Check("account mam", Status.OK, "XEP-0313 archive (urn:xmpp:mam:2) on the account")
    return Check(
        "account mam",
        Status.WARN,
        "no XEP-0313 archive (urn:xmpp:mam:2) on the account: your clients cannot fetch what "
        "they missed while offline from the server",
        "enable message archiving on the server (Prosody: mod_mam; ejabberd: mod_mam)",
    )


# -- bookmarks ----------------------------------------------------------------------------------


def judge_bookmarks(
    *,
    compat: bool,
    pep: bool,
    pep_node: bool,
    pep_count: int,
    legacy_count: int | None,
    autojoin: int,
    rejected: int,
    poll_interval_s: float,
) -> Check:
    """*pep*: the account is a PEP service; *pep_node*: the XEP-0402 node exists;
    *legacy_count*: items in the legacy store (None if it could not be read)."""
    legacy = "?" if legacy_count is None else str(legacy_count)
    counts = f"{autojoin} autojoin room{'s' if autojoin != 1 else ''}"
    if rejected:
        counts += f", {rejected} malformed bookmark{'s' if rejected != 1 else ''} skipped"
    poll = (
        f"minimix reads both and re-reads them every poll_interval_s ({poll_interval_s:g} s), so "
        "a change made by another client may take that long to be followed"
    )
    if compat:
        return Check(
            "bookmarks",
            Status.OK,
            f"XEP-0402 with urn:xmpp:bookmarks:1#compat: the server keeps legacy (XEP-0048) and "
            f"XEP-0402 bookmarks in sync ({pep_count} bookmarks; {counts})",
        )
    if not pep or (not pep_node and legacy_count):
        where = "the account has no PEP" if not pep else "there is no XEP-0402 bookmark node"
        return Check(
            "bookmarks",
            Status.WARN,
            f"legacy XEP-0048 bookmarks only ({where}; {legacy} legacy bookmarks; {counts}): "
            f"{poll}",
            "use a client that writes XEP-0402 bookmarks (Conversations, Gajim, Dino) if the "
            "server supports them" if pep else "enable PEP on the server",
        )
    return Check(
        "bookmarks",
        Status.WARN,
        f"XEP-0402 without #compat: legacy (XEP-0048) and XEP-0402 are separate stores ({pep_count} "
        f"XEP-0402, {legacy} legacy; {counts}): {poll}",
        "edit bookmarks from clients that write XEP-0402 (a bookmark saved by a legacy-only "
        "client is not seen by the others); servers with #compat (Prosody 0.12 mod_bookmarks) "
        "keep the stores in sync",
    )


def judge_node_config(
    config: Mapping[str, Sequence[str]] | None,
    error: str | None,
    *,
    options_refused: bool | None = None,
) -> list[Check]:
    """The owner configuration of urn:xmpp:bookmarks:1 (*config* None: no such node).

    *options_refused*: the server refuses the XEP-0402 publish-options (ejabberd). Only then
    does minimix configure the node itself when it writes a bookmark; where they are
    accepted, a node configured otherwise makes them fail and minimix keeps that
    configuration (it publishes without options)."""
    names = ("bookmark node size", "bookmark node access")
    if error is not None:
        return [
            Check(n, Status.WARN, f"cannot read the configuration of urn:xmpp:bookmarks:1: {error}")
            for n in names
        ]
    if config is None:
        return [
            Check(
                n,
                Status.INFO,
                "no XEP-0402 bookmark node yet: it is created by the first client that saves a "
                "bookmark (minimix asks for max_items=max and access model whitelist)",
            )
            for n in names
        ]
    configure = "configure {} on urn:xmpp:bookmarks:1 (pubsub#owner, e.g. from your client's XML console)"
    checks = []
    max_items = next(iter(config.get("pubsub#max_items", ())), None)
    if max_items is None:
        checks.append(Check(names[0], Status.INFO, "max_items not reported by the server"))
    elif max_items.strip() == "1":
        fix = configure.format("pubsub#max_items=max")
        if options_refused:
            fix = f"minimix sets max_items=max the next time it writes a bookmark; or now: {fix}"
        checks.append(
            Check(
                names[0],
                Status.WARN,
                "max_items=1: saving a second bookmark would replace the first (what servers "
                "give a node created without the XEP-0402 publish-options)",
                fix,
            )
        )
    else:
        checks.append(Check(names[0], Status.OK, f"max_items={max_items}: one item per bookmark"))
    access = next(iter(config.get("pubsub#access_model", ())), None)
    if access == "whitelist":
        checks.append(Check(names[1], Status.OK, "access model whitelist: only you can read your bookmarks"))
    else:
        who = {
            "open": "anyone",
            "presence": "your contacts",
            "roster": "contacts in some roster groups",
            "authorize": "approved subscribers",
        }.get(access or "", "others")
        checks.append(
            Check(
                names[1],
                Status.WARN,
                f"access model {access or 'unknown'}: bookmarks (room passwords included) are "
                f"readable by {who}",
                configure.format("pubsub#access_model=whitelist"),
            )
        )
    return checks


def judge_publish_options(accepted: bool, error: str | None) -> Check:
    if accepted:
        return Check("publish-options", Status.OK,
                     "the XEP-0402 publish-options (max_items=max, whitelist, …) are accepted")
    return Check(
        "publish-options",
        Status.INFO,
        f"the XEP-0402 publish-options are refused ({error}): when minimix writes a bookmark it "
        "publishes with persist_items and access_model only and then configures the node "
        "itself (ejabberd issue #3044)",
    )


def judge_pep_notify(arrived: bool | None, error: str | None, resync_interval_s: float) -> Check:
    if arrived:
        return Check("pep notify", Status.OK, "a publish on a scratch node reached this client "
                     "(+notify in entity caps): bookmark changes arrive live")
    if arrived is None:
        return Check("pep notify", Status.WARN, f"could not test: {error}")
    return Check(
        "pep notify",
        Status.WARN,
        f"a publish on a scratch node never reached this client (+notify in entity caps): "
        f"minimix sees bookmark changes only when it re-reads them (every resync_interval_s = "
        f"{resync_interval_s:g} s)",
        "the server must support XEP-0163 PEP notifications based on entity caps",
    )


def judge_retract_notify(arrived: bool | None, compat: bool, bookmarks_cfg: tuple[float, float]) -> Check:
    """*bookmarks_cfg*: (poll_interval_s, resync_interval_s)."""
    if arrived:
        return Check("retract notify", Status.OK,
                     "a retract on a scratch node was notified: removed bookmarks are left at once")
    if arrived is None:
        return Check("retract notify", Status.SKIP, "skipped: PEP notifications do not work")
    poll, resync = bookmarks_cfg
    how = f"every resync_interval_s ({resync:g} s)" if compat else f"every poll_interval_s ({poll:g} s)"
    return Check(
        "retract notify",
        Status.WARN,
        f"the server does not notify retracted items: removals of bookmarks by other clients "
        f"are noticed by polling {how}",
        "a server update (ejabberd 23.01 sends no retract notifications; reported fixed "
        "upstream, issue #4326)",
    )


# -- rooms --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomProbe:
    """What one autojoin room answered. *info_error*: the disco#info error condition (or
    "timeout"); *ping*: "result", an error condition, or "timeout"; *joined*: what the
    answer means under XEP-0410 §4 (None: undecided)."""

    room: str
    nick: str
    has_password: bool
    info_error: str | None = None
    features: frozenset[str] = frozenset()
    ping: str | None = None
    joined: bool | None = None
    identities: frozenset[str] = frozenset({"conference/text"})  # "category/type"


def judge_rooms(total: int, checked: int) -> Check:
    if total == 0:
        return Check("rooms", Status.INFO, "no autojoin bookmarks: minimix has no room to join")
    if checked < total:
        return Check("rooms", Status.INFO,
                     f"{total} autojoin rooms; checked the first {checked}, skipped {total - checked}")
    return Check("rooms", Status.OK, f"{total} autojoin room{'s' if total != 1 else ''}, all checked")


def judge_room(probe: RoomProbe) -> Check:
    name = f"room {probe.room}"
    error = probe.info_error
    if error == "item-not-found":
        return Check(
            name,
            Status.WARN,
            "the room does not exist (disco#info: item-not-found): minimix cannot join it",
            "remove the bookmark or turn its autojoin off, or fix the room address",
        )
    if error in ("remote-server-not-found", "remote-server-timeout", "timeout"):
        return Check(
            name,
            Status.WARN,
            f"unreachable (disco#info: {error}): minimix keeps retrying to join",
            "check the room address; the room's server may be down",
        )
    if error is None and not any(i.startswith("conference/") for i in probe.identities):
        kinds = ", ".join(sorted(probe.identities)) or "none"
        return Check(
            name,
            Status.WARN,
            f"not a group chat (disco#info identities: {kinds}): minimix cannot join it",
            "fix the room address in the bookmark, or remove it",
        )
    parts: list[str] = []
    statuses = [Status.OK]
    fixes: list[str] = []
    if error is not None:
        parts.append(f"disco#info refused ({error})")
        statuses.append(Status.WARN)
    else:
        parts.append("reachable")
        if "urn:xmpp:mam:2" not in probe.features:
            parts.append("no MAM: messages sent while minimix was away are not caught up")
            statuses.append(Status.WARN)
        elif "urn:xmpp:mam:2#extended" not in probe.features:
            parts.append("MAM without #extended: catch-up uses start-time + de-dup")
            statuses.append(Status.WARN)
        else:
            parts.append("MAM with #extended")
        if "muc_passwordprotected" in probe.features and not probe.has_password:
            parts.append("password-protected, but the bookmark has no password")
            statuses.append(Status.WARN)
            fixes.append("add the room password to the bookmark")
    ping = probe.ping
    if ping in (None, "timeout"):
        parts.append("self-ping unanswered: minimix cannot tell a silent drop-out from this room")
        statuses.append(Status.WARN)
    elif probe.joined is None:
        parts.append(f"self-ping of {probe.nick} undecided ({ping}): minimix asks again later")
        statuses.append(Status.WARN)
    elif probe.joined:
        parts.append(f"self-ping of {probe.nick} answered ({ping}): joined, the daemon is in the room")
    else:
        parts.append(f"self-ping of {probe.nick} answered ({ping}): not joined, as expected from here")
    return Check(name, worst(statuses), "; ".join(parts), "; ".join(fixes) or None)


# -- local checks -------------------------------------------------------------------------------
