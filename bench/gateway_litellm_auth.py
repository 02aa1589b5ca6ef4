"""Per-key budgets and limits for LiteLLM's proxy when its database cannot run (bench/gateway.py).

LiteLLM keeps virtual keys in PostgreSQL through Prisma, whose query and schema engines are
downloaded from Prisma's own servers, not from a package registry. Where that download is not
possible, this module is the proxy's `custom_auth`: it is loaded by LiteLLM (from its own
virtualenv, out of the config file's directory) and answers every call with the key's limits as a
`UserAPIKeyAuth`: the budget (`max_budget`, checked by LiteLLM's common checks against the key's
spend) and the rate limits (`rpm_limit`, `tpm_limit`, `max_parallel_requests`, enforced by
LiteLLM's in-memory limiter on every call). What this leaves out, against real virtual keys, is the
database: no key lookup, no spend written. So it flatters LiteLLM, if anything.

Limits come from the environment (GWBENCH_*), as bench/gateway.py sets them from Parley's plan.
"""

import hashlib
import os

from fastapi import HTTPException, Request
from litellm.proxy._types import UserAPIKeyAuth

KEY_PREFIX = "sk-gwbench-"
PROBE = "sk-gwbench-probe"
_keys: dict[str, UserAPIKeyAuth] = {}


def _known() -> set[str]:
    """sk-gwbench-0 … sk-gwbench-<GWBENCH_KEYS - 1>: one key per stream."""
    return {str(index) for index in range(int(os.environ["GWBENCH_KEYS"]))}


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key == PROBE:  # one request a minute: a second call in a row must be refused
        found = _keys.get(api_key) or _keys.setdefault(api_key, UserAPIKeyAuth(
            api_key=api_key, token=hashlib.sha256(api_key.encode()).hexdigest(), rpm_limit=1,
            max_budget=float(os.environ["GWBENCH_MAX_BUDGET"]), spend=0.0, models=[os.environ["GWBENCH_MODEL"]],
        ))
        return found
    if api_key.removeprefix(KEY_PREFIX) not in _known():
        raise HTTPException(status_code=401, detail="invalid key")
    found = _keys.get(api_key)
    if found is None:
        found = _keys[api_key] = UserAPIKeyAuth(
            api_key=api_key, token=hashlib.sha256(api_key.encode()).hexdigest(), key_alias=api_key[len(KEY_PREFIX):],
            max_budget=float(os.environ["GWBENCH_MAX_BUDGET"]), spend=0.0, budget_duration="30d",
            rpm_limit=int(os.environ["GWBENCH_RPM"]), tpm_limit=int(os.environ["GWBENCH_TPM"]),
            max_parallel_requests=int(os.environ["GWBENCH_PARALLEL"]), models=[os.environ["GWBENCH_MODEL"]],
        )
    return found
