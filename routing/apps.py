from django.apps import AppConfig


class RoutingConfig(AppConfig):
    """The `auto` model: admins' routing rules, and the router that picks a model for each message."""

    name = "routing"
