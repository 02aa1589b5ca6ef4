"""The chat pages and their htmx partials, through the Django test client."""

import json

import pytest
from django.conf import settings
from django.urls import reverse

from accounts.models import User
from chat.models import ChatModel, Conversation, Message

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def user(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="pw-alice-123456")


@pytest.fixture
def other(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("mallory", password="pw-mallory-123456")


@pytest.fixture
def demo_model() -> ChatModel:
    return ChatModel.objects.get(name="parley-demo")


def make_conversation(owner: User, model: ChatModel, title: str = "Trip plans") -> Conversation:
    return Conversation.objects.create(owner=owner, model=model, title=title, title_is_auto=False)


def htmx_from(path: str) -> dict[str, str]:
    return {**HTMX, "HTTP_HX_CURRENT_URL": f"http://testserver{path}"}


def test_anonymous_is_sent_to_login(client, user, demo_model):
    conversation = make_conversation(user, demo_model)
    for url in (reverse("chat:home"), reverse("chat:conversation", args=[conversation.pk]), reverse("chat:sidebar")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")


def test_home_offers_models_and_labels_the_demo(client, user):
    client.force_login(user)
    response = client.get(reverse("chat:home"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="parley-demo"' in html and "quotes you back" in html
    assert html.count("Parley demo (offline)") == 1 and "· demo" not in html  # the label says it once
    # Labelled once: the model's own label says what it is.
    assert html.lower().count("demo") - html.lower().count("parley-demo") - html.count("data-demo") - html.count("demo-tag") == 1
    assert f'data-max-chars="{settings.PARLEY_MESSAGE_MAX_CHARS}"' in html
    assert 'data-conversation=""' in html
    assert 'data-conversation-url="/c/0/"' in html
    assert 'id="chat-messages"' in html


def test_conversation_page_embeds_messages_safely(client, user, demo_model):
    conversation = make_conversation(user, demo_model)
    evil = '</script><script>alert(1)</script>'
    Message.objects.create(conversation=conversation, role="user", content=evil)
    Message.objects.create(
        conversation=conversation, role="assistant", content="half", status="streaming", notice="Older turns left out."
    )
    Message.objects.create(
        conversation=conversation, role="assistant", content="", status="failed",
        error_code="rate_limited", error_text="Too many requests.",
    )
    client.force_login(user)
    response = client.get(reverse("chat:conversation", args=[conversation.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert evil not in html  # json_script escapes <, > and &
    data = json.loads(html.split('id="chat-messages" type="application/json">')[1].split("</script>")[0])
    assert [m["role"] for m in data] == ["user", "assistant", "assistant"]
    assert data[0]["content"] == evil
    assert data[1]["status"] == "streaming" and data[1]["notice"] == "Older turns left out."
    assert data[2]["error"] == {"code": "rate_limited", "text": "Too many requests."}
    assert f'data-conversation="{conversation.pk}"' in html
    assert "Trip plans" in html


def test_foreign_and_unknown_conversations_are_404(client, user, other, demo_model):
    theirs = make_conversation(other, demo_model, "secret")
    client.force_login(user)
    assert client.get(reverse("chat:conversation", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("chat:conversation", args=[999999])).status_code == 404
    assert client.get(reverse("chat:rename", args=[theirs.pk])).status_code == 404
    assert client.post(reverse("chat:rename", args=[theirs.pk]), {"title": "x"}).status_code == 404
    assert client.post(reverse("chat:delete", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.title == "secret"


def test_sidebar_lists_only_own_conversations_and_filters(client, user, other, demo_model):
    make_conversation(user, demo_model, "Trip plans")
    make_conversation(user, demo_model, "Tax questions")
    make_conversation(other, demo_model, "Trip of mallory")
    client.force_login(user)
    response = client.get(reverse("chat:sidebar"), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<nav id="conversation-list"')
    assert "Trip plans" in html and "Tax questions" in html and "mallory" not in html

    filtered = client.get(reverse("chat:sidebar"), {"q": "trip"}, **HTMX).content.decode()
    assert "<mark>Trip</mark> plans" in filtered and "Tax questions" not in filtered

    none = client.get(reverse("chat:sidebar"), {"q": "zzz"}, **HTMX).content.decode()
    assert "No conversation of yours mentions" in none


def test_sidebar_highlights_the_open_conversation(client, user, demo_model):
    open_one = make_conversation(user, demo_model, "Open one")
    make_conversation(user, demo_model, "Other")
    client.force_login(user)
    path = reverse("chat:conversation", args=[open_one.pk])
    html = client.get(reverse("chat:sidebar"), **htmx_from(path)).content.decode()
    assert f'<li class="conversation-item active" id="conversation-{open_one.pk}">' in html
    assert html.count("active") == 1


def test_rename_inline(client, user, demo_model):
    conversation = make_conversation(user, demo_model)
    client.force_login(user)
    url = reverse("chat:rename", args=[conversation.pk])
    form = client.get(url, **HTMX)
    assert form.status_code == 200
    assert 'name="title"' in form.content.decode() and "<html" not in form.content.decode()

    response = client.post(url, {"title": "  Japan   in spring "}, **HTMX)
    assert response.status_code == 200
    assert "Japan in spring" in response.content.decode()
    assert json.loads(response["HX-Trigger"]) == {
        "parley:conversation-renamed": {"id": conversation.pk, "title": "Japan in spring"}
    }
    conversation.refresh_from_db()
    assert conversation.title == "Japan in spring" and not conversation.title_is_auto


def test_rename_with_empty_title_explains(client, user, demo_model):
    conversation = make_conversation(user, demo_model)
    client.force_login(user)
    response = client.post(reverse("chat:rename", args=[conversation.pk]), {"title": "   "}, **HTMX)
    assert response.status_code == 422
    assert "The title cannot be empty." in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"


def test_rename_without_htmx_redirects(client, user, demo_model):
    conversation = make_conversation(user, demo_model)
    client.force_login(user)
    url = reverse("chat:rename", args=[conversation.pk])
    assert "<html" in client.get(url).content.decode()
    response = client.post(url, {"title": "Plain form"})
    assert response.status_code == 302 and response["Location"] == reverse("chat:conversation", args=[conversation.pk])
    bad = client.post(url, {"title": ""})
    assert bad.status_code == 422 and "The title cannot be empty." in bad.content.decode()


def test_delete_from_sidebar(client, user, demo_model):
    keep = make_conversation(user, demo_model, "Keep")
    gone = make_conversation(user, demo_model, "Gone")
    client.force_login(user)
    response = client.post(reverse("chat:delete", args=[gone.pk]), **htmx_from(reverse("chat:conversation", args=[keep.pk])))
    assert response.status_code == 200 and response.content == b""
    assert not Conversation.objects.filter(pk=gone.pk).exists()
    assert Conversation.objects.filter(pk=keep.pk).exists()


def test_deleting_the_open_conversation_goes_home(client, user, demo_model):
    conversation = make_conversation(user, demo_model)
    Message.objects.create(conversation=conversation, role="user", content="hi")
    client.force_login(user)
    path = reverse("chat:conversation", args=[conversation.pk])
    response = client.post(reverse("chat:delete", args=[conversation.pk]), **htmx_from(path))
    assert response["HX-Redirect"] == reverse("chat:home")
    assert not Message.objects.exists()


def test_delete_without_htmx_confirms_first(client, user, demo_model):
    conversation = make_conversation(user, demo_model)
    client.force_login(user)
    url = reverse("chat:delete", args=[conversation.pk])
    page = client.get(url)
    assert page.status_code == 200 and "cannot be undone" in page.content.decode()
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    response = client.post(url)
    assert response.status_code == 302 and response["Location"] == reverse("chat:home")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_new_conversation(client, user):
    client.force_login(user)
    response = client.post(reverse("chat:new"), {"model": "parley-demo"}, **HTMX)
    conversation = Conversation.objects.get(owner=user)
    assert response["HX-Redirect"] == reverse("chat:conversation", args=[conversation.pk])
    assert conversation.model.name == "parley-demo"
    assert client.post(reverse("chat:new"), {"model": "no-such-model"}).status_code == 400


def test_state_changes_need_post(client, user, demo_model):
    conversation = make_conversation(user, demo_model)
    client.force_login(user)
    assert client.get(reverse("chat:new")).status_code == 405
    assert client.put(reverse("chat:delete", args=[conversation.pk])).status_code == 405


def test_admin_pages_load(client, django_user_model, demo_model):
    from accounts.models import ApiToken

    admin = django_user_model.objects.create_superuser("root", password="root-pass-123456")
    conversation = make_conversation(admin, demo_model)
    message = Message.objects.create(conversation=conversation, role="user", content="hi")
    token, _ = ApiToken.issue(admin, "ci")
    client.force_login(admin)
    for url in (
        reverse("admin:chat_chatmodel_changelist"),
        reverse("admin:chat_conversation_changelist"),
        reverse("admin:chat_conversation_change", args=[conversation.pk]),
        reverse("admin:chat_message_change", args=[message.pk]),
        reverse("admin:accounts_user_changelist"),
        reverse("admin:accounts_apitoken_change", args=[token.pk]),
    ):
        assert client.get(url).status_code == 200, url
    changelist = client.get(reverse("admin:chat_chatmodel_changelist")).content.decode()
    assert 'name="form-0-input_price_per_million"' in changelist  # prices are editable in the list
    assert client.get(reverse("admin:accounts_apitoken_add")).status_code == 403


def test_chat_page_dates_its_messages(client, user, demo_model):
    """Messages carry their time, so that other items (task cards) can be placed among them by it."""
    conversation = make_conversation(user, demo_model)
    message = Message.objects.create(conversation=conversation, role="user", content="hello")
    client.force_login(user)
    html = client.get(reverse("chat:conversation", args=[conversation.pk])).content.decode()
    data = json.loads(html.split('id="chat-messages" type="application/json">')[1].split("</script>")[0])
    assert data[0]["created"] == message.created.isoformat()


def test_chat_page_offers_to_run_a_task(client, user):
    client.force_login(user)
    html = client.get(reverse("chat:home")).content.decode()
    assert 'id="task-button"' in html and ">Run as task</button>" in html
    assert 'id="run-notices"' in html  # where tasks of other conversations ask for an approval


def test_the_picker_says_which_models_have_no_price(client, user, settings):
    settings.PARLEY_OPENAI_ENDPOINTS = [("local", "http://127.0.0.1:8080/v1", "")]
    ChatModel.objects.create(name="local/llama", label="llama · local", provider="openai", endpoint="local")
    ChatModel.objects.create(name="local/gone", label="gone · local", provider="openai", endpoint="local", available=False)
    client.force_login(user)
    html = client.get(reverse("chat:home")).content.decode()
    assert "llama · local · price unknown</option>" in html and "gone · local" not in html
    assert "Parley demo (offline)</option>" in html  # the demo's price is known: 0
    assert '<option value="local/llama" selected data-price-unknown' in html  # and it is the default
