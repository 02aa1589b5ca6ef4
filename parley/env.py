"""Small typed readers for environment variables that fail loudly on bad values."""

import ipaddress
import os
import re
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off.")


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum of {maximum}.")
    return value


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}.")
    return value


def env_decimal(name: str) -> Decimal | None:
    """A positive amount such as 250 or 99.50; unset or empty: None."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an amount such as 250 or 99.50.") from None
    if not value.is_finite() or value <= 0:
        raise ImproperlyConfigured(f"{name}={raw!r} must be a positive amount.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated networks (`10.0.0.0/8`) or single addresses (`192.0.2.7`)."""
    networks = []
    for item in env_list(name, []):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not a network such as 10.0.0.0/8 or an address.") from None
    return networks


def env_url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip() or default
    if raw and not raw.startswith(tuple(f"{scheme}://" for scheme in schemes)):
        allowed = ", ".join(f"{scheme}://" for scheme in schemes)
        raise ImproperlyConfigured(f"{name}={raw!r} must start with one of: {allowed}")
    return raw


RESERVED_ENDPOINT_NAMES = frozenset({"openai", "anthropic", "demo"})
_ENDPOINT_NAME = re.compile(r"[a-z][a-z0-9-]{0,29}")
_KEY_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_endpoints(name: str, taken: frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    """Extra provider endpoints as `name=URL` or `name=URL|KEYVAR`, comma-separated, where KEYVAR is
    the environment variable that holds the endpoint's API key (kept out of the list itself).
    Gives (name, URL, key) triples; names are unique, lower-case, and none of `taken` or the
    built-in endpoints' names."""
    raw = os.environ.get(name, "").strip()
    found: list[tuple[str, str, str]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        label, sep, rest = item.partition("=")
        label = label.strip()
        url, _, key_variable = rest.strip().partition("|")
        url, key_variable = url.strip(), key_variable.strip()
        if not sep or not _ENDPOINT_NAME.fullmatch(label):
            raise ImproperlyConfigured(
                f"{name}: {item!r} must be name=URL or name=URL|KEYVAR, with a lower-case name of letters, digits"
                " and dashes (at most 30) that starts with a letter."
            )
        if label in RESERVED_ENDPOINT_NAMES or label in taken or any(label == seen for seen, _, _ in found):
            raise ImproperlyConfigured(f"{name}: the endpoint name {label!r} is already taken.")
        if not url.startswith(("http://", "https://")):
            raise ImproperlyConfigured(f"{name}: the URL of {label!r} must start with http:// or https://, not {url!r}.")
        key = ""
        if key_variable:
            if not _KEY_VARIABLE.fullmatch(key_variable):
                raise ImproperlyConfigured(f"{name}: {key_variable!r} (the key of {label!r}) is not a variable name.")
            key = os.environ.get(key_variable, "")
            if not key:
                raise ImproperlyConfigured(f"{name}: the key of {label!r} is read from {key_variable}, which is not set.")
        found.append((label, url.rstrip("/"), key))
    return found
