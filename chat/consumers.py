"""The chat WebSocket: a thin transport over chat.replies."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.consumer import get_handler_name
from opentelemetry.trace import SpanKind

from agents.attach import attach_run
from chat.actions import ActionError
from chat.replies import attach, edit_message, follow_sent, regenerate_message, send_message, stop_message
from observability import context, metrics, tracing
from streaming import events, process
from streaming.entries import Entry

logger = logging.getLogger(__name__)

# Counted in characters for a text frame. A longer frame is answered `message_too_long` and the
# socket stays open; daphne reads messages up to 1 MiB (parley/transport.py), where every frame
# within this limit fits, and closes the socket with 1009 on a larger one.
MAX_FRAME_BYTES = 256 * 1024
MAX_ATTACHMENTS = 32
CLOSE_UNAUTHENTICATED = 4401


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Accepted first: a handshake refused outright reaches the browser as code 1006, and the
            # page would keep reconnecting instead of saying it is signed out.
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self.attachments: dict[int, asyncio.Task[None]] = {}
        self.run_attachments: dict[int, asyncio.Task[None]] = {}
        self.socket_id = uuid.uuid4().hex
        self.notice_sends: set[asyncio.Task[None]] = set()
        await self.accept()
        metrics.socket_opened()
        self.counted = True
        await process.current().feeds.listen(user.pk, self._on_notice)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its database hop before every frame (`aclose_old_connections`):
        that hop queues behind all the process's database work, so a burst of requests held every
        socket's frames, attaches and stops included, for seconds (bench/agents.py). The consumer's
        own database calls go through `database_sync_to_async`, which closes stale connections
        around each call itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        # Leaving never stops a generation: only the readers of this socket go away.
        if getattr(self, "counted", False):
            self.counted = False
            metrics.socket_closed()
        if hasattr(self, "socket_id"):
            process.current().feeds.stop_listening(self.user.pk, self._on_notice)
        for task in [*getattr(self, "attachments", {}).values(), *getattr(self, "run_attachments", {}).values()]:
            task.cancel()

    def _on_notice(self, payload: bytes) -> None:
        """Another tab sent a message, or a conversation changed: pass it on, except our own sends."""
        if f'"origin":"{self.socket_id}"'.encode() in payload:
            return
        task = asyncio.create_task(self.base_send({"type": "websocket.send", "text": payload.decode()}))
        self.notice_sends.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self.notice_sends.discard)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else bytes_data
        if raw is None:
            await self.send_event(events.request_error("invalid_frame", "Frames must be JSON text."))
            return
        if len(raw) > MAX_FRAME_BYTES:
            await self.send_event(events.request_error("message_too_long", "A frame must be at most 256 KiB."))
            return
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self.send_event(events.request_error("invalid_json"))
            return
        if not isinstance(frame, dict):
            await self.send_event(events.request_error("invalid_frame", "A frame must be a JSON object."))
            return
        problem = _malformed(frame)
        if problem:
            await self.send_event(events.request_error("invalid_frame", problem, ref=_echoable(frame.get("ref"))))
            return
        ref = frame.get("ref")
        handler = self.handlers.get(frame.get("type", ""))
        if handler is None:
            await self.send_event(events.request_error("invalid_frame", "Unknown frame type; use send, edit, regenerate, attach, stop, detach, attach_run or detach_run.", ref=ref))
            return
        context.set_user(self.user.pk)
        with tracing.span(f"WebSocket {frame['type']}", {"parley.frame": frame["type"]}, SpanKind.SERVER, new_trace=True) as span:
            try:
                await handler(self, frame)
            except ActionError as error:
                tracing.fail(span, error.code)
                await self.send_event(error.event(ref))
            except Exception as error:
                # One frame's failure must not close the socket (1011) and with it every reply it follows.
                logger.exception("A %s frame failed", frame["type"])
                tracing.fail(span, type(error).__qualname__)
                await self.send_event(events.request_error("server_error", ref=ref))

    async def on_send(self, frame: dict[str, Any]) -> None:
        event = await send_message(
            self.user, frame.get("conversation"), frame.get("content"), frame.get("model"), origin=self.socket_id,
            attachment_ids=frame.get("attachments"),
        )
        await self._follow_sent(frame, event)

    async def on_edit(self, frame: dict[str, Any]) -> None:
        await self._follow_sent(frame, await edit_message(self.user, frame.get("message"), frame.get("content"), origin=self.socket_id))

    async def on_regenerate(self, frame: dict[str, Any]) -> None:
        await self._follow_sent(frame, await regenerate_message(self.user, frame.get("message"), origin=self.socket_id))

    async def _follow_sent(self, frame: dict[str, Any], event: events.MessageEvent) -> None:
        """Answer a send, an edit or a regenerate with its `message` event, then follow its reply."""
        if frame.get("ref") is not None:
            event["ref"] = frame["ref"]
        await self.send_event(event)
        self._attach(event["assistant_message"]["id"], "", sent=event)

    async def on_attach(self, frame: dict[str, Any]) -> None:
        message_id = _message_id(frame)
        if events.parse_cursor(frame.get("after")) is None:
            raise ActionError("invalid_input", 'after must be a cursor such as "120-0".')
        if message_id not in self.attachments and len(self.attachments) >= MAX_ATTACHMENTS:
            raise ActionError("invalid_input", f"At most {MAX_ATTACHMENTS} replies can be followed at once.")
        self._attach(message_id, frame.get("after"), frame.get("ref"))

    async def on_stop(self, frame: dict[str, Any]) -> None:
        event = await stop_message(self.user, frame.get("message"))
        if frame.get("ref") is not None:
            await self.send_event({**event, "ref": frame["ref"]})

    async def on_detach(self, frame: dict[str, Any]) -> None:
        task = self.attachments.pop(_message_id(frame), None)
        if task is not None:
            task.cancel()

    async def on_attach_run(self, frame: dict[str, Any]) -> None:
        """Follow an agent run's log after a cursor; its events go out as they are, like a reply's."""
        run_id = _run_id(frame)
        after = frame.get("after", "0-0")
        if events.parse_cursor(after) is None:
            raise ActionError("invalid_input", 'after must be a cursor such as "12-0".')
        if run_id not in self.run_attachments and len(self.attachments) + len(self.run_attachments) >= MAX_ATTACHMENTS:
            raise ActionError("invalid_input", f"At most {MAX_ATTACHMENTS} replies and runs can be followed at once.")
        previous = self.run_attachments.pop(run_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._forward_run(run_id, after, frame.get("ref")))
        self.run_attachments[run_id] = task
        task.add_done_callback(lambda done: self.run_attachments.pop(run_id, None) if self.run_attachments.get(run_id) is done else None)

    async def on_detach_run(self, frame: dict[str, Any]) -> None:
        task = self.run_attachments.pop(_run_id(frame), None)
        if task is not None:
            task.cancel()

    handlers: dict[str, Callable[["ChatConsumer", dict[str, Any]], Awaitable[None]]] = {
        "send": on_send,
        "edit": on_edit,
        "regenerate": on_regenerate,
        "attach": on_attach,
        "stop": on_stop,
        "detach": on_detach,
        "attach_run": on_attach_run,
        "detach_run": on_detach_run,
    }

    def _attach(self, message_id: int, after: object, ref: object = None, sent: events.MessageEvent | None = None) -> None:
        previous = self.attachments.pop(message_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._forward(message_id, after, ref, sent))
        self.attachments[message_id] = task
        task.add_done_callback(lambda done: self._forget(message_id, done))

    def _forget(self, message_id: int, task: asyncio.Task[None]) -> None:
        if self.attachments.get(message_id) is task:
            del self.attachments[message_id]

    async def _forward(self, message_id: int, after: object, ref: object, sent: events.MessageEvent | None) -> None:
        batches = follow_sent(sent) if sent is not None else attach(self.user, message_id, after)
        broke = events.request_error("provider_unavailable", "The reply stream broke; re-attach to continue.", ref=ref)
        await self._pump(batches, ref, broke, f"reply {message_id}")

    async def _forward_run(self, run_id: int, after: object, ref: object) -> None:
        broke = events.request_error("server_error", "The run's stream broke; attach again to continue.", ref=ref)
        await self._pump(attach_run(self.user, run_id, after), ref, broke, f"run {run_id}")

    async def _pump(self, batches: AsyncIterator[list[Entry]], ref: object, broke: dict[str, Any], what: str) -> None:
        """Send a log's entries as they come; a refusal or a broken stream is answered on the socket."""
        try:
            async for batch in batches:
                for entry in batch:
                    await self.base_send({"type": "websocket.send", "text": entry.payload.decode()})
        except ActionError as error:
            await self.send_event(error.event(ref))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Forwarding %s failed", what)
            await self.send_event(broke)

    async def send_event(self, event: dict[str, Any]) -> None:
        await self.base_send({"type": "websocket.send", "text": orjson.dumps(event).decode()})


