"""PARLEY_OPENAI_ENDPOINTS / PARLEY_ANTHROPIC_ENDPOINTS are read strictly, and with the built-in
variables make the endpoints every model belongs to."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from parley.env import env_endpoints
from providers.endpoints import configured_endpoints


def test_endpoints_are_read_with_keys_from_their_own_variables(monkeypatch):
    monkeypatch.setenv("VLLM_KEY", "sk-vllm")
    monkeypatch.setenv("EXTRA", " local=http://127.0.0.1:8080/v1/ , vllm=https://gpu.example/v1|VLLM_KEY ,")
    assert env_endpoints("EXTRA") == [("local", "http://127.0.0.1:8080/v1", ""), ("vllm", "https://gpu.example/v1", "sk-vllm")]
    monkeypatch.setenv("EXTRA", "")
    assert env_endpoints("EXTRA") == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://127.0.0.1:8080/v1", "name=URL"),
        ("Local=http://127.0.0.1:8080/v1", "lower-case"),
        ("openai=http://127.0.0.1:8080/v1", "already taken"),
        ("a=http://h/v1,a=http://i/v1", "already taken"),
        ("a=ftp://h/v1", "must start with http"),
        ("a=http://h/v1|NOT_SET_ANYWHERE", "which is not set"),
        ("a=http://h/v1|bad-name", "not a variable name"),
    ],
)
def test_a_bad_endpoint_list_fails_loudly(monkeypatch, value, says):
    monkeypatch.setenv("EXTRA", value)
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ImproperlyConfigured, match=says):
        env_endpoints("EXTRA")


def test_a_name_cannot_serve_two_lists(monkeypatch):
    monkeypatch.setenv("EXTRA", "local=http://h/v1")
    with pytest.raises(ImproperlyConfigured, match="already taken"):
        env_endpoints("EXTRA", frozenset({"local"}))


def test_the_built_in_variables_and_the_lists_make_the_endpoints(settings):
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-openai", ""
    settings.ANTHROPIC_API_KEY, settings.ANTHROPIC_BASE_URL = "sk-ant", ""
    settings.PARLEY_OPENAI_ENDPOINTS = [("local", "http://127.0.0.1:8080/v1", "")]
    settings.PARLEY_ANTHROPIC_ENDPOINTS = [("proxy", "http://127.0.0.1:9000", "k")]
    found = configured_endpoints()
    assert [(e.name, e.kind, e.base_url, e.official) for e in found] == [
        ("openai", "openai", "https://api.openai.com/v1", True),
        ("anthropic", "anthropic", "https://api.anthropic.com", True),
        ("local", "openai", "http://127.0.0.1:8080/v1", False),
        ("proxy", "anthropic", "http://127.0.0.1:9000", False),
    ]
    assert "sk-openai" not in repr(found)  # keys never show in logs
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "", "http://127.0.0.1:8080/v1"
    assert not configured_endpoints()[0].official  # the same variable pointed at a local server
