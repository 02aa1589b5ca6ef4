from django.db import migrations

from chat.catalogue import seed


def seed_catalogue(apps, schema_editor):
    seed(apps.get_model("chat", "ChatModel"))


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(seed_catalogue, migrations.RunPython.noop)]
