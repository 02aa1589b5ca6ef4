"""Readers of a protocol call's fields that every wire format shares: numbers in range, stop
sequences, tool declarations, images sent inline. Each raises ActionError("invalid_input") naming
the field, so a client learns exactly what to fix."""

import base64
import binascii
import re
from typing import Any

from django.conf import settings

from chat.actions import ActionError
from chat.images import read_header
from providers.base import IMAGE_TYPES, Image

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_TOOLS = 128
MAX_STOPS = 4


def invalid(field: str, words: str) -> ActionError:
    error = ActionError("invalid_input", f"{field}: {words}")
    error.param = field  # type: ignore[attr-defined]
    return error


def optional_int(data: dict[str, Any], field: str, minimum: int = 1) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise invalid(field, f"must be a whole number of at least {minimum}.")
    return value


def optional_number(data: dict[str, Any], field: str, low: float, high: float) -> float | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise invalid(field, f"must be a number from {low:g} to {high:g}.")
    return float(value)


def optional_bool(data: dict[str, Any], field: str) -> bool:
    value = data.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false.")
    return value


def optional_text(data: dict[str, Any], field: str, most: int = 256) -> str:
    value = data.get(field)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > most:
        raise invalid(field, f"must be text of at most {most} characters.")
    return value


def stop_sequences(value: object, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_STOPS or not all(isinstance(s, str) and s for s in items):
        raise invalid(field, f"must be a non-empty text or a list of at most {MAX_STOPS} of them.")
    return tuple(items)


def tool(name: object, description: object, parameters: object, field: str) -> dict[str, Any]:
    """A tool declaration in Parley's terms (providers.base.ChatRequest.tools)."""
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise invalid(f"{field}.name", "must be 1 to 64 letters, digits, underscores or dashes.")
    if description is not None and not isinstance(description, str):
        raise invalid(f"{field}.description", "must be text.")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise invalid(f"{field}.parameters", "must be a JSON Schema object.")
    return {"name": name, "description": description or "", "parameters": parameters}


def tool_list(value: object, field: str) -> list[Any]:
    """A call's list of tool declarations, as sent (each read by its wire format): none, or a list
    of at most MAX_TOOLS."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(field, "must be a list.")
    if len(value) > MAX_TOOLS:
        raise invalid(field, f"at most {MAX_TOOLS} tools.")
    return value


def image(media_type: object, data: object, field: str) -> Image:
    """An image sent inline (base64): a PNG, JPEG, GIF or WebP within the image size limit.
    Nothing is fetched from the network: an image must come in the request."""
    if not isinstance(data, str):
        raise invalid(field, "must hold the image as base64 text.")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "is not valid base64.") from None
    if len(raw) > settings.PARLEY_IMAGE_MAX_BYTES:
        raise ActionError("file_too_large", f"{field}: an image may be at most {settings.PARLEY_IMAGE_MAX_BYTES:,} bytes.")
    header = read_header(raw)
    if media_type is not None and media_type != header.media_type:
        raise invalid(field, f"says {media_type} but holds {header.media_type}.")
    if header.media_type not in IMAGE_TYPES:
        raise invalid(field, "must be a PNG, JPEG, GIF or WebP image.")
    return Image(f"image-{len(raw)}", header.media_type, raw, header.width, header.height)


def data_url_image(url: object, field: str) -> Image:
    """An OpenAI `image_url` part: only `data:` URLs, since Parley fetches nothing."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise invalid(field, "must be a data: URL (data:image/png;base64,...); Parley does not fetch images.")
    head, _, payload = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if encoding != "base64":
        raise invalid(field, "must be base64-encoded (data:<type>;base64,...).")
    return image(media_type or None, payload, field)
