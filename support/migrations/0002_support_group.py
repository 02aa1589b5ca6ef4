from django.contrib.auth.management import create_permissions
from django.db import migrations

PERMISSIONS = ["view_transcripts", "reveal_personal_data", "export_transcripts", "annotate_transcripts", "view_feedback"]


def create_group(apps, schema_editor):
    # Permissions are otherwise made after the last migration; the group needs them now.
    support = apps.get_app_config("support")
    support.models_module = True
    create_permissions(support, apps=apps, verbosity=0)
    support.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Support")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="support", codename__in=PERMISSIONS))


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Support").delete()


class Migration(migrations.Migration):
    dependencies = [("support", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create_group, remove_group)]
