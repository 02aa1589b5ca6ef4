from django.db import migrations

from accounts.plans import seed_plans


def seed(apps, schema_editor):
    seed_plans(apps.get_model("accounts", "Plan"))


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_plans")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
