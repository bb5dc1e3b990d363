"""The /api/secrets endpoints: values are write-only, never answered (DESIGN sections 4 and 10)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from app.api import audit
from app.api.routes import _json_body, _object
from app.core.secrets import Secrets, check_name
from app.errors import BadRequest

bp = Blueprint("secrets", __name__, url_prefix="/api/secrets")


def _secrets() -> Secrets:
    return current_app.extensions["pyflow"].secrets


@bp.get("")
def list_secrets() -> Response:
    return jsonify(secrets=_secrets().names())


@bp.put("/<name>")
def put_secret(name: str) -> tuple[Response, int]:
    check_name(name)
    body = _json_body()
    if body is None:
        raise BadRequest('send the secret as {"value": "..."}')
    body = _object(body, "body")
    created = _secrets().set(name, body.get("value"))
    audit.record("secret.set", name)  # the name only: a value never enters the audit log
    record = next(record for record in _secrets().names() if record["name"] == name)
    return jsonify(record), 201 if created else 200


@bp.delete("/<name>")
def delete_secret(name: str) -> tuple[str, int]:
    _secrets().delete(name)
    audit.record("secret.delete", name)
    return "", 204
