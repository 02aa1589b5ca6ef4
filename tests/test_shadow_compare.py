"""The admin's compare page: real and shadow side by side with their numbers, the sample's totals,
a diff, every text escaped; only staff with the compare permission see it. Configs are edited in
admin with a clear error when a shadow would not differ from the real call."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from billing.models import UsageRecord
from chat.models import ChatModel, Conversation, Message
from shadows import compare
from shadows.models import ShadowConfig, ShadowRun

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert('real')</script>"


@pytest.fixture
def config(alice) -> ShadowConfig:
    real = ChatModel.objects.create(name="real-m", label="Real M", provider="demo")
    shadow = ChatModel.objects.create(name="shadow-m", label="Shadow M", provider="demo")
    config = ShadowConfig.objects.create(model=real, shadow_model=shadow, sample_percent=Decimal("12.5"), note="Cheaper?")
    conversation = Conversation.objects.create(owner=alice, model=real)
    samples = [  # real text, shadow text, shadow status, real (ttft, duration, cost), shadow (ttft, duration, cost)
        (f"Hello {SCRIPT} world", "Hello <img src=x onerror=alert(1)> world", "complete", (100, 1000, "0.001"), (50, 400, "0.0002")),
        ("One two three", "One two four", "complete", (300, 3000, "0.003"), (150, 800, "0.0004")),
        ("Fine", "", "failed", (200, 2000, "0.002"), (None, 30, "0")),
    ]
    for real_text, shadow_text, status, (r_ttft, r_dur, r_cost), (s_ttft, s_dur, s_cost) in samples:
        asked = Message.objects.create(conversation=conversation, role="user", content="Q")
        reply = Message.objects.create(
            conversation=conversation, parent=asked, role="assistant", content=real_text, model="real-m", status="complete",
            prompt_tokens=10, completion_tokens=len(real_text.split()), ttft_ms=r_ttft, duration_ms=r_dur, cost_usd=Decimal(r_cost),
        )
        ShadowRun.objects.create(
            message=reply, config=config, model="shadow-m", text=shadow_text, status=status,
            error_code="provider_unavailable" if status == "failed" else "", prompt_tokens=10,
            completion_tokens=len(shadow_text.split()), ttft_ms=s_ttft, duration_ms=s_dur, cost_usd=Decimal(s_cost),
        )
    ShadowRun.objects.create(message=reply, config=ShadowConfig.objects.create(model=real, system_prompt="x", sample_percent=1),
                             model="real-m")  # another config's run: not on this page
    return config


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def compare_url(config: ShadowConfig) -> str:
    return reverse("admin:shadows_shadowconfig_compare", args=[config.pk])


@pytest.fixture
def comparer(django_user_model):
    user = django_user_model.objects.create_user("comparer", password="comparer-pass-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="compare_shadows"))
    return user


def test_the_page_shows_both_sides_their_numbers_and_the_sample(config, comparer):
    response = client_for(comparer).get(compare_url(config))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Real M" in page and "Shadow M" in page and "12.5 %" in page and "Cheaper?" in page
    assert page.count('class="shadow-pair"') == 3
    assert "provider_unavailable" in page
    summary = response.context["summary"]
    assert (summary.ended, summary.complete, summary.failed, summary.running) == (3, 2, 1, 0)
    # Over the two runs whose shadow completed.
    assert summary.real.p50_duration_ms == 2000 and summary.shadow.p50_duration_ms == 600
    assert summary.real.p50_ttft_ms == 200 and summary.shadow.p50_ttft_ms == 100
    assert summary.real.total_cost_usd == Decimal("0.004") and summary.shadow.total_cost_usd == Decimal("0.0006")
    assert summary.real.mean_chars == (len(f"Hello {SCRIPT} world") + len("One two three")) / 2


def test_model_output_is_escaped_everywhere_never_markup(config, comparer):
    page = client_for(comparer).get(compare_url(config)).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;real&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<del>three</del><ins>four</ins>" in page


def test_the_diff_marks_words_only_in_one_side():
    segments = compare.diff("The cat sat.", "The dog sat!")
    assert [(s.op, s.text) for s in segments] == [
        ("equal", "The "), ("delete", "cat"), ("insert", "dog"), ("equal", " sat"), ("delete", "."), ("insert", "!"),
    ]
    assert compare.diff("", "") == [] and compare.diff("same", "same") == [compare.Segment("equal", "same")]


def test_only_staff_with_the_permission_may_compare(config, comparer, alice, django_user_model):
    url = compare_url(config)
    assert Client().get(url).status_code == 302  # to the admin's log-in
    refused = client_for(alice).get(url)  # not staff
    assert refused.status_code == 302 and "/admin/login/" in refused["Location"]
    staff = django_user_model.objects.create_user("staff", password="staff-pass-12345", is_staff=True)
    assert client_for(staff).get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_shadowconfig"))
    assert client_for(django_user_model.objects.get(pk=staff.pk)).get(url).status_code == 403
    root = django_user_model.objects.create_superuser("root", password="root-pass-12345")
    assert client_for(root).get(url).status_code == 200
    assert client_for(comparer).get(reverse("admin:shadows_shadowconfig_compare", args=[config.pk + 100])).status_code == 404
    # Who may compare may list the configs and runs too, and change none.
    assert client_for(comparer).get(reverse("admin:shadows_shadowconfig_changelist")).status_code == 200
    assert client_for(comparer).get(reverse("admin:shadows_shadowrun_changelist")).status_code == 200
    assert client_for(comparer).post(reverse("admin:shadows_shadowconfig_change", args=[config.pk]), {}).status_code == 403


def test_a_page_that_is_not_one_says_so(config, comparer):
    for page in ("0", "2", "x", "1" * 40):
        response = client_for(comparer).get(compare_url(config), {"page": page})
        assert response.status_code == 404
        assert "is not a page of this list: pages go from 1 to 1." in response.content.decode()


def test_an_admin_cannot_save_a_shadow_that_changes_nothing(config, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="root-pass-12345")
    response = client_for(root).post(reverse("admin:shadows_shadowconfig_add"), {
        "model": config.model_id, "shadow_model": config.model_id, "system_prompt": "", "sample_percent": "10", "note": "",
    })
    assert response.status_code == 200
    assert "A shadow must differ from the real call" in response.content.decode()
    response = client_for(root).post(reverse("admin:shadows_shadowconfig_add"), {
        "model": config.model_id, "shadow_model": "", "system_prompt": "Be brief.", "sample_percent": "0.5", "note": "",
        "enabled": "on",
    })
    assert response.status_code == 302
    assert ShadowConfig.objects.filter(system_prompt="Be brief.", sample_percent=Decimal("0.5")).exists()
    listing = client_for(root).get(reverse("admin:shadows_shadowconfig_changelist"))
    assert listing.status_code == 200 and compare_url(config) in listing.content.decode()
    assert client_for(root).get(reverse("admin:shadows_shadowrun_changelist")).status_code == 200


def test_the_usage_page_leaves_the_sites_own_calls_out_of_its_top_users(config, alice, django_user_model):
    UsageRecord.objects.create(user=None, kind="shadow", provider="demo", model="shadow-m", outcome="complete",
                               prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.5"))
    UsageRecord.objects.create(user=alice, kind="reply", provider="demo", model="real-m", outcome="complete",
                               prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.1"))
    root = django_user_model.objects.create_superuser("root", password="root-pass-12345")
    response = client_for(root).get(reverse("admin_usage"))
    assert response.status_code == 200
    assert [row.username for row in response.context["top_users"]] == ["alice"]
    assert response.context["report"].cost == Decimal("0.6")  # the site's total counts it
