"""Files attached to a conversation (chat/uploads.py): the type by extension and by content,
the limits, the text extracted once, safe and distinct names, and only the owner's files."""

import pytest

from chat import uploads
from chat.actions import ActionError
from chat.models import ChatModel, Conversation, Upload
from tests.files import encrypted, pdf_with_pages

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"), title="Reading")


def refused(code: str, call, *args) -> str:
    with pytest.raises(ActionError) as caught:
        call(*args)
    assert caught.value.code == code, caught.value.detail
    return caught.value.detail


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("notes.txt", "text/plain"), ("README.MD", "text/markdown"), ("guide.markdown", "text/markdown"), ("data.csv", "text/csv")],
)
def test_text_files_are_typed_by_their_extension(alice, conversation, name, content_type):
    upload = uploads.store_upload(alice, conversation.pk, name, "a,b\n1,2\n".encode())
    assert (upload.name, upload.content_type, upload.size, upload.text) == (name, content_type, 8, "a,b\n1,2\n")


def test_text_is_utf8_with_or_without_a_byte_order_mark(alice, conversation):
    upload = uploads.store_upload(alice, conversation.pk, "café.txt", "\ufeffCafé crème\r\nzweite Zeile".encode())
    assert upload.text == "Café crème\nzweite Zeile" and upload.chars == len(upload.text)
    assert bytes(Upload.objects.get(pk=upload.pk).data) == "\ufeffCafé crème\r\nzweite Zeile".encode()  # stored as sent


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [("photo.png", b"\x89PNG\r\n", "not a PNG"), ("virus.exe", b"MZ", "Only text"), ("notes", b"hello", "Only text"), (".txt", b"hello", "Only text"),
     ("notes.txt", "Grüße".encode("latin-1"), "not UTF-8"), ("notes.txt", b"text\x00more", "NUL"),
     ("paper.pdf", b"just text", "not a PDF"), ("fake.csv", pdf_with_pages("Hello")[:64] + b"\xff\xfe", "not UTF-8")],
)
def test_a_file_whose_name_or_content_is_not_an_accepted_type_is_refused(alice, conversation, name, data, why):
    assert why in refused("unsupported_file_type", uploads.store_upload, alice, conversation.pk, name, data)
    assert not Upload.objects.exists()


def test_empty_files_are_refused(alice, conversation):
    assert "empty" in refused("invalid_input", uploads.store_upload, alice, conversation.pk, "a.txt", b"")
    assert "no text" in refused("invalid_input", uploads.store_upload, alice, conversation.pk, "a.txt", "\ufeff \n".encode())


def test_the_text_of_a_pdf_is_extracted_at_upload(alice, conversation):
    upload = uploads.store_upload(alice, conversation.pk, "report.pdf", pdf_with_pages("Hello page one", "Second page"))
    assert upload.content_type == "application/pdf"
    assert upload.text == "Hello page one\n\nSecond page" and upload.chars == 27


def test_a_pdf_encrypted_without_a_password_is_read(alice, conversation):
    data = encrypted(pdf_with_pages("Only printing is restricted"), user_password="")
    assert uploads.store_upload(alice, conversation.pk, "locked.pdf", data).text == "Only printing is restricted"


@pytest.mark.parametrize(
    ("data", "why"),
    [(encrypted(pdf_with_pages("Secret"), user_password="s3cret"), "protected by a password"),
     (b"%PDF-1.7\nthis is not a PDF at all", "could not be read: "),
     (pdf_with_pages("Cut short")[:150], "could not be read: "),
     (pdf_with_pages(""), "has no text")],
)
def test_a_pdf_that_cannot_be_read_is_refused_with_the_reason(alice, conversation, data, why):
    detail = refused("unreadable_file", uploads.store_upload, alice, conversation.pk, "paper.pdf", data)
    assert detail.startswith("This PDF could not be read: ") and why in detail
    assert not Upload.objects.exists()


def test_a_file_over_the_size_limit_is_refused(alice, conversation, settings):
    settings.PARLEY_UPLOAD_MAX_BYTES = 1024
    uploads.store_upload(alice, conversation.pk, "fits.txt", b"x" * 1024)
    assert "1 KiB" in refused("file_too_large", uploads.store_upload, alice, conversation.pk, "big.txt", b"x" * 1025)


