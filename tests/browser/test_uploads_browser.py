"""Attaching files on the chat page: the paperclip makes the conversation of a new chat first, a
file shows as a chip above the composer with its name as text and its token cost, a refusal shows
in the composer's error line, and the × removes it."""

import pytest

from chat.models import Upload
from providers.base import TextFile

pytestmark = [pytest.mark.browser, pytest.mark.live]

ITEMS = "#upload-list .upload-item"


def test_a_file_is_attached_listed_and_removed(page):
    assert page.locator("#attach-button").is_enabled()  # a new chat too: the conversation is made first

    # Django reads an entity in a file name as its character; what is left must show as typed.
    page.set_input_files("#attach-input", files=[{"name": "Tom &amp;amp; Jerry.md", "mimeType": "text/markdown", "buffer": b"# Plot\n" * 300}])
    page.wait_for_selector(ITEMS)
    assert page.locator(f"{ITEMS} a").inner_text() == "Tom &amp; Jerry.md"
    upload = Upload.objects.get()
    assert upload.name == "Tom &amp; Jerry.md" and upload.conversation.owner.username == "walter"
    assert page.url.endswith(f"/c/{upload.conversation_id}/")
    tokens = TextFile(upload.name, "# Plot\n" * 300).tokens
    assert page.locator(f"{ITEMS} .upload-tokens").inner_text() == f"≈ {tokens:,} tokens"

    page.set_input_files("#attach-input", files=[{"name": "photo.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n"}])
    page.wait_for_function("() => !document.getElementById('composer-error').hidden")
    assert page.locator("#composer-error").inner_text() == (
        "photo.png: This file is not a PNG, JPEG, GIF or WebP image, although its name says so."
    )
    assert page.locator(ITEMS).count() == 1

    page.reload()
    page.wait_for_selector(ITEMS)
    assert page.locator(f"{ITEMS} a").inner_text() == "Tom &amp; Jerry.md"

    page.click(f"{ITEMS} .upload-remove")
    page.wait_for_function("() => document.getElementById('upload-list').hidden")
    assert page.locator(ITEMS).count() == 0
    assert not Upload.objects.exists()
