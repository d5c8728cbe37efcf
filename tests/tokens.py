"""Tokens a real deployment could run with (not the well-known ``dev-*`` ones,
which servers refuse outside --demo / --sandbox), and a platform config
holding them, for tests that start companions and servers as processes."""

from __future__ import annotations

from pathlib import Path

STAFF = "t-staff-4f1c2a9be07d3365"
SUPERVISOR = "t-supervisor-8d02c4e1b97a5f13"
SERVICE = "t-registry-0c9e7b21d4a86f5e"
METRICS = "t-metrics-5b7d91e3a2c4f608"
STAFF_ID, SUPERVISOR_ID, SERVICE_ID = "staff-01", "supervisor-01", "registry"


def platform_config(path: Path, extra: str = "", *, metrics_token: str = "") -> Path:
    """A platform TOML with these tokens (``extra``: more TOML after [auth])."""
    lines = [
        "[auth]",
        f'staff_tokens = {{ "{STAFF}" = "{STAFF_ID}" }}',
        f'supervisor_tokens = {{ "{SUPERVISOR}" = "{SUPERVISOR_ID}" }}',
        f'service_tokens = {{ "{SERVICE}" = "{SERVICE_ID}" }}',
        f'metrics_token = "{metrics_token}"',
        extra,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
