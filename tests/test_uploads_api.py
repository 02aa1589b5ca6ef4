"""The uploads API: attach (multipart, CSRF-checked for cookie sessions), list, download and
delete a conversation's files; another user's are not found; refusals in the one error shape."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import ApiToken
from chat.models import ChatModel, Conversation, Upload
from providers.base import TextFile
from tests.files import pdf_with_pages
from tests.test_api import assert_error

# The upload view reaches the database through database_sync_to_async, which closes a connection
# left inside a transaction: these tests commit.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))


def attach(client: Client, conversation_id: int, name: str, data: bytes, **extra):
    return client.post(f"/api/conversations/{conversation_id}/uploads", {"file": SimpleUploadedFile(name, data)}, **extra)


def test_a_file_is_attached_listed_downloaded_and_deleted(alice_client, conversation):
    response = attach(alice_client, conversation.pk, "Q3 report.pdf", pdf_with_pages("Revenue grew"))
    assert response.status_code == 201, response.content
    upload = response.json()["upload"]
    assert upload["name"] == "Q3 report.pdf" and upload["content_type"] == "application/pdf"
    assert upload["conversation"] == conversation.pk and upload["chars"] == len("Revenue grew") and upload["size"] > 100
    assert set(upload) == {
        "id", "conversation", "name", "content_type", "kind", "size", "chars", "text_truncated", "width", "height", "tokens",
        "created",
    }
    assert upload["kind"] == "text" and upload["tokens"] == TextFile("Q3 report.pdf", "Revenue grew").tokens

    listed = alice_client.get(f"/api/conversations/{conversation.pk}/uploads")
    assert listed.status_code == 200 and listed.json() == {"uploads": [upload]}

    download = alice_client.get(f"/api/uploads/{upload['id']}")
    assert download.status_code == 200 and download.content == pdf_with_pages("Revenue grew")
    assert download["Content-Type"] == "application/pdf"
    assert download["Content-Disposition"] == 'attachment; filename="Q3 report.pdf"'
    assert download["X-Content-Type-Options"] == "nosniff"

    assert alice_client.delete(f"/api/uploads/{upload['id']}").status_code == 204
    assert alice_client.get(f"/api/conversations/{conversation.pk}/uploads").json() == {"uploads": []}
    assert_error(alice_client.get(f"/api/uploads/{upload['id']}"), 404, "not_found")


def test_a_text_download_says_its_charset_and_a_foreign_name_is_encoded(alice_client, conversation):
    upload = attach(alice_client, conversation.pk, "Übersicht \"final\".md", "# Grüße".encode()).json()["upload"]
    download = alice_client.get(f"/api/uploads/{upload['id']}")
    assert download["Content-Type"] == "text/markdown; charset=utf-8"
    assert download["Content-Disposition"] == "attachment; filename*=utf-8''%C3%9Cbersicht%20_final_.md"


def test_another_users_conversation_and_files_are_not_found(alice_client, conversation, bob):
    upload = attach(alice_client, conversation.pk, "mine.txt", b"private").json()["upload"]
    bob_client = Client()
    bob_client.force_login(bob)
    assert_error(attach(bob_client, conversation.pk, "theirs.txt", b"x"), 404, "not_found")
    assert_error(bob_client.get(f"/api/conversations/{conversation.pk}/uploads"), 404, "not_found")
    assert_error(bob_client.get(f"/api/uploads/{upload['id']}"), 404, "not_found")
    assert_error(bob_client.delete(f"/api/uploads/{upload['id']}"), 404, "not_found")
    assert_error(alice_client.get("/api/uploads/99999999999999999999"), 404, "not_found")
    assert list(Upload.objects.values_list("name", flat=True)) == ["mine.txt"]


def test_refusals_have_their_codes(alice_client, conversation, settings):
    settings.PARLEY_UPLOAD_MAX_BYTES = 1024
    settings.PARLEY_UPLOADS_PER_CONVERSATION = 1
    assert_error(attach(alice_client, conversation.pk, "big.txt", b"x" * 1025), 413, "file_too_large")
    # Far over the limit: refused from the request's length, before the form is read.
    assert_error(attach(alice_client, conversation.pk, "huge.txt", b"x" * 100_000), 413, "file_too_large")
    assert_error(attach(alice_client, conversation.pk, "virus.exe", b"MZ"), 415, "unsupported_file_type")
    assert_error(attach(alice_client, conversation.pk, "fake.pdf", b"hello"), 415, "unsupported_file_type")
    error = assert_error(attach(alice_client, conversation.pk, "broken.pdf", b"%PDF-1.4\nnot really"), 422, "unreadable_file")
    assert error["text"].startswith("This PDF could not be read: ")
    assert attach(alice_client, conversation.pk, "one.txt", b"1").status_code == 201
    assert_error(attach(alice_client, conversation.pk, "two.txt", b"2"), 409, "too_many_uploads")
    assert Upload.objects.count() == 1


def test_the_file_comes_as_one_multipart_field_named_file(alice_client, conversation):
    url = f"/api/conversations/{conversation.pk}/uploads"
    assert_error(alice_client.post(url, {"other": SimpleUploadedFile("a.txt", b"a")}), 400, "invalid_input")
    two = [SimpleUploadedFile("a.txt", b"a"), SimpleUploadedFile("b.txt", b"b")]
    assert_error(alice_client.post(url, {"file": two}), 400, "invalid_input")
    assert_error(alice_client.post(url, b"hello", content_type="text/plain"), 415, "unsupported_media_type")
    assert_error(alice_client.post(url, '{"file": "a"}', content_type="application/json"), 415, "unsupported_media_type")
    assert_error(alice_client.put(url), 405, "method_not_allowed")
    assert_error(Client().get(url), 401, "not_authenticated")
    assert not Upload.objects.exists()


def test_a_cookie_session_attaches_with_the_csrf_token_and_not_without(alice, conversation):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get(f"/c/{conversation.pk}/")  # the page sets the CSRF cookie its script sends back
    assert_error(attach(client, conversation.pk, "a.txt", b"a"), 403, "forbidden")
    response = attach(client, conversation.pk, "a.txt", b"a", headers={"X-CSRFToken": client.cookies["csrftoken"].value})
    assert response.status_code == 201
    upload_id = response.json()["upload"]["id"]
    assert_error(client.delete(f"/api/uploads/{upload_id}"), 403, "forbidden")
    assert client.delete(f"/api/uploads/{upload_id}", headers={"X-CSRFToken": client.cookies["csrftoken"].value}).status_code == 204


def test_a_bearer_token_attaches_without_csrf(alice, conversation):
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {ApiToken.issue(alice, 'script')[1]}"})
    assert attach(client, conversation.pk, "data.csv", b"a,b\n1,2\n").status_code == 201


def test_the_chat_page_lists_the_conversations_unsent_files_as_data(alice_client, conversation):
    attach(alice_client, conversation.pk, "Tom & Jerry.txt", b"x")
    page = alice_client.get(f"/c/{conversation.pk}/").content.decode()
    assert '"name": "Tom \\u0026 Jerry.txt"' in page and "Tom & Jerry" not in page
    home = alice_client.get("/").content.decode()
    paperclip = re.search(r'<button[^>]*id="attach-button"[^>]*>', home).group(0)
    assert "disabled" not in paperclip  # a new chat attaches too: the page makes its conversation first
