"""OpenAPI schema post-processing (drf-spectacular ``POSTPROCESSING_HOOKS``).

drf-spectacular documents the success responses it can infer and the error responses an
operation declares itself. But every operation can also answer 401 (no or bad token), 403
(wrong role), 404 (no such object, or a page past the end), 429 (throttled, or a sign-in
locked out) and, when it reads input, 400 with DRF's validation errors (a dict of field →
messages, not always ``detail``). Clients and schemathesis's conformance checks need those
documented too; this hook adds them to every operation, with their real bodies.
"""

from __future__ import annotations

ERROR = {
    "type": "object",
    "description": "Why the request was refused.",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERROR = {
    "type": "object",
    "description": "Invalid input: each field's messages (a list of strings, or nested "
    "errors for a nested field), `non_field_errors`, or `detail`.",
    "additionalProperties": {},
}
ALWAYS = {
    "401": "Not signed in, or the token is invalid or expired.",
    "403": "Your role does not allow this.",
    "404": "No such object (or no such page of a listing).",
    "429": "Too many requests, or too many failed sign-ins: wait and try again.",
}
METHODS = {"get", "post", "put", "patch", "delete"}


def _json(ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _reads_input(operation: dict) -> bool:
    return "requestBody" in operation or any(
        p.get("in") == "query" for p in operation.get("parameters", [])
    )


def add_error_responses(result: dict, generator, request, public) -> dict:
    """Document 400/401/403/404/429 on every operation (see the module docstring)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR)
    schemas.setdefault("ValidationError", VALIDATION_ERROR)
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for code, description in ALWAYS.items():
                responses.setdefault(code, {"description": description, "content": _json("Error")})
            if _reads_input(operation) or method != "get":
                _document_validation_errors(responses)
    return result


def _document_validation_errors(responses: dict) -> None:
    documented = responses.get("400")
    if documented is None:
        responses["400"] = {"description": "Invalid input.", "content": _json("ValidationError")}
        return
    for media in documented.get("content", {}).values():
        schema = media.get("schema")
        if schema is not None:
            # The view's own refusal ({"detail": ...}) or a serializer's field errors.
            media["schema"] = {"anyOf": [schema, {"$ref": "#/components/schemas/ValidationError"}]}
