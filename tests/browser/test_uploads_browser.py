"""Attaching files on the chat page: the paperclip waits for a conversation, a file shows in the
list above the composer with its name as text, a refusal shows in the composer's error line, and
the × removes it."""

import pytest

from chat.models import Upload

pytestmark = [pytest.mark.browser, pytest.mark.live]

ITEMS = "#upload-list .upload-item"


def test_a_file_is_attached_listed_and_removed(page):
    attach = page.locator("#attach-button")
    assert attach.is_disabled() and attach.get_attribute("title") == "Send a first message to attach files"

    page.fill("#composer-input", "hello")
    page.press("#composer-input", "Enter")
    page.wait_for_function("() => !document.getElementById('attach-button').disabled")

    # Django reads an entity in a file name as its character; what is left must show as typed.
    page.set_input_files("#attach-input", files=[{"name": "Tom &amp;amp; Jerry.md", "mimeType": "text/markdown", "buffer": b"# Plot\n" * 300}])
    page.wait_for_selector(ITEMS)
    assert page.locator(f"{ITEMS} a").inner_text() == "Tom &amp; Jerry.md"
    assert page.locator(f"{ITEMS} .upload-size").inner_text() == "2 KB"
    upload = Upload.objects.get()
    assert upload.name == "Tom &amp; Jerry.md" and upload.conversation.owner.username == "walter"

    page.set_input_files("#attach-input", files=[{"name": "photo.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n"}])
    page.wait_for_function("() => !document.getElementById('composer-error').hidden")
    assert page.locator("#composer-error").inner_text().startswith("photo.png: Only text (.txt), Markdown (.md), CSV (.csv) and PDF")
    assert page.locator(ITEMS).count() == 1

    page.reload()
    page.wait_for_selector(ITEMS)
    assert page.locator(f"{ITEMS} a").inner_text() == "Tom &amp; Jerry.md"

    page.click(f"{ITEMS} .upload-remove")
    page.wait_for_function("() => document.getElementById('upload-list').hidden")
    assert page.locator(ITEMS).count() == 0
    assert not Upload.objects.exists()
