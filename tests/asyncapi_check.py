"""A JSON Schema validator for one message of docs/asyncapi.json (the unit tests of the document
and the integration tests of what the services really send both check messages with it)."""

from __future__ import annotations

from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

URI = "urn:getoperate:asyncapi"


def validator(doc: dict[str, Any], message: str) -> jsonschema.Draft202012Validator:
    """A validator for a message's payload, resolving `#/components/...` inside the document."""
    registry: Registry[Any] = Registry().with_resource(
        URI, Resource.from_contents(doc, default_specification=DRAFT202012))
    payload = doc["components"]["messages"][message]["payload"]
    schema = {"$ref": URI + payload["$ref"]} if "$ref" in payload else payload
    return jsonschema.Draft202012Validator(schema, registry=registry)
