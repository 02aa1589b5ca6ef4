"""Image uploads: the format and size read from the header, the limits, and the inline view."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from chat import uploads
from chat.actions import ActionError
from chat.images import read_header
from chat.models import ChatModel, Conversation
from providers.base import image_tokens
from tests.files import gif_header, jpeg_header, png, webp_header
from tests.test_api import assert_error

# The upload view is async: its database work runs on another thread, outside a test's
# transaction, so these tests commit.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("data", "media_type", "size"),
    [
        (png(640, 480), "image/png", (640, 480)),
        (jpeg_header(4032, 3024), "image/jpeg", (4032, 3024)),
        (gif_header(320, 200), "image/gif", (320, 200)),
        (webp_header(1920, 1080), "image/webp", (1920, 1080)),
        (webp_header(300, 16383, "VP8L"), "image/webp", (300, 16383)),
        (webp_header(800, 600, "VP8 "), "image/webp", (800, 600)),
    ],
)
def test_an_images_type_and_size_are_read_from_its_header(data, media_type, size):
    header = read_header(data)
    assert (header.media_type, (header.width, header.height)) == (media_type, size)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"hello, not an image", "unsupported_file_type"),
        (b"\x89PNG\r\n\x1a\n" + bytes(4) + b"IHDR" + bytes(8), "unreadable_file"),  # 0 x 0 pixels
        (jpeg_header(10, 10)[:30], "unreadable_file"),  # cut before its frame header
        (b"RIFF\x00\x00\x00\x00WEBPJUNK", "unreadable_file"),
    ],
)
def test_a_file_that_is_not_a_readable_image_is_refused(data, code):
    with pytest.raises(ActionError) as refused:
        read_header(data)
    assert refused.value.code == code


@pytest.fixture
def conversation(alice):
    return Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))


def test_an_image_is_stored_with_its_size_and_token_cost_its_bytes_deciding_its_type(alice, conversation):
    upload = uploads.store_upload(alice, conversation.pk, "holiday.png", jpeg_header(4032, 3024))
    assert (upload.content_type, upload.width, upload.height, upload.text, upload.chars) == ("image/jpeg", 4032, 3024, "", 0)
    assert upload.tokens == image_tokens(4032, 3024) == 1600  # the most an image is counted
    assert upload.as_dict()["kind"] == "image" and upload.as_dict()["tokens"] == 1600
    small = uploads.store_upload(alice, conversation.pk, "icon.gif", gif_header(16, 16))
    assert small.tokens == 85  # the least


def test_an_image_over_its_own_limit_is_refused(alice, conversation, settings):
    settings.PARLEY_IMAGE_MAX_BYTES = 1000
    with pytest.raises(ActionError) as refused:
        uploads.store_upload(alice, conversation.pk, "big.png", png(200, 200, (1, 2, 3)) + bytes(2000))
    assert refused.value.code == "file_too_large" and "1000 bytes, the most an image may have" in refused.value.detail
    assert uploads.store_upload(alice, conversation.pk, "notes.txt", b"x" * 2000).size == 2000  # text keeps its own


def test_the_image_view_shows_an_image_inline_sandboxed_and_only_to_its_owner(alice_client, bob, conversation):
    from django.test import Client

    sent = alice_client.post(
        f"/api/conversations/{conversation.pk}/uploads", {"file": SimpleUploadedFile("red.png", png(4, 3))}
    ).json()["upload"]
    assert (sent["kind"], sent["width"], sent["height"]) == ("image", 4, 3)
    shown = alice_client.get(f"/api/uploads/{sent['id']}/image")
    assert shown.status_code == 200 and shown.content == png(4, 3)
    assert shown["Content-Type"] == "image/png" and shown["X-Content-Type-Options"] == "nosniff"
    assert shown["Content-Disposition"] == 'inline; filename="red.png"'
    assert shown["Content-Security-Policy"].startswith("sandbox")
    text = alice_client.post(
        f"/api/conversations/{conversation.pk}/uploads", {"file": SimpleUploadedFile("a.txt", b"<svg onload=alert(1)>")}
    ).json()["upload"]
    assert_error(alice_client.get(f"/api/uploads/{text['id']}/image"), 404, "not_found")  # only images are shown
    other = Client()
    other.force_login(bob)
    assert_error(other.get(f"/api/uploads/{sent['id']}/image"), 404, "not_found")
