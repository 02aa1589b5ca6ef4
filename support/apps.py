from django.apps import AppConfig


class SupportConfig(AppConfig):
    """The support console: transcripts read-only, searched, rated, flagged and annotated, personal
    data masked, every look recorded."""

    name = "support"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from support.fulltext_index import after_migrate

        post_migrate.connect(after_migrate, sender=self, dispatch_uid="support.fulltext_index")
