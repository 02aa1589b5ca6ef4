from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SupportConfig(AppConfig):
    """The support console: transcripts read-only, searched, rated, flagged and annotated, personal
    data masked, every look recorded."""

    name = "support"

    def ready(self) -> None:
        from support.fulltext_index import after_migrate
        from support.roles import ensure_support_group

        # After the permissions exist (django.contrib.auth makes them on the same signal, earlier).
        post_migrate.connect(ensure_support_group, sender=self, dispatch_uid="support-group")
        post_migrate.connect(after_migrate, sender=self, dispatch_uid="support.fulltext_index")
