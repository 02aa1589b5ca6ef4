"""How long `support.masking.mask` takes on a typical 4 KB chat message, with and without personal data.

    .venv/bin/python -m bench.masking [--seconds 2]

The console masks every message it shows, and an export masks every message of up to 100,000
conversations, so the time per message is what counts. Three texts of about 4 KB each: ordinary
prose, code and numbers with no personal data; the same with a handful of items (an e-mail address,
a phone number, a card, an IBAN, an IP address, an API key); and a dense one, numbers and
identifiers in every line (a table of figures, dates, versions), where most candidates are checked
and rejected. Prints microseconds per call (the best of five rounds) and what it found.
"""

import argparse
import time

from support.masking import find, mask

PROSE = (
    "Thanks for the quick reply! I tried the steps from your last message on version 2.4.1 and the "
    "export still stops at about 60% with the error shown below. The job started at 12:30:45 on "
    "2026-11-30 and ran for roughly 14 minutes before it failed; the log says `retrying in 30s` three "
    "times and then gives up. Our plan is the Team plan at $49.00 a month, order ORD-2024-000123, "
    "and we have around 1,250 conversations in the workspace. Could the size of the attachments be "
    "the problem? Some of them are scanned PDFs of 20 MB or more.\n\n"
    "```python\ndef export(conversations, chunk=500):\n    for start in range(0, len(conversations), "
    "chunk):\n        batch = conversations[start:start + chunk]\n        yield render(batch)\n```\n\n"
)
PII = (
    "You can reach me at jane.doe@example.com or on +44 20 7946 0958 after 5 pm. The card on file "
    "is 4111 1111 1111 1111 and refunds should go to GB82 WEST 1234 5698 7654 32. The server is at "
    "192.168.10.24 and I used the key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z. "
)
NUMBERS = (
    "| 2026-11-30 | 12:30:45 | v1.2.3 | 1 234 567 | 4,512.00 | 17.5% | build 20241130.4 | 3.14159 |\n"
)


def text_of(parts: list[str], size: int = 4096) -> str:
    text = ""
    while len(text) < size:
        for part in parts:
            text += part
    return text[:size]


def per_call(text: str, seconds: float) -> float:
    """Microseconds per call, best of five rounds of about seconds / 5 each."""
    calls = max(1, int(seconds / 5 / max(_once(text), 1e-7)))
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            mask(text)
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def _once(text: str) -> float:
    started = time.perf_counter()
    mask(text)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent per text")
    args = parser.parse_args()
    texts = {
        "4 KB, no personal data": text_of([PROSE]),
        "4 KB, a few items": text_of([PROSE[:1500], PII, PROSE]),
        "4 KB, numbers in every line": text_of([NUMBERS]),
    }
    for name, text in texts.items():
        kinds = [span.kind for span in find(text)]
        found = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)) or "nothing"
        print(f"{name:30} {per_call(text, args.seconds):8.1f} µs per call   ({len(text)} chars; found {found})")


if __name__ == "__main__":
    main()
