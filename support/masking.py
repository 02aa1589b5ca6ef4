"""Personal data masked in everything the support console shows or exports.

`mask(text)` replaces each piece of personal data with a label in brackets, e.g. `[email]`.
(First cut: e-mail addresses only; the other kinds follow.)"""

import re

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def mask(text: str) -> str:
    return EMAIL.sub("[email]", text)


def masked_query(query: str) -> tuple[str, list[str]]:
    """`query` with its personal data dropped, and the kinds dropped (each once): a search must not
    find, through the index, what the masked text hides."""
    kept, found = EMAIL.subn(" ", query)
    return " ".join(kept.split()), ["email"] if found else []
