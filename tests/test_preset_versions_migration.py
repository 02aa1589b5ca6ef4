"""An installation from before versions: each preset's text becomes its version 1, in force;
conversations still holding their preset's text follow it, those edited keep their own; and the
migration can be undone, the presets' texts put back."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("chat", "0019_model_temperature")]
AFTER = [("chat", "0020_prompt_preset_versions")]


@pytest.mark.django_db(transaction=True)
def test_each_preset_gets_version_1_and_unedited_conversations_follow_it(alice):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Preset, Conversation, Model = (old.get_model("chat", name) for name in ("PromptPreset", "Conversation", "ChatModel"))
    model = Model.objects.get(name="parley-demo")
    pirate = Preset.objects.create(name="Pirate", text="Talk like a pirate.\n")
    brief = Preset.objects.create(name="Brief", text="Answer in one sentence.", enabled=False)
    taken = Conversation.objects.create(owner_id=alice.pk, model=model, preset=pirate, system_prompt="Talk like a pirate.")
    edited = Conversation.objects.create(owner_id=alice.pk, model=model, preset=pirate, system_prompt="Talk like a parrot.")
    plain = Conversation.objects.create(owner_id=alice.pk, model=model, system_prompt="Answer in one sentence.")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    executor.loader.build_graph()
    new = executor.loader.project_state(AFTER).apps
    Preset, Conversation = new.get_model("chat", "PromptPreset"), new.get_model("chat", "Conversation")
    versions = {preset.name: preset.current_version for preset in Preset.objects.select_related("current_version")}
    assert {name: (v.number, v.text, v.created_by_id) for name, v in versions.items()} == {
        "Pirate": (1, "Talk like a pirate.", None), "Brief": (1, "Answer in one sentence.", None),
    }
    assert Conversation.objects.get(pk=taken.pk).preset_version_id == versions["Pirate"].pk
    assert Conversation.objects.get(pk=edited.pk).preset_version_id is None
    assert Conversation.objects.get(pk=plain.pk).preset_version_id is None

    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    undone = executor.loader.project_state(BEFORE).apps.get_model("chat", "PromptPreset")
    assert dict(undone.objects.values_list("pk", "text")) == {pirate.pk: "Talk like a pirate.", brief.pk: "Answer in one sentence."}
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
