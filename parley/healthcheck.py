"""`python -m parley.healthcheck`: the container image's HEALTHCHECK of a web process.

Asks GET /healthz of the daphne on 127.0.0.1:$PORT the way the proxy would: with a Host the site
answers to (the first name in ALLOWED_HOSTS) and, behind a TLS proxy, `X-Forwarded-Proto: https`,
so that neither the host check nor the HTTPS redirect answers in the endpoint's place. Exits 0 on a
2xx answer, 1 otherwise. Only the standard library and the environment: no Django start-up.
"""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Mapping

PATH = "/healthz"
TIMEOUT_SECONDS = 4.0
_TRUE = {"1", "true", "yes", "on"}


def host_header(environ: Mapping[str, str]) -> str:
    """The first allowed host that names one host ('*' and '.example.com' name none)."""
    for name in environ.get("ALLOWED_HOSTS", "").split(","):
        name = name.strip()
        if name and name != "*" and not name.startswith("."):
            return name
    return "localhost"


def request_headers(environ: Mapping[str, str]) -> dict[str, str]:
    headers = {"Host": host_header(environ), "User-Agent": "parley-healthcheck"}
    if environ.get("BEHIND_TLS_PROXY", "").strip().lower() in _TRUE:
        headers["X-Forwarded-Proto"] = "https"
    return headers


def probe(environ: Mapping[str, str]) -> tuple[bool, str]:
    port = int(environ.get("PORT") or 8000)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", PATH, headers=request_headers(environ))
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return False, f"GET {PATH} on port {port} failed: {exc}"
    finally:
        connection.close()
    return 200 <= status < 300, f"GET {PATH} on port {port}: {status}"


def main() -> int:
    healthy, line = probe(os.environ)
    print(line)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
