"""Migration 0014 on an existing installation: files uploaded before it get their token count, and
the catalogue's models that read images are marked so."""

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from providers.base import TextFile

BEFORE = [("chat", "0010_uploads")]


def test_earlier_files_get_their_tokens_and_the_vision_models_are_marked(transactional_db):
    # `transactional_db` by name: the catalogue fixture puts back the models an earlier test's flush removed.
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    # Accounts stay at their newest migration: the user is made as the app has it today.
    user = old.get_model("accounts", "User").objects.get(pk=get_user_model().objects.create(username="early-uploader").pk)
    demo = old.get_model("chat", "ChatModel").objects.get(name="parley-demo")
    conversation = old.get_model("chat", "Conversation").objects.create(owner=user, model=demo)
    old.get_model("chat", "Upload").objects.create(
        conversation=conversation, owner=user, name="notes.txt", content_type="text/plain", size=11, data=b"hello there",
        text="hello there", chars=11,
    )
    old.get_model("chat", "ChatModel").objects.create(name="local-llama", label="Local", provider="openai")
    for name in ("gpt-4.1", "claude-sonnet-4-5"):  # as the catalogue of that time seeded them
        old.get_model("chat", "ChatModel").objects.get_or_create(name=name, defaults={"label": name, "provider": "openai"})

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    from chat.models import ChatModel, Upload

    assert Upload.objects.get(name="notes.txt").tokens == TextFile("notes.txt", "hello there").tokens
    seeing = set(ChatModel.objects.filter(supports_vision=True).values_list("name", flat=True))
    assert {"parley-demo", "gpt-4.1", "claude-sonnet-4-5"} <= seeing and "local-llama" not in seeing
