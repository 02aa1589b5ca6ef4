"""A message with a text file and an image in the offline demo chat: chips with their token costs
and a total before sending, the files on the sent message (the image as a thumbnail) after a
reload; and a model that cannot read images refuses, the text and chips kept."""

import pytest

from chat.models import ChatModel, Message, Upload
from tests.files import png

pytestmark = [pytest.mark.browser, pytest.mark.live]

CHIPS = "#upload-list .upload-item"
NOTES = b"Agenda: budget, hiring, the offsite.\n" * 20


def attach(page, *files: dict) -> None:
    before = page.locator(CHIPS).count()
    page.set_input_files("#attach-input", files=list(files))
    page.wait_for_function(f"() => document.querySelectorAll('{CHIPS}').length === {before + len(files)}")


def test_a_text_file_and_an_image_go_with_a_message_and_stay_on_it(page):
    attach(
        page,
        {"name": "agenda.txt", "mimeType": "text/plain", "buffer": NOTES},
        {"name": "red.png", "mimeType": "image/png", "buffer": png(40, 30)},
    )
    agenda, red = Upload.objects.order_by("id")
    assert page.locator(CHIPS).all_inner_texts() == [f"agenda.txt\n≈ {agenda.tokens:,} tokens\n×", "red.png\n≈ 85 tokens\n×"]
    total = agenda.tokens + red.tokens
    assert page.locator("#upload-total").inner_text() == f"2 files with your message: ≈ {total:,} tokens."

    page.fill("#composer-input", "What is on the agenda?")
    page.press("#composer-input", "Enter")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    reply = page.locator(".msg-assistant .msg-body").inner_text()
    assert "I read a file: agenda.txt" in reply and "I see an image: red.png, 40×30." in reply
    assert page.locator("#upload-list").is_hidden() and page.locator("#upload-total").is_hidden()

    page.reload()
    files = page.locator(".msg-user .msg-files .msg-file")
    files.first.wait_for()
    assert files.all_inner_texts() == ["agenda.txt", "red.png"]
    assert page.locator(".msg-user .msg-file a").first.get_attribute("href") == f"/api/uploads/{agenda.pk}"
    thumb = page.locator(".msg-user img.msg-thumb")
    assert thumb.get_attribute("src") == f"/api/uploads/{red.pk}/image" and thumb.get_attribute("alt") == "red.png"
    page.wait_for_function("() => document.querySelector('img.msg-thumb').naturalWidth === 40")  # it loads and draws
    assert page.locator(CHIPS).count() == 0  # sent files are not waiting for the next message
    assert list(Message.objects.get(role="user").attachments.values_list("name", flat=True)) == ["agenda.txt", "red.png"]


def test_a_model_that_cannot_read_images_refuses_and_the_composer_keeps_everything(page):
    ChatModel.objects.create(name="blind-demo", label="Blind demo", provider="demo", supports_vision=False, sort_order=1)
    page.reload()
    page.select_option("#model-picker", "blind-demo")
    attach(page, {"name": "red.png", "mimeType": "image/png", "buffer": png(4, 3)})
    assert "This model can't read images" in page.locator("#upload-total").inner_text()
    page.fill("#composer-input", "What colour is it?")
    page.press("#composer-input", "Enter")
    page.wait_for_function("() => !document.getElementById('composer-error').hidden")
    assert page.locator("#composer-error").inner_text() == (
        "Blind demo can't read images; pick a model that can, or remove the image (red.png)."
    )
    assert page.input_value("#composer-input") == "What colour is it?"
    assert page.locator(CHIPS).count() == 1
    assert not Message.objects.exists()
