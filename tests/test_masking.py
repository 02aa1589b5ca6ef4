"""Personal data is masked in everything the support console shows or exports (support/masking.py):
generated values of every kind are masked wherever they sit in a text, values that fail their check
and things that merely look like numbers stay, and a search query loses what it would confirm."""

import ipaddress
import re
import string
import time

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from support.masking import IBAN_LENGTHS, KINDS, Span, find, luhn_valid, mask, masked_query

# The machine is shared: no per-example deadline; and no example database left in the work tree.
# Applied test by test, so that other modules' property tests keep their own settings.
examples = settings(deadline=None, database=None, max_examples=150)

# Text around a value: words and punctuation, nothing that is personal data itself.
WORDS = ["the", "order", "was", "refunded", "Thanks!", "see", "below:", "(ok)", "it's", "fine,", "v2", "x86", "-", "—", "“quoted”"]
# Near misses: numbers and number-like things that are not personal data.
NEAR_MISSES = [
    "1.2.3", "v2024.11.30", "2026-11-30", "30.11.2026", "11/30/2026", "12:30", "12:30:45", "2026-11-30T12:30:45Z",
    "$1,234.56", "€12.99", "1 234 567 890", "1.234.567.890", "ORD-2024-000123", "#4521", "42", "3.14159",
    "999.1.1.1", "1.2.3.4.5", "10:30:00", "00:1A:2B:3C:4D:5E", "+15%", "UTC+05:30", "+1,000",
    "123e4567-e89b-12d3-a456-426614174000", "HTTP2ServerPushPromiseFrameHandlerV3", "std::vector",
    "IMG_20241130_123045_HDR_Portrait_Mode2", "sk-learn-is-a-python-library-name", "prl_abcdef",
]

words = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)


def embedded(value: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, str, str]]:
    """(before, value, after): the value between words, with a space or a line break on each side."""
    gap = st.sampled_from([" ", "\n", "  "])
    return st.tuples(words, gap, value, gap, words).map(lambda t: (t[0] + t[1], t[2], t[3] + t[4]))


def masks_to(kind: str, parts: tuple[str, str, str]) -> None:
    before, value, after = parts
    assert mask(before + value + after) == f"{before}[{kind}]{after}"
    assert [s.kind for s in find(value)] == [kind]


def stays(text: str) -> None:
    assert mask(text) == text, find(text)


# --- cards -----------------------------------------------------------------------------------------


def luhn_complete(body: str) -> str:
    """body followed by the check digit that makes it Luhn-valid."""
    return next(body + d for d in string.digits if luhn_valid(body + d))


def grouped(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(digits[i:i + size])
        i += size
    if i < len(digits):
        out.append(digits[i:])
    return sep.join(out)


@st.composite
def card_numbers(draw: st.DrawFn, valid: bool = True) -> str:
    length = draw(st.integers(13, 19))
    body = draw(st.sampled_from("23456")) + draw(st.text(string.digits, min_size=length - 2, max_size=length - 2))
    number = luhn_complete(body)
    if not valid:
        number = number[:-1] + str((int(number[-1]) + draw(st.integers(1, 9))) % 10)
    layout = draw(st.sampled_from(["bare", "fours", "amex"] if length == 15 else ["bare", "fours"]))
    if layout == "bare":
        return number
    sep = draw(st.sampled_from([" ", "-"]))
    return grouped(number, [4, 6, 5] if layout == "amex" else [4] * 4, sep)


@examples
@given(embedded(card_numbers()))
@example((" ", "4111 1111 1111 1111", " "))
@example(("Card ", "4111-1111-1111-1111", "."))
@example(("", "378282246310005", ""))
def test_luhn_valid_cards_are_masked_in_any_text(parts):
    masks_to("card", parts)


@st.composite
def sixteen_digits_failing_luhn(draw: st.DrawFn) -> str:
    number = luhn_complete(draw(st.text(string.digits, min_size=15, max_size=15)))
    number = number[:-1] + str((int(number[-1]) + draw(st.integers(1, 9))) % 10)
    return draw(st.sampled_from([number, grouped(number, [4] * 4, " "), grouped(number, [4] * 4, "-")]))


@examples
@given(embedded(sixteen_digits_failing_luhn()))
@example((" ", "4111111111111112", " "))
@example((" ", "4111 1111 1111 1112", " "))
def test_sixteen_digit_numbers_that_fail_luhn_stay(parts):
    stays("".join(parts))


@examples
@given(embedded(card_numbers(valid=False).map(lambda n: n.replace(" ", "").replace("-", ""))))
def test_numbers_of_13_to_19_digits_that_fail_luhn_stay(parts):
    stays("".join(parts))


def test_a_card_followed_by_its_security_code_is_masked_and_the_code_stays():
    assert mask("card 4111 1111 1111 1111 123 exp 12/27") == "card [card] 123 exp 12/27"


def test_a_card_after_another_number_is_masked_whole():
    assert mask("ref 12 4111 1111 1111 1111 thanks") == "ref 12 [card] thanks"
    assert mask("ref 123 4111 1111 1111 1111 thanks") == "ref 123 [card] thanks"
    assert mask("on 2026-11-30 4111 1111 1111 1111") == "on 2026-11-30 [card]"


# --- IBANs -----------------------------------------------------------------------------------------

# A few countries and how their BBANs look: n digits, a letters, c letters or digits.
BBANS = {"DE": "18n", "GB": "4a14n", "FR": "10n11c2n", "NL": "4a10n", "BE": "12n", "CH": "5n12c", "NO": "11n", "MT": "4a5n18c", "IT": "1a10n12c"}
ALPHABETS = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}


