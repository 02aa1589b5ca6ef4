"""Canaries for the framework internals Parley's hot path relies on.

Django, channels, daphne, Twisted and the provider SDKs are pinned to exact versions in
pyproject.toml and the lock files (requirements.lock, requirements-test.lock). An upgrade that changes one of the private pieces below
fails here first, naming the Parley module to revisit, instead of breaking a stream at run time.
"""

import inspect
from importlib.metadata import version

import pytest

PINNED = {"django": "6.1.3", "channels": "4.3.2", "daphne": "4.2.3", "twisted": "26.10.0", "openai": "3.54.0",
          "anthropic": "2.12.0"}


@pytest.mark.parametrize("package", sorted(PINNED))
def test_the_pinned_versions_are_the_ones_installed(package):
    assert version(package) == PINNED[package], (
        f"{package} {version(package)} is installed, but Parley is pinned to {PINNED[package]}: run `bin/parley setup`, "
        "or, upgrading on purpose, check the canaries below and update pyproject.toml, both lock files and PINNED."
    )


def source(function: object) -> str:
    return inspect.getsource(function)  # type: ignore[arg-type]


def test_the_orm_pieces_that_parley_statements_uses_are_there():
    from django.db import connection
    from django.db.models import Model
    from django.db.models.base import ModelState

    from chat.models import Message

    hint = "parley/statements.py builds SQL from these ORM internals"
    assert list(inspect.signature(Model.from_db).parameters)[:3] == ["db", "field_names", "values"], hint
    assert hasattr(ModelState(), "adding") and hasattr(ModelState(), "db"), hint
    field = Message._meta.get_field("content")
    for name in ("get_col", "get_db_converters", "pre_save", "get_db_prep_save", "attname", "column"):
        assert hasattr(field, name), f"{hint}: Field.{name}"
    assert Message._meta.concrete_fields and Message._meta.db_table and Message._meta.pk.column, hint
    for name in ("quote_name", "get_db_converters"):
        assert hasattr(connection.ops, name), f"{hint}: connection.ops.{name}"
    for name in ("can_return_columns_from_insert", "has_select_for_update_of"):
        assert hasattr(connection.features, name), f"{hint}: connection.features.{name}"


def test_middleware_mixin_still_dispatches_to_acall():
    from django.utils.deprecation import MiddlewareMixin

    async def get_response(request: object) -> None:
        return None

    middleware = MiddlewareMixin(get_response)
    hint = "parley/middleware.py overrides MiddlewareMixin.__acall__ to run hooks without a thread hop"
    assert middleware.async_mode is True, hint
    assert "self.__acall__(request)" in source(MiddlewareMixin.__call__), hint
    assert inspect.iscoroutinefunction(MiddlewareMixin.__acall__), hint


def test_the_asgi_handler_still_wraps_handle_in_a_per_request_context():
    from django.core.handlers.asgi import ASGIHandler

    hint = "parley/handler.py calls ASGIHandler.handle directly to skip the per-request thread context"
    assert "ThreadSensitiveContext" in source(ASGIHandler.__call__) and "self.handle(" in source(ASGIHandler.__call__), hint
    assert list(inspect.signature(ASGIHandler.handle).parameters) == ["self", "scope", "receive", "send"], hint


def test_the_sdks_raw_stream_header_is_what_parley_sends():
    import anthropic._constants
    import openai
    import openai._constants

    from providers.openai_chat import RAW_STREAM

    hint = "providers read the raw body through the SDKs' raw streaming-response header"
    assert openai._constants.RAW_RESPONSE_HEADER == anthropic._constants.RAW_RESPONSE_HEADER == "X-Stainless-Raw-Response", hint
    assert RAW_STREAM == {openai._constants.RAW_RESPONSE_HEADER: "stream"}, hint
    assert {"path", "cast_to", "body", "options", "stream"} <= set(inspect.signature(openai.AsyncOpenAI.post).parameters), hint


def test_daphne_and_twisted_still_build_what_parley_transport_adjusts():
    from daphne import http_protocol, server
    from twisted.web import http

    hint = "parley/transport.py swaps daphne's HTTP channel and sets autobahn options once the server is ready"
    init = source(server.Server.__init__) + source(server.Server.run)
    assert "ready_callable" in inspect.signature(server.Server.__init__).parameters, hint
    assert "self.http_factory" in init and "self.ws_factory" in init, hint
    assert "http.HTTPFactory.buildProtocol(self, addr)" in source(http_protocol.HTTPFactory.buildProtocol), hint
    assert hasattr(http, "_GenericHTTPChannelProtocol"), hint
    assert http.HTTPChannel.MAX_LENGTH == 16384, hint
    for name in ("lineLengthExceeded", "dataReceived", "callLater", "connectionLost"):
        assert hasattr(http.HTTPChannel, name), f"{hint}: HTTPChannel.{name}"


def test_files_kept_on_a_new_message_read_as_prefetched():
    from django.db.models.fields.related_descriptors import create_forward_many_to_many_manager

    hint = "chat/attachments.py `link` fills the prefetch cache of a message it has just stored"
    assert "_prefetched_objects_cache[self.prefetch_cache_name]" in source(create_forward_many_to_many_manager), hint
    from django.db.models.query import QuerySet

    assert "_prefetch_done" in source(QuerySet._prefetch_related_objects) and "_result_cache" in source(QuerySet._fetch_all), hint
