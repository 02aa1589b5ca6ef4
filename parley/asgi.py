import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
django.setup(set_prefix=False)

from parley.handler import ParleyASGIHandler  # noqa: E402

django_application = ParleyASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from accounts.middleware import WebSocketBearerMiddleware  # noqa: E402
from chat.consumers import ChatConsumer  # noqa: E402
from observability import tracing  # noqa: E402
from observability.requests import Observed  # noqa: E402
from parley.origin import OriginCheck  # noqa: E402

tracing.configure("web")

websocket_routes = URLRouter([path("ws/chat/", ChatConsumer.as_asgi())])

application = Observed(
    ProtocolTypeRouter(
        {
            "http": django_application,
            "websocket": OriginCheck(AuthMiddlewareStack(WebSocketBearerMiddleware(websocket_routes))),
        }
    )
)

# A full garbage collection stops every stream at once: under load (bench/load.py) each took
# 60-170 ms and came several times a minute, which is what set the tail of the relay delay
# (docs/benchmarks.md). Everything imported so far lives as long as the process, so it is moved
# out of the collector's view, and full collections come 10 times less often; the young
# generations, which collect almost all cyclic garbage a request leaves, keep their defaults.
gc.freeze()
young, middle, _ = gc.get_threshold()
gc.set_threshold(young, middle, 100)
