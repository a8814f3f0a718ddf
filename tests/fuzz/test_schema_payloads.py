"""The schema-driven payloads the webhook target sends are what they claim to be: valid
against GitHub's schemas, checked by jsonschema with the schema files as they are
(references resolved by jsonschema, not by the generator's own inlining)."""

from __future__ import annotations

import json
import random
from functools import cache
from typing import Any

from hypothesis import given, settings
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.fuzz.label_strategies import randoms
from tests.fuzz.schema_payloads import ACTIONS, SCHEMAS, instance, schema


@cache
def _validator(action: str) -> Draft7Validator:
    registry: Registry[Any] = Registry().with_resources(
        (
            f"common/{path.name}",
            Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT7),
        )
        for path in (SCHEMAS / "common").glob("*.json")
    )
    path = SCHEMAS / "workflow_job" / f"{action}.schema.json"
    return Draft7Validator(json.loads(path.read_text()), registry=registry)


@settings(max_examples=100, deadline=None)
@given(rnd=randoms)
def test_every_generated_payload_is_valid_against_its_schema(rnd: random.Random) -> None:
    for action in ACTIONS:
        payload = instance(schema(action), rnd)
        _validator(action).validate(payload)
        assert payload["action"] == action or action == "waiting"
