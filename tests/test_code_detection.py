"""What routing rules read in a message (routing/detect.py): code as defined there, and keywords
as whole words in any case."""

import pytest

from routing.detect import clean_keywords, contains_code, keyword_pattern


@pytest.mark.parametrize(
    "text",
    [
        "Why?\n```\nx = 1\n```",
        "```js\nlet x\n```",  # a fence alone is enough, whatever is inside
        "~~~\nanything\n~~~",
        "It fails:\nTraceback (most recent call last):\n  File \"a.py\", line 3, in <module>",
        "def add(a, b):\n    return a + b",
        "const total = items.length;\nconsole.log(total);",
        "#include <stdio.h>\nint main(void) {\n  return 0;\n}",
        "SELECT name FROM users WHERE id = 1\nORDER BY name;",
        "for item in items:\n    print(item)",
        "import os\nfrom pathlib import Path",
        "public static int add(int a, int b) {\n  return a + b;\n}",
        "fn main() {\n    println!(\"hi\");\n}",
        "<div class=\"card\">\n  <p>Hello</p>\n</div>",
        ">>> 1 + 1\n2\n>>> len([])",
    ],
)
def test_code_is_found(text):
    assert contains_code(text)


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "x = compute(y);",  # one line of code alone is not enough
        "I like apples; pears too.\nFor example: bananas.\nif you want: call me.\nLet me know what you think.",
        "Import the data first.\nThen let me know: is it fine?",
        "Here is my list:\n    apples and pears\n    more of them",  # indented prose under prose
        "Prices went up by 5% (see the report) and then fell.\nWhy?",
        "Use backticks like `this` inline, not a fence.",
    ],
)
def test_prose_is_not_code(text):
    assert not contains_code(text)


def test_keywords_are_cleaned_into_a_list():
    assert clean_keywords("Invoice, refund\n  unit   test ,invoice,,\n\nC++") == ["invoice", "refund", "unit test", "c++"]
    assert clean_keywords("") == []


@pytest.mark.parametrize(
    ("typed", "says"),
    [("x" * 61, "longer than 60"), ("ok, ---", "no letter or digit"), (",".join(f"k{n}" for n in range(101)), "at most 100")],
)
def test_bad_keywords_are_refused_with_words(typed, says):
    with pytest.raises(ValueError, match=says):
        clean_keywords(typed)


def test_keywords_match_whole_words_in_any_case():
    pattern = keyword_pattern(["invoice", "unit test", "c++"])
    assert pattern is not None
    assert pattern.search("my INVOICE is late") and pattern.search("invoice.") and pattern.search("(Invoice)")
    assert pattern.search("a unit\ttest") and pattern.search("C++ question")
    assert not pattern.search("invoices") and not pattern.search("reinvoice") and not pattern.search("unittest")
    assert not pattern.search("cc++") and keyword_pattern([]) is None


def test_the_longest_keyword_is_the_one_named():
    pattern = keyword_pattern(["unit", "unit test"])
    assert pattern is not None and pattern.search("write a unit test").group(0) == "unit test"
