from django.apps import AppConfig


class BreakersConfig(AppConfig):
    """Circuit breakers per provider endpoint and model, shared by every process through Redis."""

    name = "breakers"
    verbose_name = "Circuit breakers"
