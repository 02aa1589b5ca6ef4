"""Personal data masked in everything the support console shows or exports.

`mask(text)` replaces each piece of personal data with a label in brackets, e.g. `[email]`.
(First cut: e-mail addresses only; the other kinds follow.)"""

import re

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def mask(text: str) -> str:
    return EMAIL.sub("[email]", text)
