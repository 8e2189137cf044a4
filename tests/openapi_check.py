"""Every response the in-process API tests receive is checked against ``/openapi.json``'s document:
the path and method must be described, the status listed (or ``default``), the content type
declared, and a JSON body valid against its schema."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed

from pacifica.dispatcher.service.openapi import document


@cache
def _spec() -> tuple[dict[str, Any], list[tuple[re.Pattern[str], str]]]:
    spec = document()
    templates = [
        (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
        for path in spec["paths"]
    ]
    return spec, templates


def _resolve(spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        node: Any = spec
        for part in item["$ref"].lstrip("#/").split("/"):
            node = node[part]
        item = node
    return item


def check_response(
    method: str, path: str, status: int, headers: dict[str, str], body: bytes
) -> None:
    """Assert the response is one the document describes (paths it does not describe are 404s)."""
    spec, templates = _spec()
    # As OpenAPI resolves them: a concrete path before a templated one (/eventmatch/test).
    matches = sorted(
        (p for pattern, p in templates if pattern.match(path)), key=lambda p: p.count("{")
    )
    if not matches:
        assert status in (404, 405), f"{method} {path} answered {status} but is not in the document"
        return
    operation = spec["paths"][matches[0]].get(method.lower())
    if operation is None:
        assert status in (404, 405), f"{method} {path} ({status}) is not in the document"
        return
    responses = operation["responses"]
    described = responses.get(str(status), responses.get("default"))
    assert described is not None, f"{method} {path}: status {status} is not in the document"
    described = _resolve(spec, described)
    content = described.get("content")
    if not content or not body:
        return
    kind = headers.get("Content-Type", "").split(";")[0].strip()
    declared = {k.split(";")[0]: v for k, v in content.items()}
    assert kind in declared, f"{method} {path} {status}: {kind!r} not among {sorted(declared)}"
    if kind == "application/json":
        # The schema's "#/components/..." references resolve inside this wrapper.
        schema = {**declared[kind]["schema"], "components": spec["components"]}
        jsonschema.Draft202012Validator(schema).validate(json.loads(body))
