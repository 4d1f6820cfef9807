"""openapi.yaml: a valid OpenAPI document, in step with the routes the app registers, and true
to the bodies real ComfyUI answered (the reference captures).

The route check fails the build when someone adds a route without documenting it, or
documents one that is not served.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
import yaml

from comfyserve.config import Settings
from comfyserve.server.app import create_app
from tests.conftest import reference
from tests.serverproc import REPO

DOC_PATH = REPO / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# Registered routes that are deliberately not API operations.
NOT_OPERATIONS = {
    ("GET", "/{path}"): "the web UI's static files (catch-all)",
    ("*", "/internal/{tail}"): "the text 404 for unknown /internal/ paths (catch-all)",
}

# Files of the web UI, served by the static catch-all.
STATIC_FILES = {"/index.html"}

CAPTURE_FILES = [
    "routes_basic.json",
    "routes_extra.json",
    "queue_history.json",
    "prompt_validation.json",
    "upload.json",
    "view.json",
    "userdata.json",
    "object_info_misc.json",
    "ws_runs_tiny.json",
    "ws_runs_model.json",
]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(DOC_PATH.read_text())


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every documented operation."""
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def schema_objects(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Schema Object in the document: values of `schema` keys and `components.schemas`."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}/{key}"
            if key == "schema" and isinstance(value, dict):
                yield here, value
            elif key == "schemas" and where == "#/components":
                for name, schema in value.items():
                    yield f"{here}/{name}", schema
                continue
            yield from schema_objects(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from schema_objects(value, f"{where}/{index}")


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve_pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# --- the document itself --------------------------------------------------------------------


def test_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_path(str(DOC_PATH))
    schema.validate()
    assert schema.specification.version.startswith("3.1")


def test_every_schema_object_is_valid_json_schema(doc: dict[str, Any]) -> None:
    checked = 0
    for where, schema in schema_objects(doc):
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as exc:
            pytest.fail(f"{where} is not a valid JSON Schema: {exc}")
        checked += 1
    assert checked > 100


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    found = set(refs(doc))
    assert found
    for ref in found:
        try:
            resolve_pointer(doc, ref)
        except (KeyError, TypeError):
            pytest.fail(f"unresolvable $ref {ref}")


def test_every_operation_is_described(doc: dict[str, Any]) -> None:
    ids = [op.get("operationId") for _, _, op in operations(doc)]
    assert all(ids) and len(ids) == len(set(ids)), "every operation needs a unique operationId"
    for method, path, operation in operations(doc):
        assert operation.get("summary"), f"{method} {path} has no summary"
        assert operation.get("responses"), f"{method} {path} has no responses"


# --- in step with the app -------------------------------------------------------------------


def served_operations(base: Path) -> set[tuple[str, str]]:
    """(METHOD, path) the app registers, each `/api` twin folded into its plain route."""
    app = create_app(Settings(base_directory=base))
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    return {
        (method, path)
        for method, path in registered
        if not (path.startswith("/api/") and (method, path[len("/api") :]) in registered)
    }


def test_every_served_route_is_documented_and_nothing_more(doc: dict[str, Any], tmp_path: Path) -> None:
    served = served_operations(tmp_path) - set(NOT_OPERATIONS)
    documented = {(method, path) for method, path, _ in operations(doc)}
    assert sorted(served - documented) == [], "routes served but missing from openapi.yaml"
    assert sorted(documented - served) == [], "operations in openapi.yaml that the app does not serve"


# --- true to the reference captures ---------------------------------------------------------


def capture_records(node: Any, name: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every `{request, response}` record in a capture file, nested ones included."""
    if isinstance(node, dict):
        if isinstance(node.get("request"), dict) and isinstance(node.get("response"), dict):
            yield name, node
            return
        for key, value in node.items():
            yield from capture_records(value, f"{name}/{key}" if name else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from capture_records(value, f"{name}[{index}]")


def without_truncation_markers(value: Any) -> Any:
    """Drop the captures' `"<truncated: N more items …>"` list entries (structure is kept)."""
    if isinstance(value, list):
        return [
            without_truncation_markers(v)
            for v in value
            if not (isinstance(v, str) and v.startswith("<truncated"))
        ]
    if isinstance(value, dict):
        return {k: without_truncation_markers(v) for k, v in value.items()}
    return value


class Router:
    """Finds the documented operation for a concrete request path."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.patterns = [
            (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"), path)
            for path in sorted(doc["paths"], key=lambda p: (p.count("{"), -len(p)))
        ]

    def find(self, path: str) -> str | None:
        path = path.split("?", 1)[0]
        for candidate in (path, path[len("/api") :] if path.startswith("/api/") else None):
            if candidate is None:
                continue
            for pattern, documented in self.patterns:
                if pattern.match(candidate) and not (
                    candidate != path and documented.startswith("/internal/")
                ):
                    return documented
        return None


def response_validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for `schema` whose `#/components/...` references resolve in the document."""
    return jsonschema_rs.validator_for({**schema, "components": doc["components"]})


def deliberately_different(record: dict[str, Any]) -> bool:
    """Answers comfyserve deliberately does not reproduce: ComfyUI's 500s on bad input, 405s,
    HEAD/OPTIONS (not operations), and the cross-origin 403 (documented for every route)."""
    request, status = record["request"], record["response"]["status"]
    return (
        status in (405, 500)
        or request["method"] in ("HEAD", "OPTIONS")
        or (status == 403 and "Origin" in request.get("headers", {}))
    )


@pytest.mark.parametrize("capture", CAPTURE_FILES)
def test_reference_answers_conform_to_the_document(doc: dict[str, Any], capture: str) -> None:
    router = Router(doc)
    checked = 0
    for name, record in capture_records(reference(capture)):
        request, response = record["request"], record["response"]
        if deliberately_different(record):
            continue
        path = router.find(request["path"])
        if path is None:
            if request["path"] not in STATIC_FILES:
                assert response["status"] == 404, f"{name}: {request['path']} is not documented"
            continue
        operation = doc["paths"][path].get(request["method"].lower())
        if operation is None:
            assert response["status"] == 404, f"{name}: {request['method']} {path} is not documented"
            continue
        documented = operation["responses"].get(str(response["status"]))
        assert documented is not None, f"{name}: status {response['status']} of {request['method']} {path}"
        documented = resolve_pointer(doc, documented["$ref"]) if "$ref" in documented else documented
        checked += 1
        body = response.get("body", {})
        if body.get("kind") != "json":
            continue
        content = documented.get("content", {})
        if "application/json" not in content:
            assert "*/*" in content, f"{name}: JSON answer where {path} documents {list(content)}"
            continue  # a file download that happens to be JSON
        validator = response_validator(doc, content["application/json"]["schema"])
        errors = [str(e) for e in validator.iter_errors(without_truncation_markers(body["json"]))]
        assert errors == [], f"{name}: {request['method']} {request['path']} does not match the document"
    assert checked > 0
