"""The model catalogue from the endpoints' own model lists.

`refresh` reads each configured endpoint's list (providers/listing.py; a network call, so from a
Celery worker or an admin's request thread, never the web event loop) and then, per endpoint in
one transaction: adds the models it lists, marks those it listed before and no longer does
unavailable, and records how the reading went (`ProviderEndpoint`). An endpoint that cannot be
read keeps its models as they were and says why; the next scheduled refresh tries again.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from chat.catalogue import KNOWN, VISION_MODELS, known_for
from chat.models import ChatModel, ProviderEndpoint
from providers.endpoints import Endpoint, configured_endpoints
from providers.listing import Listed, ListingFailed, list_models

logger = logging.getLogger(__name__)

NAME_MAX = ChatModel._meta.get_field("name").max_length


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one endpoint's refresh went, in words an admin reads."""

    endpoint: str
    ok: bool
    listed: int = 0
    added: int = 0
    gone: int = 0
    error: str = ""

    def __str__(self) -> str:
        if not self.ok:
            return f"{self.endpoint}: {self.error}"
        models = "model" if self.listed == 1 else "models"
        said = f"{self.endpoint}: {self.listed} {models} listed ({self.added} new, {self.gone} no longer listed)"
        return f"{said}; {self.error}" if self.error else said


def refresh(names: list[str] | None = None) -> list[Outcome]:
    """Read the model lists of the configured endpoints (of `names`, when given)."""
    endpoints = [endpoint for endpoint in configured_endpoints() if names is None or endpoint.name in names]
    if not endpoints:
        return []
    now = timezone.now()
    # All lists at once: an endpoint that is down costs its timeout once, not once per endpoint after it.
    with ThreadPoolExecutor(max_workers=min(len(endpoints), 8), thread_name_prefix="model-lists") as pool:
        readings = list(pool.map(_read, endpoints))
    return [_take(endpoint, reading, now) for endpoint, reading in zip(endpoints, readings, strict=True)]


def _read(endpoint: Endpoint) -> list[Listed] | ListingFailed:
    try:
        return list_models(endpoint)
    except ListingFailed as failed:
        return failed


def _take(endpoint: Endpoint, reading: list[Listed] | ListingFailed, now: datetime) -> Outcome:
    if isinstance(reading, ListingFailed):
        logger.warning("The model list of endpoint %s (%s) could not be read: %s", endpoint.name, endpoint.base_url, reading)
        _record(endpoint, ok=False, error=str(reading), now=now)
        return Outcome(endpoint.name, ok=False, error=str(reading))
    try:
        return store(endpoint, reading, now)
    except IntegrityError:
        # Another refresh (a worker's start, an admin's click) added the same new model first:
        # a second pass finds its row.
        return store(endpoint, reading, now)


def store(endpoint: Endpoint, listed: list[Listed], now: datetime | None = None) -> Outcome:
    """Bring the catalogue in line with one endpoint's list as read, in one transaction."""
    now = now or timezone.now()
    with transaction.atomic():
        outcome = _apply(endpoint, listed, now)
        _record(endpoint, ok=True, error=outcome.error, now=now, listed=outcome.listed)
    return outcome


def _apply(endpoint: Endpoint, listed: list[Listed], now: datetime) -> Outcome:
    known_rows = {row.model_id: row for row in ChatModel.objects.select_for_update().filter(endpoint=endpoint.name)}
    seen: set[int] = set()
    added = 0
    skipped = []
    for item in {item.id: item for item in listed}.values():  # a list naming a model twice: once
        row = known_rows.get(item.id)
        if row is None:
            row = _new_row(endpoint, item)
            if row is None:
                skipped.append(item.id)
                continue
            added += 1
        _price(row, endpoint, item.id)
        row.available, row.last_seen = True, now
        row.save()
        seen.add(row.pk)
    gone = [row.pk for row in known_rows.values() if row.pk not in seen and row.available]
    ChatModel.objects.filter(pk__in=gone).update(available=False)
    error = f"left out, as their names are taken or too long: {', '.join(skipped[:5])}" if skipped else ""
    return Outcome(endpoint.name, ok=True, listed=len(seen), added=added, gone=len(gone), error=error)


def _new_row(endpoint: Endpoint, item: Listed) -> ChatModel | None:
    """A row for a model the endpoint lists for the first time: a row of that name added by hand for
    this provider's default endpoint becomes this endpoint's; a name taken otherwise is left out."""
    name = endpoint.model_name(item.id)
    if len(name) > NAME_MAX:
        return None
    taken = ChatModel.objects.filter(name=name).first()
    if taken is not None:
        if taken.endpoint or taken.base_url or taken.provider != endpoint.kind or not endpoint.builtin:
            return None
        taken.endpoint, taken.remote_name = endpoint.name, item.id
        return taken
    known = known_for(endpoint.kind, endpoint.official, item.id)
    return ChatModel(
        name=name, remote_name=item.id, endpoint=endpoint.name, provider=endpoint.kind,
        # The provider's own id, so that the picker never calls a model something it is not.
        label=(known.label if known else item.label if endpoint.builtin else f"{item.label} · {endpoint.name}")[:100],
        context_window=known.context_window if known else item.context_window or 8192,
        max_output_tokens=known.max_output_tokens if known else item.max_output_tokens or 2048,
        sort_order=known.sort_order if known else 100,
        enabled=settings.PARLEY_NEW_MODELS_ENABLED,
        # Known to read images only when it is one of the official models; admins tick the rest.
        supports_vision=known is not None and item.id in VISION_MODELS,
    )


def _price(row: ChatModel, endpoint: Endpoint, remote_id: str) -> None:
    """Known prices only where the official API lists the model by that name; prices an admin set
    stay as they are; prices once taken from the list go when the endpoint is no longer official."""
    known = known_for(endpoint.kind, endpoint.official, remote_id)
    if known is not None and (row.prices_from_list or not row.price_known):
        row.input_price_per_million, row.output_price_per_million = known.input_per_million, known.output_per_million
        row.prices_from_list = True
    elif known is None and row.prices_from_list:
        row.input_price_per_million = row.output_price_per_million = None
        row.prices_from_list = False
        listed_as = KNOWN.get(remote_id)
        if listed_as is not None and row.label == listed_as.label:
            row.label = remote_id  # another server's model of that id is not the official one


def _record(endpoint: Endpoint, *, ok: bool, error: str, now: datetime, listed: int | None = None) -> None:
    fields: dict[str, object] = {"kind": endpoint.kind, "base_url": endpoint.base_url, "ok": ok, "error": error, "checked_at": now}
    if ok:
        fields.update(last_ok_at=now, models_listed=listed or 0)
    ProviderEndpoint.objects.update_or_create(name=endpoint.name, defaults=fields)
