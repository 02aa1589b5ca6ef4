"""An installation from before discovery: its seeded OpenAI and Anthropic models are offered again
only once their endpoint lists them, and a real model whose price nobody set becomes unknown."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("chat", "0010_uploads")]
AFTER = [("chat", "0015_provider_endpoints")]


@pytest.mark.django_db(transaction=True)
def test_seeded_models_wait_for_their_endpoint_and_unset_prices_become_unknown():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps.get_model("chat", "ChatModel")
    old.objects.all().delete()
    old.objects.create(name="parley-demo", label="Parley demo (offline)", provider="demo", is_default=True)
    old.objects.create(name="gpt-4o-mini", label="GPT-4o mini", provider="openai",
                       input_price_per_million=Decimal("0.15"), output_price_per_million=Decimal("0.60"))
    old.objects.create(name="gpt-4.1", label="GPT-4.1", provider="openai",  # repriced by an admin
                       input_price_per_million=Decimal("9"), output_price_per_million=Decimal("9"))
    old.objects.create(name="my-llama", label="My llama", provider="openai", base_url="http://127.0.0.1:8080/v1")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # every app back at its newest migration
    executor.loader.build_graph()
    new = executor.loader.project_state(AFTER).apps.get_model("chat", "ChatModel")
    rows = {row.name: row for row in new.objects.all()}
    mini, gpt41, llama, demo = rows["gpt-4o-mini"], rows["gpt-4.1"], rows["my-llama"], rows["parley-demo"]
    assert (mini.endpoint, mini.remote_name, mini.available, mini.prices_from_list) == ("openai", "gpt-4o-mini", False, True)
    assert (gpt41.available, gpt41.prices_from_list, gpt41.input_price_per_million) == (False, False, Decimal("9"))
    # Added by hand: still offered as its admin set it up, but 0 and 0 was never a price.
    assert llama.available and llama.endpoint == "" and llama.input_price_per_million is None
    assert demo.available and demo.input_price_per_million == 0 and not demo.is_default