def test_a_conversation_takes_a_limited_number_of_files(alice, conversation, settings):
    settings.PARLEY_UPLOADS_PER_CONVERSATION = 2
    uploads.store_upload(alice, conversation.pk, "a.txt", b"a")
    uploads.store_upload(alice, conversation.pk, "b.txt", b"b")
    assert "2 files" in refused("too_many_uploads", uploads.store_upload, alice, conversation.pk, "c.txt", b"c")
    uploads.delete_upload(alice, Upload.objects.get(name="a.txt").pk)
    uploads.store_upload(alice, conversation.pk, "c.txt", b"c")


def test_text_beyond_the_cap_is_cut_and_marked(alice, conversation, settings):
    settings.PARLEY_UPLOAD_MAX_TEXT_CHARS = 10
    upload = uploads.store_upload(alice, conversation.pk, "long.md", b"0123456789abc")
    assert (upload.text, upload.chars, upload.text_truncated, upload.size) == ("0123456789", 10, True, 13)
    assert not uploads.store_upload(alice, conversation.pk, "short.md", b"0123456789").text_truncated


@pytest.mark.parametrize(
    ("given", "kept"),
    [("C:\\Users\\al\\notes.txt", "notes.txt"), ("../../etc/passwd.txt", "passwd.txt"), ("..hidden.txt", "hidden.txt"),
     ('a<b>:"c"|?*.txt', "a_b___c____.txt"), ("evil\u202etxt.exe.md", "eviltxt.exe.md"), ("tab\tand\nnewline.csv", "tab and newline.csv"),
     ("  spaced   out  .txt", "spaced out .txt"), ("x" * 300 + ".markdown", "x" * 191 + ".markdown")],
)
def test_names_are_made_safe(given, kept):
    assert uploads.clean_name(given) == kept
    assert len(uploads.clean_name(given)) <= 200


def test_a_name_already_in_the_conversation_gets_a_number(alice, conversation, bob):
    names = [uploads.store_upload(alice, conversation.pk, "notes.txt", b"v").name for _ in range(3)]
    assert names == ["notes.txt", "notes (2).txt", "notes (3).txt"]
    other = Conversation.objects.create(owner=alice, model=conversation.model)
    assert uploads.store_upload(alice, other.pk, "notes.txt", b"v").name == "notes.txt"


def test_only_the_owner_reaches_a_conversations_files(alice, bob, conversation):
    upload = uploads.store_upload(alice, conversation.pk, "mine.txt", b"private")
    refused("not_found", uploads.store_upload, bob, conversation.pk, "theirs.txt", b"x")
    refused("not_found", uploads.uploads_for, bob, conversation.pk)
    refused("not_found", uploads.get_upload_for, bob, upload.pk)
    refused("not_found", uploads.delete_upload, bob, upload.pk)
    assert "No files are attached" in refused("not_found", uploads.read_upload_text, bob, conversation.pk, "mine.txt")
    assert Upload.objects.filter(pk=upload.pk).exists()
    assert [u.name for u in uploads.uploads_for(alice, conversation.pk)] == ["mine.txt"]


def test_lists_leave_the_bytes_and_the_text_unread(alice, conversation):
    uploads.store_upload(alice, conversation.pk, "a.txt", b"abc")
    listed = uploads.uploads_for(alice, conversation.pk).get()
    assert listed.get_deferred_fields() == {"data", "text"}
    assert listed.as_dict()["chars"] == 3


def test_deleting_a_conversation_deletes_its_files(alice, conversation):
    uploads.store_upload(alice, conversation.pk, "a.txt", b"abc")
    conversation.delete()
    assert not Upload.objects.exists()


def test_text_is_read_in_windows_by_name_or_id(alice, conversation):
    upload = uploads.store_upload(alice, conversation.pk, "Alphabet.txt", b"abcdefghij")
    assert uploads.read_upload_text(alice, conversation.pk, "Alphabet.txt", 2, 3) == {
        "name": "Alphabet.txt", "content_type": "text/plain", "total_chars": 10, "offset": 2, "text": "cde", "truncated": True,
    }
    assert uploads.read_upload_text(alice, conversation.pk, "alphabet.TXT", 7, 3)["text"] == "hij"
    assert uploads.read_upload_text(alice, conversation.pk, upload.pk, 7)["truncated"] is False
    assert uploads.read_upload_text(alice, conversation.pk, "Alphabet.txt", 10)["text"] == ""
    assert "past the end" in refused("invalid_input", uploads.read_upload_text, alice, conversation.pk, "Alphabet.txt", 11)
    assert "Attached: Alphabet.txt" in refused("not_found", uploads.read_upload_text, alice, conversation.pk, "nope.txt")
