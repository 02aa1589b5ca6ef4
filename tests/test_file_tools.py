"""The agents' file tools: list_files and read_file read the run's conversation's files, for its
user only, a window at a time; a wrong name or offset is an error the model can correct."""

import pytest

from agents import registry
from agents.schema import InvalidArguments
from agents.tools import ToolContext
from chat import uploads
from chat.models import ChatModel, Conversation
from tests.files import pdf_with_pages, png

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(alice) -> Conversation:
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    uploads.store_upload(alice, conversation.pk, "numbers.csv", ("n\n" + "".join(f"{n}\n" for n in range(1000))).encode())
    uploads.store_upload(alice, conversation.pk, "Paper.pdf", pdf_with_pages("Abstract", "Results"))
    return conversation


def run(user, conversation_id: int, name: str, arguments: dict) -> dict:
    """A call as a run makes it: the tool looked up for the user, its arguments checked, then run."""
    tool, checked = registry.prepare(user, name, arguments)
    return tool.run(ToolContext(user=user, run_id=1, step_id=1, conversation_id=conversation_id), checked)


def test_list_files_names_the_conversations_files(alice, conversation):
    assert run(alice, conversation.pk, "list_files", {}) == {
        "files": [
            {"name": "numbers.csv", "content_type": "text/csv", "size": 3892, "chars": 3892},
            {"name": "Paper.pdf", "content_type": "application/pdf", "size": len(pdf_with_pages("Abstract", "Results")), "chars": 17},
        ]
    }


def test_read_file_reads_a_window_and_says_whether_more_follows(alice, conversation):
    first = run(alice, conversation.pk, "read_file", {"name": "numbers.csv", "max_chars": 10})
    assert first == {"name": "numbers.csv", "content_type": "text/csv", "total_chars": 3892, "offset": 0, "text": "n\n0\n1\n2\n3\n", "truncated": True}
    last = run(alice, conversation.pk, "read_file", {"name": "numbers.csv", "offset": 3888})
    assert (last["text"], last["truncated"]) == ("999\n", False)
    whole = run(alice, conversation.pk, "read_file", {"name": "paper.pdf"})  # letter case aside
    assert (whole["name"], whole["text"], whole["truncated"]) == ("Paper.pdf", "Abstract\n\nResults", False)


def test_read_file_reads_at_most_8000_characters_unless_asked_for_more(alice, conversation):
    assert len(run(alice, conversation.pk, "read_file", {"name": "numbers.csv"})["text"]) == 3892
    uploads.store_upload(alice, conversation.pk, "long.txt", b"y" * 30_000)
    assert len(run(alice, conversation.pk, "read_file", {"name": "long.txt"})["text"]) == 8000
    assert len(run(alice, conversation.pk, "read_file", {"name": "long.txt", "max_chars": 20_000})["text"]) == 20_000


@pytest.mark.parametrize(
    ("arguments", "why"),
    [({"name": "missing.txt"}, "No file named 'missing.txt' is attached to this conversation. Attached: numbers.csv, Paper.pdf."),
     ({"name": "numbers.csv", "offset": 3893}, "offset 3893 is past the end of numbers.csv (3892 characters)."),
     ({"name": "numbers.csv", "max_chars": 20_001}, "max_chars must be at most 20000."),
     ({"name": "numbers.csv", "offset": -1}, "offset must be at least 0."),
     ({}, "Missing argument(s): name.")],
)
def test_a_wrong_call_is_an_error_the_model_can_correct(alice, conversation, arguments, why):
    with pytest.raises(InvalidArguments) as caught:
        run(alice, conversation.pk, "read_file", arguments)
    assert str(caught.value) == why


def test_another_users_conversation_has_no_files_for_the_caller(bob, conversation):
    assert run(bob, conversation.pk, "list_files", {}) == {"files": []}
    with pytest.raises(InvalidArguments, match="No files are attached") as caught:
        run(bob, conversation.pk, "read_file", {"name": "numbers.csv"})
    assert "numbers" not in str(caught.value).replace("'numbers.csv'", "")


def test_files_of_the_users_other_conversations_are_not_read(alice, conversation):
    other = Conversation.objects.create(owner=alice, model=conversation.model)
    assert run(alice, other.pk, "list_files", {}) == {"files": []}
    with pytest.raises(InvalidArguments, match="No files are attached"):
        run(alice, other.pk, "read_file", {"name": "numbers.csv"})


def test_a_file_cut_at_the_text_cap_says_so_in_the_list(alice, conversation, settings):
    settings.PARLEY_UPLOAD_MAX_TEXT_CHARS = 100
    uploads.store_upload(alice, conversation.pk, "big.md", b"z" * 101)
    assert run(alice, conversation.pk, "list_files", {})["files"][-1] == {
        "name": "big.md", "content_type": "text/markdown", "size": 101, "chars": 100, "text_truncated": True,
    }


def test_read_file_says_an_image_has_no_text(alice, conversation):
    uploads.store_upload(alice, conversation.pk, "chart.png", png(30, 20))
    with pytest.raises(InvalidArguments) as caught:
        run(alice, conversation.pk, "read_file", {"name": "chart.png"})
    assert str(caught.value) == "chart.png is an image: it has no text to read."
