"""An endpoint's own model list, read with the official SDKs (`client.models.list()`).

Blocking, for a Celery worker or an admin request's thread, never the web event loop. The SDKs'
objects stay in here: callers get `Listed` values, or a `ListingFailed` saying why in plain words.
"""

import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from providers.endpoints import Endpoint

# Enough for any real server; a list beyond it is cut rather than read forever.
MAX_MODELS = 500
# What OpenAI-compatible lists hold besides chat models (embeddings, speech, images, moderation):
# a chat picker must not offer them.
NOT_CHAT = re.compile(
    r"embed|whisper|tts|dall-e|moderation|transcribe|realtime|audio|image|sora|davinci|babbage|rerank|computer-use",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Listed:
    """One model an endpoint serves, as its list says."""

    id: str
    label: str
    context_window: int | None = None
    max_output_tokens: int | None = None


class ListingFailed(Exception):
    """The endpoint's list could not be read; the message says why, without the key."""


def list_models(endpoint: Endpoint, timeout: float | None = None) -> list[Listed]:
    timeout = settings.PARLEY_MODELS_LIST_TIMEOUT if timeout is None else timeout
    if endpoint.kind == "openai":
        return _openai(endpoint, timeout)
    return _anthropic(endpoint, timeout)


def _openai(endpoint: Endpoint, timeout: float) -> list[Listed]:
    import openai

    from providers.openai_chat import PLACEHOLDER_KEY

    # No retries: a schedule reads the list again soon, and an admin waiting on a click should not.
    client = openai.OpenAI(api_key=endpoint.api_key or PLACEHOLDER_KEY, base_url=endpoint.base_url, timeout=timeout, max_retries=0)
    try:
        with client:
            found = []
            for model in client.models.list():
                if len(found) >= MAX_MODELS:
                    break
                if NOT_CHAT.search(model.id):
                    continue
                # vLLM says how long a context it serves (`max_model_len`), llama.cpp in its `meta`.
                window = _positive(getattr(model, "max_model_len", None)) or _llamacpp_window(getattr(model, "meta", None))
                found.append(Listed(model.id, model.id, window))
            return found
    except openai.APIStatusError as exc:
        raise ListingFailed(f"HTTP {exc.status_code}: {_message(exc.body) or exc.message}") from None
    except openai.APITimeoutError:
        raise ListingFailed(f"no answer within {timeout:g} s") from None
    except openai.APIConnectionError as exc:
        raise ListingFailed(f"could not connect: {exc.__cause__ or exc}") from None
    except (openai.OpenAIError, ValueError, TypeError, AttributeError) as exc:
        raise ListingFailed(f"unreadable model list: {exc}") from None


def _anthropic(endpoint: Endpoint, timeout: float) -> list[Listed]:
    import anthropic

    from providers.anthropic_messages import PLACEHOLDER_KEY

    client = anthropic.Anthropic(
        api_key=endpoint.api_key or PLACEHOLDER_KEY, base_url=endpoint.base_url, timeout=timeout, max_retries=0
    )
    try:
        with client:
            found = []
            # Iterating the page follows `has_more` / `last_id` through every page.
            for model in client.models.list(limit=100):
                if len(found) >= MAX_MODELS:
                    break
                found.append(
                    Listed(
                        model.id, model.id,
                        _positive(getattr(model, "max_input_tokens", None)), _positive(getattr(model, "max_tokens", None)),
                    )
                )
            return found
    except anthropic.APIStatusError as exc:
        raise ListingFailed(f"HTTP {exc.status_code}: {_message(exc.body) or exc.message}") from None
    except anthropic.APITimeoutError:
        raise ListingFailed(f"no answer within {timeout:g} s") from None
    except anthropic.APIConnectionError as exc:
        raise ListingFailed(f"could not connect: {exc.__cause__ or exc}") from None
    except (anthropic.AnthropicError, ValueError, TypeError, AttributeError) as exc:
        raise ListingFailed(f"unreadable model list: {exc}") from None


def _llamacpp_window(meta: object) -> int | None:
    """The context llama.cpp serves a request in: `n_ctx`, its slot's window (its `-c` shared among
    `--parallel` slots), which newer builds list beside `n_ctx_train`, what the model was trained
    for. A prompt must fit the first: a longer one is refused with exceed_context_size_error."""
    if not isinstance(meta, dict):
        return None
    return _positive(meta.get("n_ctx")) or _positive(meta.get("n_ctx_train"))


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _message(body: object) -> str:
    """The error's own words: the OpenAI SDK keeps the inner `error` object, Anthropic's the whole body."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:300]
    return ""
