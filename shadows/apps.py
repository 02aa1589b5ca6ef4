from django.apps import AppConfig


class ShadowsConfig(AppConfig):
    """Shadow runs: a sampled share of a model's complete replies asked again of another model or
    system prompt in the background, never shown, billed to the site, compared in admin."""

    name = "shadows"
    verbose_name = "Shadow runs"

    def ready(self) -> None:
        from shadows import sampling

        sampling.connect_signals()
