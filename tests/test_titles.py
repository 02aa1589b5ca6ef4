"""Automatic titles are plain words: no Markdown, no demo controls, never a placeholder for a real question."""

import pytest

from chat.titles import clean_model_title, fallback_title, plain_title


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("**Bold** and _kept_ `code`", "Bold and _kept_ code"),
        ("# Heading\n> quoted\n- item", "Heading quoted item"),
        ("See [the docs](https://example.com) ![alt](x.png)", "See the docs alt"),
        ("~~gone~~ __strong__", "gone strong"),
    ],
)
def test_plain_title_drops_markdown(text, plain):
    assert plain_title(text) == plain


def test_a_model_title_in_markdown_is_cleaned():
    assert clean_model_title('**"Trip to Lisbon".**') == "Trip to Lisbon"


def test_a_demo_message_of_controls_alone_is_named_by_its_words():
    assert fallback_title("/words 300 /slow 5", demo=True) == "/words 300 /slow 5"
    assert fallback_title("Plan a trip /words 3", demo=True) == "Plan a trip"
    assert fallback_title("   ", demo=True) == "New chat"


def test_a_long_question_is_cut_with_an_ellipsis():
    assert fallback_title("one two three four five six seven eight nine ten") == "one two three four five six seven eight…"
