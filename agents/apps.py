from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """Long-running agent tasks: runs, their durable steps, and the tools they may call."""

    name = "agents"