SCALAR_FIELDS = ("conversation", "content", "model", "message", "after", "run")
MAX_REF_CHARS = 200


def _malformed(frame: dict[str, Any]) -> str:
    """What makes a frame unreadable, before any field is used: a type that is not a name, a list or
    an object where a value belongs, a `ref` that cannot be echoed back. Empty when it reads."""
    if not isinstance(frame.get("type"), str):
        return "type must be one of send, edit, regenerate, attach, stop, detach, attach_run or detach_run."
    for name in SCALAR_FIELDS:
        if isinstance(frame.get(name), list | dict):
            return f"{name} must be a single value, not a list or an object."
    if _echoable(frame.get("ref")) != frame.get("ref"):
        return f"ref must be a string of at most {MAX_REF_CHARS} characters or a number."
    return ""


def _echoable(ref: object) -> object:
    """A ref the answer can carry back; anything else (deeply nested JSON, megabytes) is dropped."""
    if ref is None or (isinstance(ref, str) and len(ref) <= MAX_REF_CHARS):
        return ref
    if isinstance(ref, int | float) and not isinstance(ref, bool):
        return ref
    return None


def _message_id(frame: dict[str, Any]) -> int:
    """The frame's reply id; it keys this socket's attachments, so it must be a plain integer."""
    message_id = frame.get("message")
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ActionError("invalid_input", "message must be a message id.")
    return message_id



def _run_id(frame: dict[str, Any]) -> int:
    run_id = frame.get("run")
    if not isinstance(run_id, int) or isinstance(run_id, bool) or run_id <= 0:
        raise ActionError("invalid_input", "run must be a run id.")
    return run_id
