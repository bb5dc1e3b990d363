"""Roles and the one table of what each endpoint needs (DESIGN section 10).

viewer reads; operator also runs, controls runs, starts and stops workflows, polls, publishes
events and answers approvals; admin also manages definitions, secrets, tokens and reads the audit
log. WORKFLOW_API_TOKEN is an admin.

REQUIRED maps a Flask endpoint (``blueprint.function``) to the least role that may call it. An
endpoint not listed needs admin: a new endpoint is closed until someone decides who may use it.
Add a row here when you add an endpoint; nothing else needs to change (the dashboard asks ``allows``
which buttons to show).
"""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    """A token's role; a higher one may do everything a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The name the API uses: viewer, operator or admin."""
        return self.name.lower()

    @classmethod
    def parse(cls, name: object) -> Role:
        """The role called ``name``; ValueError naming the choices."""
        for role in cls:
            if role.label == name:
                return role
        raise ValueError(f"role must be one of {', '.join(NAMES)}, got {name!r}")


NAMES = tuple(role.label for role in Role)

REQUIRED: dict[str, Role] = {
    # -- reads ------------------------------------------------------------------------------
    "api.health": Role.VIEWER,
    "api.list_workflows": Role.VIEWER,
    "api.get_workflow": Role.VIEWER,
    "api.list_runs": Role.VIEWER,
    "api.get_run": Role.VIEWER,
    "api.get_run_logs": Role.VIEWER,
    "api.get_catalog": Role.VIEWER,
    # The designer (issue 18): versions read as the workflow does. Checking a draft (validate) is the admin's,
    # as creating is: binding renders the trigger's templates, whose errors could show setting values.
    "api.list_versions": Role.VIEWER,
    "api.get_version": Role.VIEWER,
    "dashboard.designer": Role.VIEWER,

    "api.openapi": Role.VIEWER,
    "metrics.api_metrics": Role.VIEWER,
    "metrics.prometheus_metrics": Role.VIEWER,
    "dashboard.workflows": Role.VIEWER,
    "dashboard.runs": Role.VIEWER,
    "dashboard.run": Role.VIEWER,
    "dashboard.favicon": Role.VIEWER,
    "dashboard.static": Role.VIEWER,
    "dashboard.login": Role.VIEWER,
    "dashboard.logout": Role.VIEWER,
    # -- operator: runs, run control, start/stop, polls, events, approvals -----------------------
    "api.create_run": Role.OPERATOR,
    "api.poll_workflow": Role.OPERATOR,
    "api.start_workflow": Role.OPERATOR,
    "api.stop_workflow": Role.OPERATOR,
    "api.control_run": Role.OPERATOR,
    "api.patch_variables": Role.OPERATOR,
    "api.publish_event": Role.OPERATOR,
    "api.answer_approval": Role.OPERATOR,
    "dashboard.approvals": Role.VIEWER,
    "dashboard.answer_approval": Role.OPERATOR,
    # The signed link is the credential (its path is open, app/api/auth.py OPEN_PREFIXES): anyone holding it.
    "dashboard.approval_link": Role.VIEWER,
    "dashboard.run_now": Role.OPERATOR,
    "dashboard.start_stop": Role.OPERATOR,
    "dashboard.control": Role.OPERATOR,
    # -- admin: definitions, secrets, tokens, audit (also every endpoint not listed) -------------
    "api.create_workflow": Role.ADMIN,
    "api.update_workflow": Role.ADMIN,
    "api.delete_workflow": Role.ADMIN,
    "api.validate_workflow": Role.ADMIN,
    "api.create_token": Role.ADMIN,
    "api.list_tokens": Role.ADMIN,
    "api.delete_token": Role.ADMIN,
    "api.list_audit": Role.ADMIN,
    "secrets.list_secrets": Role.ADMIN,
    "secrets.put_secret": Role.ADMIN,
    "secrets.delete_secret": Role.ADMIN,
    "dashboard.secrets": Role.ADMIN,
    "dashboard.set_secret": Role.ADMIN,
    "dashboard.delete_secret": Role.ADMIN,
    "dashboard.tokens": Role.ADMIN,
    "dashboard.create_token": Role.ADMIN,
    "dashboard.delete_token": Role.ADMIN,
    "dashboard.audit_log": Role.ADMIN,
    # Secrets (issue 15 item 1) are admin-only, as every endpoint not listed.
}


def required(endpoint: str | None) -> Role:
    """The least role that may call ``endpoint`` (admin when it is not listed)."""
    return REQUIRED.get(endpoint or "", Role.ADMIN)


def allows(role: Role, endpoint: str) -> bool:
    """Whether ``role`` may call ``endpoint``."""
    return role >= required(endpoint)
