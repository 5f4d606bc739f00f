#!/usr/bin/env python3
"""Checks proto/: every schema is valid JSON Schema 2020-12, the AsyncAPI document points at
files that exist, and every example in proto/examples validates against its type's schema
(the Rust decoder is tested on the same examples, so schema and code must agree). It first
proves it can fail: a broken example must be rejected."""
import copy
import json
import pathlib
import sys

from jsonschema import Draft202012Validator

PROTO = pathlib.Path(__file__).resolve().parent.parent / "proto"


def main():
    schemas = {}
    for path in sorted((PROTO / "events").glob("*.schema.json")):
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        schemas[path.name.removesuffix(".schema.json")] = schema
    if not schemas:
        sys.exit("proto/events has no schemas")

    asyncapi = json.loads((PROTO / "asyncapi.json").read_text())
    for name, message in asyncapi["components"]["messages"].items():
        target = PROTO / message["payload"]["$ref"]
        if not target.exists():
            sys.exit(f"asyncapi message {name} points at missing {target}")
    if set(asyncapi["components"]["messages"]) != set(schemas):
        sys.exit("asyncapi.json and proto/events list different event types")

    examples = sorted((PROTO / "examples").glob("*.json"))
    for path in examples:
        example = json.loads(path.read_text())
        validator = Draft202012Validator(schemas[example["type"]])
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(example)]
        if errors:
            sys.exit(f"{path.name} does not match its schema:\n  " + "\n  ".join(errors))
        broken = copy.deepcopy(example)
        del broken["payload"][next(iter(schemas[example["type"]]["properties"]["payload"]["required"]))]
        if validator.is_valid(broken):
            sys.exit(f"schema for {example['type']} accepts an example with a required field removed")
    print(f"proto/: {len(schemas)} schemas valid, asyncapi consistent, {len(examples)} examples match")


if __name__ == "__main__":
    main()
