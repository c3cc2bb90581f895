"""OpenAPI 3.1 from the same msgspec types that validate requests and shape answers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from fanout import __version__
from fanout.api.routing import Operation

__all__ = ["build_openapi"]

REF = "#/components/schemas/{name}"
_PLACEHOLDER = re.compile(r"{(\w+)}")


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    details: Any = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


def _error_statuses(op: Operation) -> list[int]:
    statuses = [429]
    if op.body is not None:
        statuses += [400, 413, 422]
    if op.query is not None:
        statuses.append(422)
    if op.auth != "none":
        statuses.append(401)
    if op.auth == "service":
        statuses.append(403)
    if "{" in op.path:
        statuses.append(404)
    return sorted(set(statuses))


def _operation(op: Operation, schemas: dict[type, dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"summary": op.summary, "operationId": op.handler.__name__}
    if op.tag:
        doc["tags"] = [op.tag]
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PLACEHOLDER.findall(op.path)
    ]
    if op.query is not None:
        query_schema = schemas[op.query]
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required,
                           "schema": prop})  # fmt: skip
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas[op.body]}},
        }
    responses: dict[str, Any] = {}
    if op.response is not None:
        responses[str(op.status)] = {
            "description": "OK",
            "content": {"application/json": {"schema": schemas[op.response]}},
        }
    else:
        responses[str(op.status if op.status != 200 else 204)] = {"description": "No content"}
    for status in _error_statuses(op):
        responses[str(status)] = {
            "description": "Error",
            "content": {"application/json": {"schema": schemas[ErrorBody]}},
        }
    doc["responses"] = responses
    if op.auth != "none":
        doc["security"] = [{"bearer": []}]
    return doc


def build_openapi(operations: Sequence[Operation]) -> dict[str, Any]:
    types: list[type] = [ErrorBody]
    for op in operations:
        types += [t for t in (op.body, op.query, op.response) if t is not None]
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(unique, ref_template=REF)
    schemas = dict(zip(unique, refs, strict=True))
    for op in operations:  # query parameters are listed inline, not by reference
        if op.query is not None:
            schemas[op.query] = components[op.query.__name__]
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "fanout", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
