from django.apps import AppConfig


class SupportConfig(AppConfig):
    """The support console: transcripts read-only, searched, rated, flagged and annotated, personal
    data masked, every look recorded."""

    name = "support"