def iban_check_digits(country: str, bban: str) -> str:
    moved = bban + country + "00"
    return f"{98 - int(''.join(str(int(ch, 36)) for ch in moved)) % 97:02d}"


@st.composite
def bbans(draw: st.DrawFn) -> tuple[str, str]:
    country = draw(st.sampled_from(sorted(BBANS)))
    spec, bban = BBANS[country], ""
    for count, kind in re.findall(r"(\d+)([nac])", spec):
        bban += draw(st.text(ALPHABETS[kind], min_size=int(count), max_size=int(count)))
    assert len(country) + 2 + len(bban) == IBAN_LENGTHS[country]
    return country, bban


def iban_text(compact: str, spaced: bool) -> str:
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if spaced else compact


@st.composite
def ibans(draw: st.DrawFn, valid: bool = True) -> str:
    country, bban = draw(bbans())
    check = iban_check_digits(country, bban)
    if not valid:
        # Any other two digits fail, except those 97 apart (01 and 98, 02 and 99).
        check = draw(st.sampled_from([f"{n:02d}" for n in range(100) if (n - int(check)) % 97]))
    return iban_text(country + check + bban, draw(st.booleans()))


@examples
@given(embedded(ibans()))
@example((" ", "GB82 WEST 1234 5698 7654 32", " "))
@example((" ", "DE89370400440532013000", " "))
def test_mod_97_valid_ibans_are_masked_in_any_text(parts):
    masks_to("iban", parts)


@examples
@given(embedded(ibans(valid=False)))
@example((" ", "GB83 WEST 1234 5698 7654 32", " "))
@example((" ", "DE88370400440532013000", " "))
def test_ibans_that_fail_mod_97_stay_and_their_digits_are_not_read_as_cards_or_phones(parts):
    stays("".join(parts))


def test_a_group_after_an_iban_is_not_part_of_it():
    assert mask("BE68 5390 0754 7034 2024 invoice") == "[iban] 2024 invoice"


# --- e-mail addresses ------------------------------------------------------------------------------


@examples
@given(embedded(st.emails()))
@example((" ", "jane.doe+support@example.co.uk", "."))
@example(("(", "jörg@müller.de", ")"))
def test_email_addresses_are_masked_in_any_text(parts):
    before, value, after = parts
    assert mask(before + value + after) == f"{before}[email]{after}"


def test_an_address_in_markdown_code_keeps_its_backquotes():
    assert mask("write to `jane@example.com` today") == "write to `[email]` today"


def test_small_numbers_in_a_row_are_not_a_card():
    stays("codes 21 22 23 24 25 26 28 29 and 34 36 39 40 41 43 44 45")


def test_things_with_an_at_that_are_not_addresses_stay():
    stays("@login_required, user@localhost, a@b and @alice")


# --- IP addresses ----------------------------------------------------------------------------------


@examples
@given(embedded(st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))))
@example((" ", "192.168.1.1", "."))
def test_ipv4_addresses_are_masked_in_any_text(parts):
    masks_to("ip", parts)


@examples
@given(st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address), st.booleans(), words, words)
@example(ipaddress.IPv6Address("2001:db8::1"), False, "", "")
@example(ipaddress.IPv6Address("::1"), False, "at", "now")
@example(ipaddress.IPv6Address("fe80::1ff:fe23:4567:890a"), False, "", "")
def test_ipv6_addresses_are_masked_in_any_text(address, exploded, before, after):
    value = address.exploded if exploded else str(address)
    assume(any(ch.isdigit() for ch in value))  # `::` or `dead::beef` alone are not taken for addresses
    masks_to("ip", (before + " ", value, " " + after))


