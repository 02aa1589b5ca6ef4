"""Tool arguments checked against the tool's JSON Schema before the tool runs.

The subset that tools here declare: an object of named properties, each a string (`minLength`,
`maxLength`, `enum`, `format: email`), an integer or number (`minimum`, `maximum`) or a boolean;
`required`; no properties beyond those declared. A model's invalid arguments become a tool error
that it reads and may correct, never a crash.
"""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}
_NAMES = {"string": "text", "integer": "an integer", "number": "a number", "boolean": "true or false"}


class InvalidArguments(ValueError):
    """The arguments do not fit the schema; the message says what to fix, for the model to read."""


def validated(schema: dict[str, Any], arguments: object) -> dict[str, Any]:
    if not isinstance(arguments, dict):
        raise InvalidArguments("The arguments must be a JSON object.")
    properties: dict[str, dict[str, Any]] = schema.get("properties", {})
    unknown = sorted(set(arguments) - set(properties))
    if unknown:
        raise InvalidArguments(f"Unknown argument(s): {', '.join(unknown)}. Expected: {', '.join(properties)}.")
    missing = [name for name in schema.get("required", []) if name not in arguments]
    if missing:
        raise InvalidArguments(f"Missing argument(s): {', '.join(missing)}.")
    for name, value in arguments.items():
        _check(name, properties[name], value)
    return dict(arguments)


def _check(name: str, rule: dict[str, Any], value: object) -> None:
    kind = rule.get("type", "string")
    if not isinstance(value, _TYPES[kind]) or (kind != "boolean" and isinstance(value, bool)):
        raise InvalidArguments(f"{name} must be {_NAMES[kind]}.")
    if "enum" in rule and value not in rule["enum"]:
        raise InvalidArguments(f"{name} must be one of: {', '.join(map(str, rule['enum']))}.")
    if isinstance(value, str):
        if len(value) < rule.get("minLength", 0):
            raise InvalidArguments(f"{name} must have at least {rule['minLength']} characters.")
        if "maxLength" in rule and len(value) > rule["maxLength"]:
            raise InvalidArguments(f"{name} must have at most {rule['maxLength']} characters.")
        if rule.get("format") == "email":
            try:
                validate_email(value)
            except ValidationError:
                raise InvalidArguments(f"{name} must be an e-mail address.") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in rule and value < rule["minimum"]:
            raise InvalidArguments(f"{name} must be at least {rule['minimum']}.")
        if "maximum" in rule and value > rule["maximum"]:
            raise InvalidArguments(f"{name} must be at most {rule['maximum']}.")
