"""Unit tests of `minimix doctor`'s pure part: verdicts, local checks, rendering, and the CLI
paths that need no server (minimix.doctor; the server checks are in
tests/integration/test_doctor.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest

from minimix import doctor
from minimix.cli import EX_CONFIG, main
from minimix.doctor import Check, RoomProbe, Status

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
INTERVALS = (30.0, 900.0)


# -- rendering ---------------------------------------------------------------------------------

CHECKS = [
    Check("tls", Status.OK, "TLSv1.3; certificate verified"),
    Check("retract notify", Status.WARN, "no retracts", "upgrade"),
    Check("rooms", Status.INFO, "2 autojoin rooms"),
    Check("bookmarks", Status.SKIP, "skipped: no connection"),
]


def test_table_has_a_header_one_row_per_check_the_fix_below_and_a_summary():
    lines = doctor.render_table(CHECKS, 0).splitlines()

    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert lines[1].split(None, 2) == ["tls", "ok", "TLSv1.3; certificate verified"]
    assert lines[2].split() == ["retract", "notify", "warn", "no", "retracts"]
    detail_column = lines[0].index("DETAIL")
    assert lines[3] == " " * detail_column + "fix: upgrade"
    assert lines[1].index("TLSv1.3") == detail_column
    assert lines[-1] == "1 ok, 1 info, 1 warn, 1 skip: nothing failed (exit 0)"


def test_table_says_when_something_failed():
    checks = [*CHECKS, Check("tls", Status.FAIL, "not trusted", "set ca_file")]
    assert doctor.render_table(checks, 1).splitlines()[-1].endswith("something failed (exit 1)")


def test_json_is_the_list_of_checks_plus_a_summary():
    data = json.loads(doctor.render_json(CHECKS, 0))

    assert data["checks"][1] == {
        "check": "retract notify",
        "status": "warn",
        "detail": "no retracts",
        "fix": "upgrade",
    }
    assert data["checks"][0]["fix"] is None
    assert data["summary"] == {"ok": 1, "info": 1, "warn": 1, "fail": 0, "skip": 1, "exit_code": 0}


@pytest.mark.parametrize(
    ("statuses", "code"),
    [((), 0), ((Status.OK, Status.WARN, Status.INFO, Status.SKIP), 0), ((Status.OK, Status.FAIL), 1)],
)
def test_exit_status_is_1_only_when_something_failed(statuses, code):
    assert doctor.exit_status([Check("x", s, "") for s in statuses]) == code


def test_skipped_rows_say_why():
    rows = doctor.skipped(["login", "rooms"], "no TLS connection")
    assert [(r.check, r.status, r.detail) for r in rows] == [
        ("login", Status.SKIP, "skipped: no TLS connection"),
        ("rooms", Status.SKIP, "skipped: no TLS connection"),
    ]


# -- verdicts ---------------------------------------------------------------------------------


def test_tls_ok_names_version_anchor_and_expiry_and_warns_before_it_expires():
    ok = doctor.judge_tls_ok(version="TLSv1.3", cipher="X", hostname="example.org",
                             anchor="ca_file /ca.pem", not_after=NOW + dt.timedelta(days=90), now=NOW)
    assert ok.status is Status.OK
    assert "TLSv1.3" in ok.detail and "ca_file /ca.pem" in ok.detail and "2027-02-25" in ok.detail

    soon = doctor.judge_tls_ok(version="TLSv1.2", cipher=None, hostname="example.org",
                               anchor="system", not_after=NOW + dt.timedelta(days=3), now=NOW)
    assert soon.status is Status.WARN and "in 3 days" in soon.detail and soon.fix


@pytest.mark.parametrize(
    ("kwargs", "in_detail", "in_fix"),
    [
        ({"errors": [(20, 0, "unable to get local issuer certificate")], "ca_file": None},
         "not trusted", "set account.ca_file"),
        ({"errors": [(19, 1, "self-signed certificate in certificate chain")], "ca_file": Path("/ca.pem")},
         "not trusted", "account.ca_file (/ca.pem) is not the CA"),
        ({"errors": [(10, 0, "certificate has expired")]}, "has expired", "renew"),
        ({"mismatch_names": ["localhost", "conference.localhost"]},
         "is for localhost, conference.localhost, not example.org", "naming example.org"),
        ({"error": "TLSUnavailable: no STARTTLS"}, "no STARTTLS", "STARTTLS"),
    ],
)
def test_tls_failures_say_what_is_wrong_and_how_to_fix_it(kwargs, in_detail, in_fix):
    args = {"hostname": "example.org", "errors": [], "mismatch_names": None, "issuer": None,
            "ca_file": None, "error": None, **kwargs}
    check = doctor.judge_tls_failure(**args)
    assert check.status is Status.FAIL
    assert in_detail in check.detail
    assert in_fix in check.fix


def test_login_verdicts():
    scram = doctor.judge_login("SCRAM-SHA-256", ["SCRAM-SHA-256", "PLAIN"], False, "password_file f")
    assert scram.status is Status.OK and "offered: SCRAM-SHA-256, PLAIN" in scram.detail
    plain = doctor.judge_login("PLAIN", ["PLAIN"], False, "x")
    assert plain.status is Status.WARN and "SCRAM" in plain.detail and plain.fix
    refused = doctor.judge_login("SCRAM-SHA-1", ["SCRAM-SHA-1"], True, "password_file /p")
    assert refused.status is Status.FAIL and "refused" in refused.detail
    assert "password_file /p" in refused.fix


def test_stream_management_verdicts():
    assert doctor.judge_stream_management(True, True, True, 300).status is Status.OK
    assert "300 s" in doctor.judge_stream_management(True, True, True, 300).detail
    no_resume = doctor.judge_stream_management(True, True, False, None)
    assert no_resume.status is Status.WARN and "rejoins every room" in no_resume.detail
    absent = doctor.judge_stream_management(False, False, False, None)
    assert absent.status is Status.WARN and "not offered" in absent.detail and absent.fix


def test_carbons_are_information_only_and_account_mam_is_checked():
    assert doctor.judge_carbons(["urn:xmpp:carbons:2"]).status is Status.INFO
    assert doctor.judge_carbons([]).status is Status.INFO
    assert doctor.judge_account_mam(["urn:xmpp:mam:2"]).status is Status.OK
    assert doctor.judge_account_mam(["urn:xmpp:mam:1"]).status is Status.WARN


def bookmarks(**kw):
    args = {"compat": False, "pep": True, "pep_node": True, "pep_count": 2, "legacy_count": 1,
            "autojoin": 2, "rejected": 0, "poll_interval_s": 30.0, **kw}
    return doctor.judge_bookmarks(**args)


def test_bookmark_store_verdicts():
    assert bookmarks(compat=True).status is Status.OK
    two = bookmarks()
    assert two.status is Status.WARN and "separate stores" in two.detail
    assert "poll_interval_s (30 s)" in two.detail
    legacy = bookmarks(pep_node=False, pep_count=0, legacy_count=3)
    assert legacy.status is Status.WARN and "legacy XEP-0048 bookmarks only" in legacy.detail
    no_pep = bookmarks(pep=False, pep_node=False, legacy_count=0)
    assert "no PEP" in no_pep.detail
    assert "1 malformed bookmark skipped" in bookmarks(compat=True, rejected=1).detail


def test_node_config_verdicts():
    good = doctor.judge_node_config(
        {"pubsub#max_items": ["max"], "pubsub#access_model": ["whitelist"]}, None
    )
    assert [c.status for c in good] == [Status.OK, Status.OK]

    size, access = doctor.judge_node_config(
        {"pubsub#max_items": ["1"], "pubsub#access_model": ["presence"]}, None
    )
    assert size.status is Status.WARN and "replace the first" in size.detail
    assert "pubsub#max_items=max" in size.fix and "next time" not in size.fix
    assert access.status is Status.WARN and "your contacts" in access.detail
    assert "whitelist" in access.fix

    size, _ = doctor.judge_node_config({"pubsub#max_items": ["1"]}, None, options_refused=True)
    assert "minimix sets max_items=max the next time it writes" in size.fix

    assert {c.status for c in doctor.judge_node_config(None, None)} == {Status.INFO}
    assert {c.status for c in doctor.judge_node_config(None, "forbidden")} == {Status.WARN}


def test_notification_verdicts():
    assert doctor.judge_pep_notify(True, None, 900).status is Status.OK
    assert doctor.judge_pep_notify(False, None, 900).status is Status.WARN
    assert doctor.judge_retract_notify(True, False, INTERVALS).status is Status.OK
    polled = doctor.judge_retract_notify(False, False, INTERVALS)
    assert polled.status is Status.WARN
    assert "noticed by polling every poll_interval_s (30 s)" in polled.detail
    # with #compat the daemon does not poll: only the periodic re-read notices a removal
    assert "resync_interval_s (900 s)" in doctor.judge_retract_notify(False, True, INTERVALS).detail
    assert doctor.judge_retract_notify(None, False, INTERVALS).status is Status.SKIP


MAM2, EXT = "urn:xmpp:mam:2", "urn:xmpp:mam:2#extended"


@pytest.mark.parametrize(
    ("probe", "status", "words"),
    [
        (RoomProbe("r@c", "me", False, None, frozenset({MAM2, EXT}), "not-acceptable", False),
         Status.OK, "not joined, as expected"),
        (RoomProbe("r@c", "me", False, None, frozenset({MAM2, EXT}), "result", True),
         Status.OK, "joined, the daemon is in the room"),
        (RoomProbe("r@c", "me", False, None, frozenset({MAM2}), "not-acceptable", False),
         Status.WARN, "catch-up uses start-time + de-dup"),
        (RoomProbe("r@c", "me", False, None, frozenset(), "not-acceptable", False),
         Status.WARN, "no MAM"),
        (RoomProbe("r@c", "me", False, None, frozenset({MAM2, EXT}), "timeout", None),
         Status.WARN, "self-ping unanswered"),
        (RoomProbe("r@c", "me", False, "item-not-found", frozenset(), "item-not-found", None),
         Status.WARN, "does not exist"),
        (RoomProbe("r@c", "me", False, "timeout", frozenset(), "timeout", None),
         Status.WARN, "unreachable"),
        (RoomProbe("r@c", "me", False, None, frozenset({MAM2, EXT, "muc_passwordprotected"}),
                   "not-acceptable", False), Status.WARN, "has no password"),
        (RoomProbe("u@example.org", "me", False, None, frozenset(), "service-unavailable", True,
                   frozenset({"account/registered"})), Status.WARN, "not a group chat"),
    ],
)
def test_room_verdicts(probe, status, words):
    check = doctor.judge_room(probe)
    assert check.check == f"room {probe.room}"
    assert check.status is status
    assert words in check.detail


def test_rooms_summary_says_how_many_were_skipped():
    assert "skipped 12" in doctor.judge_rooms(62, 50).detail
    assert doctor.judge_rooms(0, 0).status is Status.INFO
    assert doctor.judge_rooms(3, 3).status is Status.OK


# -- local checks -------------------------------------------------------------------------------


def test_state_dir_is_written_and_left_clean(tmp_path):
    check = doctor.check_state_dir(tmp_path)
    assert check.status is Status.OK
    assert list(tmp_path.iterdir()) == []


def test_a_state_dir_still_to_be_made_is_fine_if_its_parent_is_writable(tmp_path):
    check = doctor.check_state_dir(tmp_path / "a" / "b")
    assert check.status is Status.OK and "does not exist yet" in check.detail


def test_a_state_dir_under_a_file_fails(tmp_path):
    (tmp_path / "file").write_text("")
    check = doctor.check_state_dir(tmp_path / "file" / "state")
    assert check.status is Status.FAIL and check.fix


def test_a_state_dir_readable_by_others_is_a_warning_with_the_fix(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    (state / "minimix.sqlite3").write_text("")
    (state / "minimix.sqlite3").chmod(0o644)
    check = doctor.check_state_dir(state)
    assert check.status is Status.WARN
    assert f"{state} (755), minimix.sqlite3 (644)" in check.detail and "makes them private" in check.detail
    assert check.fix == f"chmod 700 {state}; chmod 600 {state / 'minimix.sqlite3'}"
    assert (state.stat().st_mode & 0o777) == 0o755  # the doctor changes nothing


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_state_dir_readable_by_others_and_not_ours_fails(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    os.chown(state, 65534, 65534)
    check = doctor.check_state_dir(state)
    assert check.status is Status.FAIL and "refuses to start" in check.detail
    assert check.fix == f"as their owner: chmod 700 {state}"


def test_a_config_file_holding_the_password_readable_by_others_is_a_warning(tmp_path):
    path = tmp_path / "config.toml"
    assert doctor.check_config_file(path, None).status is Status.OK
    check = doctor.check_config_file(path, 0o644)
    assert check.status is Status.WARN and "(mode 644)" in check.detail and check.fix == f"chmod 600 {path}"


def systemctl(state: str | None):
    def run(argv, **kw):
        assert argv == ["systemctl", "--user", "is-enabled", "minimix.service"]
        if state is None:
            raise FileNotFoundError
        return subprocess.CompletedProcess(argv, 0 if state == "enabled" else 1, state + "\n", "")

    return run


def test_systemd_unit_enabled(tmp_path):
    check = doctor.check_systemd_unit({"HOME": str(tmp_path)}, systemctl("enabled"), lambda _: "/bin/systemctl")
    assert check.status is Status.OK and "enabled" in check.detail


def test_systemd_unit_installed_but_disabled_is_a_warning(tmp_path):
    check = doctor.check_systemd_unit({"HOME": str(tmp_path)}, systemctl("disabled"), lambda _: "/bin/systemctl")
    assert check.status is Status.WARN and check.fix == "systemctl --user enable --now minimix"


def test_systemd_unit_absent_is_a_warning_with_the_install_commands(tmp_path):
    check = doctor.check_systemd_unit(
        {"HOME": str(tmp_path)}, systemctl("Failed to connect to bus: No medium found"),
        lambda _: "/bin/systemctl",
    )
    assert check.status is Status.WARN and "not installed" in check.detail
    assert "by hand" in check.detail
    assert f"{tmp_path}/.config/systemd/user/minimix.service" in check.fix


def test_systemd_unit_file_found_without_systemctl(tmp_path):
    unit = tmp_path / "cfg" / "systemd" / "user" / "minimix.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    check = doctor.check_systemd_unit({"XDG_CONFIG_HOME": str(tmp_path / "cfg")}, systemctl(None), lambda _: None)
    assert check.status is Status.INFO and str(unit) in check.detail


# -- the command ----------------------------------------------------------------------------------


def test_doctor_config_error_exits_78(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = tmp_path / "broken.toml"
    config.write_text('[account]\njid = "not a jid"\npassword = "x"\n')

    assert main(["doctor", "--config", str(config)]) == EX_CONFIG
    out = capsys.readouterr()
    assert "account.jid" in out.err and out.out == ""


def test_doctor_without_password_is_a_config_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = tmp_path / "nopw.toml"
    config.write_text('[account]\njid = "alice@example.org"\n')

    assert main(["doctor", "--json", "--config", str(config)]) == EX_CONFIG
    assert "no password" in capsys.readouterr().err
