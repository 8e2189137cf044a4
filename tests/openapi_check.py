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
    # CherryPy serves "/eventmatch/" as "/eventmatch": the document names each path once. As
    # OpenAPI resolves paths, a concrete one comes before a templated one (/eventmatch/test).
    forms = (path, path.rstrip("/") or "/", path.rstrip("/") + "/")
    matches = sorted(
        (p for form in forms for pattern, p in templates if pattern.match(form)),
        key=lambda p: p.count("{"),
    )
    verb = "get" if method.upper() == "HEAD" else method.lower()  # HTTP: HEAD is GET's headers
    operation = spec["paths"][matches[0]].get(verb) if matches else None
    if operation is None:  # not described: it must be an error, in the one error shape
        assert status >= 400, f"{method} {path} answered {status} but is not in the document"
        if body:
            jsonschema.validate(json.loads(body), spec["components"]["schemas"]["Error"])
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
        _validator(matches[0], verb, str(status), kind).validate(json.loads(body))


@cache
def _validator(path: str, method: str, status: str, kind: str) -> Any:
    """One compiled validator per response (the fuzz tests send thousands of requests)."""
    spec, _ = _spec()
    responses = spec["paths"][path][method]["responses"]
    described = _resolve(spec, responses.get(status, responses.get("default")))
    declared = {k.split(";")[0]: v for k, v in described["content"].items()}
    # The schema's "#/components/..." references resolve inside this wrapper.
    schema = {**declared[kind]["schema"], "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)