def test_an_ipv6_address_in_brackets_with_a_port_is_masked():
    assert mask("http://[2001:db8::1]:8080/") == "http://[[ip]]:8080/"


# --- phone numbers ---------------------------------------------------------------------------------


@st.composite
def international_phones(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(["1", "44", "49", "33", "353", "81", "7"]))
    sizes = draw(st.lists(st.integers(2, 4), min_size=2, max_size=4).filter(lambda s: 7 <= sum(s) <= 12))
    national = draw(st.sampled_from("123456789")) + draw(st.text(string.digits, min_size=sum(sizes) - 1, max_size=sum(sizes) - 1))
    sep = draw(st.sampled_from([" ", "-", "."]))
    prefix = draw(st.sampled_from(["+", "00"]))
    phone = f"{prefix}{country}{sep}{grouped(national, sizes, sep)}"
    assume(len(prefix + country) != 4 or sizes != [4, 4, 4])  # four groups of four read as a card
    return phone


@st.composite
def national_phones(draw: st.DrawFn) -> str:
    area = draw(st.sampled_from("23456789")) + draw(st.text(string.digits, min_size=2, max_size=2))
    exchange = draw(st.sampled_from("23456789")) + draw(st.text(string.digits, min_size=2, max_size=2))
    line = draw(st.text(string.digits, min_size=4, max_size=4))
    layout = draw(st.sampled_from(["({}) {}-{}", "{}-{}-{}", "{}.{}.{}", "{} {} {}", "1-{}-{}-{}"]))
    return layout.format(area, exchange, line)


@examples
@given(embedded(international_phones() | national_phones()))
@example((" ", "+44 20 7946 0958", " "))
@example((" ", "+1 (415) 555-2671", " "))
@example((" ", "+49-30-901820", " "))
@example((" ", "0044 20 7946 0958", " "))
@example((" ", "(415) 555-2671", " "))
@example((" ", "415-555-2671", " "))
@example((" ", "020 7946 0958", " "))
@example((" ", "+44 (0)20 7946 0958", " "))
def test_phone_numbers_are_masked_in_any_text(parts):
    masks_to("phone", parts)


# --- secrets ---------------------------------------------------------------------------------------

BASE62 = string.ascii_letters + string.digits
URLSAFE = BASE62 + "-_"


def keys(prefix: str, alphabet: str, size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=max_size or size).map(lambda body: prefix + body)


SECRETS = st.one_of(
    keys("sk-proj-", URLSAFE, 40, 80).filter(lambda k: any(c.isdigit() or c.isupper() for c in k[3:])),
    keys("sk-ant-api03-", URLSAFE, 60, 95).filter(lambda k: any(c.isdigit() or c.isupper() for c in k[3:])),
    keys("ghp_", BASE62, 36),
    keys("gho_", BASE62, 36),
    keys("github_pat_", BASE62 + "_", 40, 82),
    keys("xoxb-", string.digits + string.ascii_letters + "-", 20, 60),
    keys("AKIA", string.ascii_uppercase + string.digits, 16),
    keys("AIza", URLSAFE, 35),
    keys("prl_", URLSAFE, 43),  # accounts.models.ApiToken.issue: TOKEN_PREFIX + token_urlsafe(32)
    st.binary(min_size=16, max_size=32).map(bytes.hex).filter(lambda h: len(set(h)) >= 8 and not h.isdigit() and not h.isalpha()),
)


