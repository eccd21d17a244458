"""Validation of response bodies against Twilio's own OpenAPI document
(twilio_api_v2010.json, OpenAPI 3.0).

The response schema of an operation is taken for a status code, local $refs
are inlined, OpenAPI 3.0's `nullable: true` is turned into JSON-Schema type
unions (and `null` is added to enums), and the result is checked with
jsonschema's Draft 7 validator.  `format` is not enforced (Twilio uses
non-standard formats such as date-time-rfc-2822; the tests check dates
themselves)."""

import copy
import functools
import json
import pathlib
import re

import jsonschema

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
# Vendored with its MIT licence (tests/data/twilio-oai/README.md says from where).
SPEC_PATH = REPO_ROOT / "tests" / "data" / "twilio-oai" / "twilio_api_v2010.json"

# Keys that only OpenAPI knows; dropped so the result is plain JSON Schema.
_OPENAPI_ONLY = {"nullable", "example", "examples", "discriminator", "readOnly",
                 "writeOnly", "xml", "externalDocs", "deprecated"}


@functools.lru_cache(maxsize=1)
def load_spec(path=None):
    with open(path or SPEC_PATH, encoding="utf-8") as f:
        return json.load(f)


def _template_regex(template):
    parts = re.split(r"(\{[^}]+\})", template)
    rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile("^" + rx + "$")


def find_operation(path, method):
    """(template, operation) for a path template or a concrete path (query
    string ignored) and an HTTP method."""
    spec = load_spec()
    path = path.split("?", 1)[0]
    method = method.lower()
    paths = spec["paths"]
    if path in paths:
        template = path
    else:
        matches = [t for t in paths if _template_regex(t).match(path)]
        if not matches:
            raise KeyError(f"no OpenAPI path matches {path}")
        # Prefer the template with the most literal characters.
        template = max(matches, key=lambda t: len(re.sub(r"\{[^}]+\}", "", t)))
    ops = paths[template]
    if method not in ops:
        raise KeyError(f"{method.upper()} not defined for {template}")
    return template, ops[method]


def _resolve_ref(ref, spec):
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs are supported: {ref}")
    node = spec
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node


def to_json_schema(node, spec=None, strict=False, _stack=()):
    """Converts an OpenAPI 3.0 schema object into a JSON Schema (refs inlined,
    nullable expanded).  With strict=True objects that list properties get
    additionalProperties: false."""
    spec = spec or load_spec()
    if isinstance(node, list):
        return [to_json_schema(n, spec, strict, _stack) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if ref in _stack:
            raise ValueError(f"recursive $ref {ref}")
        target = to_json_schema(copy.deepcopy(_resolve_ref(ref, spec)), spec, strict,
                                _stack + (ref,))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if siblings.get("nullable") is True:
            target = _make_nullable(target)
        return target
    out = {}
    for k, v in node.items():
        if k in _OPENAPI_ONLY or k.startswith("x-"):
            continue
        if k == "properties":
            out[k] = {name: to_json_schema(s, spec, strict, _stack) for name, s in v.items()}
        elif k in ("items", "not", "additionalProperties") and isinstance(v, dict):
            out[k] = to_json_schema(v, spec, strict, _stack)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [to_json_schema(s, spec, strict, _stack) for s in v]
        else:
            out[k] = copy.deepcopy(v)
    if node.get("nullable") is True:
        out = _make_nullable(out)
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _make_nullable(schema):
    schema = dict(schema)
    t = schema.get("type")
    if isinstance(t, str):
        schema["type"] = [t, "null"]
    elif isinstance(t, list) and "null" not in t:
        schema["type"] = t + ["null"]
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = list(schema["enum"]) + [None]
    return schema


def _response(path, method, status):
    template, op = find_operation(path, method)
    responses = op.get("responses", {})
    resp = responses.get(str(status))
    if resp is None:
        raise KeyError(f"{method.upper()} {template}: no {status} response in the spec "
                       f"(has {sorted(responses)})")
    return template, resp


def response_schema(path, method, status, strict=False):
    """The JSON Schema of the application/json response body, or None when
    the spec declares no body (e.g. 204)."""
    _, resp = _response(path, method, status)
    content = resp.get("content", {}).get("application/json")
    if content is None or "schema" not in content:
        return None
    return to_json_schema(content["schema"], strict=strict)


def response_examples(path, method, status):
    """{example name: value} for a response, from the spec."""
    _, resp = _response(path, method, status)
    content = resp.get("content", {}).get("application/json", {})
    return {name: ex["value"] for name, ex in content.get("examples", {}).items()}


def schema_errors(path, method, status, body, strict=False):
    schema = response_schema(path, method, status, strict=strict)
    if schema is None:
        raise KeyError(f"{method.upper()} {path} {status}: no JSON body in the spec")
    v = jsonschema.Draft7Validator(schema)
    return sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))


def assert_matches_schema(path, method, status, body, strict=False):
    """Asserts body validates against the spec's response schema for
    (path, method, status); path may be a template or a concrete path."""
    errors = schema_errors(path, method, status, body, strict=strict)
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                 for e in errors[:20]]
        raise AssertionError(
            f"response of {method.upper()} {path.split('?')[0]} ({status}) does not match "
            f"the OpenAPI schema:\n  " + "\n  ".join(lines))
