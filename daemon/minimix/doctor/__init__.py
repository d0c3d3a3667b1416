"""``minimix doctor``, without XMPP: the result model and rendering (report), the verdicts on
what the server does (server), the checks of this machine (host).  The checks that talk to
the server are in :mod:`minimix.xmpp.doctor`."""

from minimix.doctor.host import check_config_file, check_state_dir, check_systemd_unit
from minimix.doctor.report import (
    NETWORK_CHECKS,
    Check,
    Status,
    exit_status,
    render_json,
    render_table,
    skipped,
    summary,
    worst,
)
from minimix.doctor.server import (
    RoomProbe,
    judge_account_mam,
    judge_bookmarks,
    judge_carbons,
    judge_connection,
    judge_login,
    judge_node_config,
    judge_pep_notify,
    judge_publish_options,
    judge_retract_notify,
    judge_room,
    judge_rooms,
    judge_stream_management,
    judge_tls_failure,
    judge_tls_ok,
)

__all__ = [
    "NETWORK_CHECKS",
    "Check",
    "RoomProbe",
    "Status",
    "check_config_file",
    "check_state_dir",
    "check_systemd_unit",
    "exit_status",
    "judge_account_mam",
    "judge_bookmarks",
    "judge_carbons",
    "judge_connection",
    "judge_login",
    "judge_node_config",
    "judge_pep_notify",
    "judge_publish_options",
    "judge_retract_notify",
    "judge_room",
    "judge_rooms",
    "judge_stream_management",
    "judge_tls_failure",
    "judge_tls_ok",
    "render_json",
    "render_table",
    "skipped",
    "summary",
    "worst",
]
