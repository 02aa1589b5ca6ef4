from django.db import migrations

from routing.models import seed_auto


def add_auto(apps, schema_editor):
    seed_auto(apps.get_model("chat", "ChatModel"))


def remove_auto(apps, schema_editor):
    # Conversations keep their model (PROTECT): going back leaves the row if any still use it.
    ChatModel = apps.get_model("chat", "ChatModel")
    Conversation = apps.get_model("chat", "Conversation")
    if not Conversation.objects.filter(model__name="auto", model__provider="auto").exists():
        ChatModel.objects.filter(name="auto", provider="auto").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0001_rules"),
        ("chat", "0018_routing"),
    ]

    operations = [migrations.RunPython(add_auto, remove_auto)]
