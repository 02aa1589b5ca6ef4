"""Who may read `/metrics`: it names models, routes and spend, so not the public.

Allowed: a request from a loopback address; one from a network listed in PARLEY_METRICS_ALLOW; or
one with `Authorization: Bearer <PARLEY_METRICS_TOKEN>` (compared in constant time), from anywhere.

Which address counts. With PARLEY_TRUSTED_PROXIES=N (the proxies that append to X-Forwarded-For,
as for the sign-in throttles), the address the outermost of them added; a request with fewer
entries than that is refused. With no trusted proxies it is the connection's own address, but:
- a request showing it came through a proxy Parley was not told about (X-Forwarded-For, Forwarded,
  X-Real-IP or X-Forwarded-Proto/-Host present) is let in by the token alone. Its connection may be
  a same-host proxy's loopback, and daphne run with `--proxy-headers` (docker/entrypoint.sh) takes
  the connection's address from the client's own first X-Forwarded-For entry, so no address of it
  can be trusted;
- while BEHIND_TLS_PROXY is set, loopback does not count (a same-host proxy may not add any of
  those headers); listed networks do, for a scraper that connects directly.
Better still, the proxy does not forward `/metrics` at all.
"""

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")


def may_read_metrics(request: HttpRequest) -> bool:
    if _has_token(request):
        return True
    address, loopback_counts = client_address(request)
    if address is None:
        return False
    if address.is_loopback and loopback_counts:
        return True
    return any(address in network for network in settings.PARLEY_METRICS_ALLOW)


def client_address(request: HttpRequest) -> tuple[Address | None, bool]:
    """The address that counts (None: none can be trusted), and whether loopback may count as such."""
    proxies = settings.PARLEY_TRUSTED_PROXIES
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) < proxies:
            return None, False
        return _parse(forwarded[-proxies]), True
    if any(request.META.get(header) for header in PROXY_HEADERS):
        return None, False
    return _parse(request.META.get("REMOTE_ADDR", "")), not settings.BEHIND_TLS_PROXY


def _has_token(request: HttpRequest) -> bool:
    expected = settings.PARLEY_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, given = header.partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def _parse(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
