"""The model catalogue in admin: "Refresh models now", unknown prices marked and filtered, a price
an admin sets is theirs; the ledger shows which rows had no price; endpoints' status."""

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from billing.models import UsageRecord
from chat.models import ChatModel
from tests.fakes.openai_server import OpenAIFake

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_browser(transactional_db, django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123456")
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
async def local_endpoint(transactional_db, settings):
    async with OpenAIFake(api_key="sk-local", models=["local-llama"]) as fake:
        settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = settings.ANTHROPIC_API_KEY = ""
        settings.PARLEY_OPENAI_ENDPOINTS, settings.PARLEY_ANTHROPIC_ENDPOINTS = [("local", fake.base_url, "sk-local")], []
        yield fake


async def test_refresh_models_now_reads_the_lists_and_says_how_it_went(admin_browser, local_endpoint):
    get, post = sync_to_async(admin_browser.get), sync_to_async(admin_browser.post)
    page = (await get("/admin/chat/chatmodel/")).content.decode()
    assert "Refresh models now" in page and "local/local-llama" not in page

    response = await post("/admin/chat/chatmodel/refresh/", follow=True)
    page = response.content.decode()
    assert response.status_code == 200 and local_endpoint.listings == 1
    # (the admin's message list capitalizes the first letter)
    assert "ocal: 1 model listed (1 new, 0 no longer listed)" in page and "local/local-llama" in page

    unknown = (await get("/admin/chat/chatmodel/?price=unknown")).content.decode()
    known = (await get("/admin/chat/chatmodel/?price=known")).content.decode()
    assert "local/local-llama" in unknown and "local/local-llama" not in known and "parley-demo" in known

    endpoints = (await get("/admin/chat/providerendpoint/")).content.decode()
    assert local_endpoint.base_url in endpoints and "Refresh models now" in endpoints
    assert (await get("/admin/chat/chatmodel/refresh/")).status_code == 405  # a change: POST only


async def test_a_price_set_in_admin_stays_through_refreshes(admin_browser, local_endpoint):
    post = sync_to_async(admin_browser.post)
    await post("/admin/chat/chatmodel/refresh/")
    model = await ChatModel.objects.aget(name="local/local-llama")
    form = {
        "name": model.name, "label": model.label, "provider": "openai", "endpoint": "local", "remote_name": "local-llama",
        "base_url": "", "context_window": "8192", "max_output_tokens": "2048", "input_price_per_million": "0.5",
        "output_price_per_million": "1.5", "enabled": "on", "sort_order": "100",
        # its failover chain, empty (the inline's management form)
        "failover_links-TOTAL_FORMS": "0", "failover_links-INITIAL_FORMS": "0",
        "failover_links-MIN_NUM_FORMS": "0", "failover_links-MAX_NUM_FORMS": "1000",
    }
    saved = await post(f"/admin/chat/chatmodel/{model.pk}/change/", form)
    assert saved.status_code == 302, saved.content.decode()[:3000]
    await post("/admin/chat/chatmodel/refresh/")
    await model.arefresh_from_db()
    assert (model.input_price_per_million, model.output_price_per_million) == (Decimal("0.5"), Decimal("1.5"))


async def test_the_ledger_shows_and_filters_rows_without_a_price(admin_browser, alice):
    await UsageRecord.objects.acreate(user=alice, kind="reply", provider="openai", model="unpriced-model", outcome="complete",
                                      endpoint="local", price_unknown=True)
    await UsageRecord.objects.acreate(user=alice, kind="reply", provider="openai", model="priced-model", outcome="complete")
    page = (await sync_to_async(admin_browser.get)("/admin/billing/usagerecord/?price_unknown__exact=1")).content.decode()
    assert "price unknown" in page  # the column and the filter
    assert '<td class="field-model">unpriced-model</td>' in page and '<td class="field-model">priced-model</td>' not in page
