"""daphne, answering requests that cross the transport's size limits instead of dropping them.

daphne serves HTTP with Twisted's HTTP/1.1 channel, which reads the request line and each header
line up to 16 KiB and, on a longer one, closes the connection without a response. It serves
WebSockets with autobahn, which fails a message over the size limit by dropping the TCP connection
(its `failByDrop` option, on by default). Either way the client sees a reset it cannot explain.
Here an over-long request line is answered 414 and an over-long header line 431, both in the API's
JSON error shape (docs/streaming.md), and an oversized WebSocket message is closed with 1009 and a
reason. The limits themselves stay as they are.

Imports daphne.server, which creates the event loop: parley.serve imports this module only after
choosing the loop.
"""

from typing import Any

from daphne import cli, server, ws_protocol
from twisted.web import http

# The largest WebSocket message (and frame) daphne reads. chat.consumers refuses frames over
# MAX_FRAME_BYTES (256 Ki characters) with `message_too_long` and keeps the socket; a character
# takes at most 4 bytes, so every frame it would read fits here.
WEBSOCKET_MAX_BYTES = 1024 * 1024
# After refusing a request, how long its unsent rest is read and dropped before the connection is cut.
DRAIN_SECONDS = 5.0


class Server(server.Server):
    """daphne's server; its protocol factories are adjusted once `run()` has made them, before it
    accepts a connection (daphne calls `ready_callable` there)."""

    def __init__(self, *args: Any, ready_callable: Any = None, **kwargs: Any) -> None:
        from django.conf import settings

        if kwargs.get("action_logger") is not None and settings.PARLEY_LOG_FORMAT == "json":
            from observability.logs import JsonAccessLog

            kwargs["action_logger"] = JsonAccessLog()

        def ready() -> None:
            self.adjust_factories()
            if ready_callable is not None:
                ready_callable()

        super().__init__(*args, ready_callable=ready, **kwargs)

    def adjust_factories(self) -> None:
        # RFC 6455 asks for a close frame before the connection is failed; with it the client
        # learns the code (1009 for a message over the limit) and autobahn's reason.
        self.ws_factory.setProtocolOptions(failByDrop=False)
        self.ws_factory.protocol = WebSocketProtocol
        self.http_factory.protocol = _http_protocol


class WebSocketProtocol(ws_protocol.WebSocketProtocol):
    """daphne's, also sending the headers of the application's `websocket.accept` (ASGI allows
    them; daphne drops them): the handshake's answer carries the request id (observability/)."""

    def handle_reply(self, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.accept" and message.get("headers"):
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in message["headers"]}
            # autobahn takes (subprotocol, headers) as what its onConnect handshake resolves to.
            self.handshake_deferred.callback((message.get("subprotocol"), headers))
            del self.handshake_deferred
            return
        super().handle_reply(message)


class CommandLineInterface(cli.CommandLineInterface):
    """daphne's command line with this module's server; every daphne option still applies."""

    server_class = Server

    def __init__(self) -> None:
        super().__init__()
        self.parser.set_defaults(websocket_max_message_size=WEBSOCKET_MAX_BYTES, websocket_max_frame_size=WEBSOCKET_MAX_BYTES)


class LimitedHTTPChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel, answering a line over its limit (MAX_LENGTH, 16 KiB) instead of
    closing the connection without a word."""

    refused = False
    drain_call: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # the answer is sent: the rest of the request is read and dropped
        super().dataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refused = True
        self.transport.write(_error_response("headers_too_large" if _is_header_line(line) else "uri_too_long"))
        # Closing the socket with the request's unread rest in it would reset the connection, and
        # a reset can reach the client before it has read the answer. So only our side closes now;
        # the client closes after reading, or the connection is cut after DRAIN_SECONDS.
        self.transport.loseWriteConnection()
        self.drain_call = self.callLater(DRAIN_SECONDS, self.transport.abortConnection)

    def connectionLost(self, reason: Any) -> None:
        if self.drain_call is not None and self.drain_call.active():
            self.drain_call.cancel()
        super().connectionLost(reason)


def _http_protocol() -> Any:
    # What Twisted's HTTPFactory.protocol builds, with this channel inside: the wrapper is the part
    # that would switch to HTTP/2 after a TLS negotiation.
    return http._GenericHTTPChannelProtocol(LimitedHTTPChannel())


def _is_header_line(line: bytes) -> bool:
    """A request line starts with its method, a header line with its name and a colon."""
    return b":" in line.split(b" ", 1)[0]


def _error_response(code: str) -> bytes:
    from chat.responses import json_error  # the one JSON error shape; Django is set up by now

    response = json_error(code)
    head = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
    head += [f"{name}: {value}" for name, value in response.items()]
    head += [f"Content-Length: {len(response.content)}", "Connection: close", "", ""]
    return "\r\n".join(head).encode("latin-1") + response.content
