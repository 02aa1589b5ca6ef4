"""The "Support" group and its permissions: made by a migration, and made again after anything that
empties the tables and keeps the schema (`manage.py flush`), which would otherwise leave no group."""

from typing import Any

from support.models import PERMISSIONS, SUPPORT_GROUP

GROUP_PERMISSIONS = [codename for codename, _ in PERMISSIONS] + ["view_feedback"]


def ensure_support_group(*args: Any, **kwargs: Any) -> None:
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)
    permissions = Permission.objects.filter(content_type__app_label="support", codename__in=GROUP_PERMISSIONS)
    group.permissions.add(*permissions)
