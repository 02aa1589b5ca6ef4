from django.apps import AppConfig


class SharingConfig(AppConfig):
    """Read-only snapshots of a conversation shared by link, and a conversation's export."""

    name = "sharing"