@examples
@given(embedded(SECRETS))
@example((" ", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", " "))
@example(("key=", "AKIAIOSFODNN7EXAMPLE", "\n"))
@example((" ", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", " "))
@example((" ", "Zx8kP2mQ9vR4tL7wN3yB6cH1jF5gD0sAq7Wm", " "))
def test_api_keys_and_long_random_strings_are_masked_in_any_text(parts):
    masks_to("secret", parts)


def test_a_bearer_token_is_masked_and_the_scheme_stays():
    assert mask("Authorization: Bearer abc123DEF456ghi789JKL0") == "Authorization: Bearer [secret]"
    stays("Bearer authentication is described in RFC 6750")


def test_keys_in_urls_headers_and_assignments_are_masked():
    assert mask("GET https://maps.example.com/v1?key=AIzaSyA1234567890abcdefghijklmnopqrstuv&q=1") == (
        "GET https://maps.example.com/v1?key=[secret]&q=1")
    assert mask('curl -H "Authorization: Bearer sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"') == (
        'curl -H "Authorization: Bearer [secret]"')
    assert mask("export OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z") == "export OPENAI_API_KEY=[secret]"


def test_offsets_hold_in_text_beyond_ascii():
    text = "🙂 naïve “quote” — 你好 sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z, 4111 1111 1111 1111 and ::1 🙂"
    assert mask(text) == "🙂 naïve “quote” — 你好 [secret], [card] and [ip] 🙂"


@examples
@given(st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()))
def test_uuids_are_identifiers_and_stay(uuid):
    stays(f"conversation {uuid} was exported")


def test_long_words_and_identifiers_stay():
    stays("Pneumonoultramicroscopicsilicovolcanoconiosis and WebMvcAutoConfiguration2Something and "
          "test_it_masks_cards_in_random_text_2 and https://example.com/api/v1/conversations/12345/messages")


# --- near misses -----------------------------------------------------------------------------------


@examples
@given(st.lists(st.tuples(st.sampled_from(NEAR_MISSES), words), max_size=12))
def test_versions_dates_times_prices_and_order_numbers_stay(pieces):
    stays(" ".join(f"{miss} word {text}" for miss, text in pieces))


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_each_near_miss_stays(text):
    stays(f"see {text} here")


# --- the contract ----------------------------------------------------------------------------------


@examples
@given(st.text(max_size=300) | st.lists(st.sampled_from(NEAR_MISSES + WORDS + ["4111 1111 1111 1111", "a@b.co", "::1", "+44 20 7946 0958", "DE89370400440532013000"])).map(" ".join))
def test_finds_are_sorted_non_overlapping_and_of_known_kinds(text):
    spans = find(text)
    assert all(isinstance(s, Span) and s.kind in KINDS and 0 <= s.start < s.end <= len(text) for s in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:], strict=False))
    masked = mask(text)
    assert masked.count("[") - text.count("[") == len(spans)


def test_several_kinds_in_one_message():
    text = ("Hi, I'm jane@example.com, +44 20 7946 0958. Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, "
            "server 10.0.0.12 / 2001:db8::7, key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z. Version 1.2.3 on 2026-11-30.")
    assert mask(text) == ("Hi, I'm [email], [phone]. Card [card], IBAN [iban], "
                          "server [ip] / [ip], key [secret]. Version 1.2.3 on 2026-11-30.")
    assert [s.kind for s in find(text)] == ["email", "phone", "card", "iban", "ip", "ip", "secret"]


def test_span_is_a_frozen_value():
    span = Span("email", 0, 5)
    with pytest.raises(AttributeError):
        span.kind = "ip"  # type: ignore[misc]
    assert span == Span("email", 0, 5)


@pytest.mark.parametrize("text", [
    ":" * 100_000, "1 " * 50_000, "a." * 50_000 + "@x.com", "@" * 100_000, "a@" * 50_000,
    "4111 1111 1111 1111 " * 5_000, "x-" * 50_000, "1.1.1.1." * 12_000, "GB82 " + "ABCD " * 20_000,
])
def test_pathological_texts_take_linear_time(text):
    started = time.perf_counter()
    mask(text)
    assert time.perf_counter() - started < 3


# --- search queries --------------------------------------------------------------------------------


def test_a_query_loses_its_personal_data_and_says_which_kinds():
    assert masked_query("refund  jane@example.com card 4111 1111 1111 1111 ") == ("refund card", ["email", "card"])
    assert masked_query("+44 20 7946 0958") == ("", ["phone"])


def test_a_query_without_personal_data_is_only_tidied():
    assert masked_query("  export   failed\ton 2026-11-30 ") == ("export failed on 2026-11-30", [])


def test_a_query_loses_parts_of_addresses_too():
    assert masked_query("from @example.com or jane@") == ("from or", ["email"])


@examples
@given(words, embedded(st.one_of(
    card_numbers(), ibans(), st.emails(), international_phones(), national_phones(), SECRETS,
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
)), words)
def test_no_query_keeps_a_value_that_mask_hides(head, parts, tail):
    query = f"{head} {parts[0]}{parts[1]}{parts[2]} {tail}"
    cleaned, kinds = masked_query(query)
    assert parts[1] not in cleaned
    assert len(kinds) == 1 and kinds[0] in KINDS
    assert cleaned == " ".join(f"{head} {parts[0]} {parts[2]} {tail}".split())
