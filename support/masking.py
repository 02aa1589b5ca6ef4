"""Personal data masked in everything the support console shows or exports.

`find(text)` returns the personal data in a text as sorted, non-overlapping `Span`s;
`mask(text)` replaces each with its kind's label in brackets (`[email]`, `[phone]`, `[card]`,
`[iban]`, `[ip]`, `[secret]`); `masked_query(query)` drops them from a search query instead.

What counts, and what deliberately does not:
- e-mail addresses in the usual `local@domain.tld` syntax (letters of any script);
- payment cards: 13 to 19 digits, bare or in groups of three to six split by single spaces or by
  single dashes (one of them throughout), and only when the Luhn check passes (an order number or
  a 16-digit id that fails it stays);
- IBANs: country code, two check digits, up to 30 letters or digits, bare or in groups of four,
  and only when the ISO 13616 mod-97 check passes (and, for the registry's countries, the length
  is the country's). The digits of a string shaped exactly like a country's IBAN that fails the
  check are not read as a card or a phone number either;
- IPv4 and IPv6 addresses as `ipaddress` reads them (`999.1.1.1`, `1.2.3`, `12:30:45` stay; an
  IPv6 address needs a digit, so `::` and words like `dead::beef` stay);
- phone numbers: international ones (`+44 20 7946 0958`, `0044 20 7946 0958`: 8 to 15 digits
  after the prefix; after `00`, a real country code set apart), and national ones only in a
  phone-like grouping (`(415) 555-2671`, `415-555-2671`, `020 7946 0958`: 10 or 11 digits in three
  or more groups with one separator, or after an area code in parentheses). Dates, times,
  versions, prices, thousands groupings (`1 234 567 890`), the last groups of a longer number and
  four groups of four digits (a card's layout) stay;
- secrets: API keys by their prefix (OpenAI and Anthropic `sk-`, GitHub `ghp_`/`gho_`/
  `github_pat_`, Slack `xox?-`, AWS `AKIA`, Google `AIza`, Stripe `sk_live_`, Parley's own `prl_`
  tokens), JWTs, the token after `Bearer`, and long strings that look random: 32 or more
  characters of hex with letters and digits (hashes and commit ids too), or of base64 mixing
  capitals, small letters and digits and not made of words (`HTTP2ServerPushHandlerV3` stays).
  UUIDs are identifiers, not secrets: they stay.

Where two finds overlap, the kind listed first in `_PRIORITY` wins (a Luhn-valid card is never
read as a phone number, an IPv4 address never as one either).

Speed: the console masks every message it shows and exports mask whole conversations, so each
kind is looked for only where it can be, found at C speed before any Python runs: e-mail
addresses around an `@` (`str.find`); secrets in runs of 20 or more key characters, found on a
byte copy of the text (`bytes.translate`, then `bytes.find`); IPv6 addresses at a `::` or in a
run of 15 hex digits, colons and dots (the same way); cards, IBANs, IPv4 addresses and phone
numbers in one pass of one pattern that starts at a digit, a `+` or a `(`. Each candidate is then
checked in Python (Luhn, mod 97, `ipaddress`, ...). Any text takes linear time.
"""

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

KINDS = ("email", "phone", "card", "iban", "ip", "secret")


@dataclass(frozen=True, slots=True)
class Span:
    """One piece of personal data: its kind (one of `KINDS`) and where it is, `text[start:end]`."""

    kind: str
    start: int
    end: int


# Which kind wins where two finds overlap. `void` is the place of an IBAN-shaped string that fails
# its check: it masks nothing, but no card or phone number is read inside it.
_PRIORITY = {"email": 0, "secret": 1, "iban": 2, "void": 3, "card": 4, "ip": 5, "phone": 6}


_NOT_DIGITS = re.compile(r"[^0-9]+")


def _digits(text: str) -> str:
    return _NOT_DIGITS.sub("", text)


def _ends(candidate: str, separators: str) -> Iterator[int]:
    """The candidate's length, then the ends of its shorter prefixes that stop before a separator.

    A greedy pattern may take a stray group after the value (`BE68 5390 0754 7034 2024`, an IBAN and
    a year): the value is then the longest prefix that passes the check."""
    yield len(candidate)
    last = len(candidate)
    for i in range(len(candidate) - 1, 0, -1):
        if candidate[i] in separators:
            end = len(candidate[:i].rstrip(separators))
            if 0 < end < last:
                last = end
                yield end


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616: country code and check digits moved to the end, letters as 10..35, mod 97 is 1."""
    if not (15 <= len(compact) <= 34 and compact.isascii() and compact.isalnum()):
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


# --- Numbers: cards, IBANs, IPv4 addresses, phone numbers ------------------------------------------
#
# One pattern for all four, so the text is scanned once. It starts by consuming one character of
# `[0-9+(]`: a pattern that starts with a character class lets the regex engine skip every other
# character in C, where a pattern that starts with a look-behind is tried at every position (ten
# times slower on prose). Each branch then checks that first character and the one before it with
# look-behinds, and its own rest. IBANs are found from their check digits, so that the scan never
# stops at a letter.

_NUMBER_BRANCHES: tuple[tuple[str, str, str], ...] = (
    # name, look-behinds on the first character (and what precedes it), the rest; at one place,
    # the first branch that matches is checked first.
    ("iban", r"(?<=[A-Za-z]{2}[0-9])(?<!\w[A-Za-z]{2}[0-9])", r"""
        [0-9](?:
            [A-Za-z0-9]{11,30}
          | (?:[ ][A-Za-z0-9]{4}){2,7}(?:[ ][A-Za-z0-9]{1,3})?
        )(?!\w)"""),
    ("phone_intl", r"(?<=[+0])(?<![+].)", r"""
        (?:(?<=\+)|(?<=0)0)[1-9]
        (?:[0-9]|[ .-](?=[0-9]|\([0-9])|\([0-9]{1,5}\)(?=[ .-]?[0-9])){6,30}
        (?!\w)"""),
    # Not after a `+`: `+1.123.145.201` is a phone number.
    ("ipv4", r"(?<=[0-9])(?<![.+].)", r"""
        [0-9]{0,2}\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}(?!\w|\.[0-9])"""),
    # 13 to 19 digits, bare or in groups of three to six (the first and the last may be shorter:
    # `4222 2222 2222 2`, and `12 4111 1111 1111 1111`, where the card is found without the 12).
    ("card", r"(?<=[0-9])(?<![.+-].)", r"""
        (?=(?:[ -]?[0-9]){12})
        (?:[0-9]{12,18}|[0-9]{0,5}(?P<card_sep>[ -])(?:[0-9]{3,6}(?P=card_sep)){1,5}[0-9]{1,6})
        (?!\w|[.-][0-9])"""),
    ("phone_national", r"(?<![.+-].)", r"""
        (?:
            (?<=\()[0-9]{2,5}\)[ ]?[0-9]{2,4}(?:[ .-]?[0-9]{2,4}){1,3}
          | (?<=[0-9])[0-9]{0,4}(?P<phone_sep>[ .-])[0-9]{2,4}(?:(?P=phone_sep)[0-9]{2,4}){1,4}
            (?!(?P=phone_sep)[0-9])   # all the groups, or it is a longer number (`21 22 23 24 25 26`)
        )
        (?!\w|[.-][0-9])"""),
)
# The IBAN's first check digit follows its country code; every other branch starts where no word
# character precedes, checked once for them all: most digits (inside a number or a word) end there.
# Cards and national numbers have ten digits or more, also checked once before either is tried.
_AFTER_LETTERS = ("iban",)
_MANY_DIGITS = ("card", "phone_national")


def _numbers_pattern(branches: tuple[tuple[str, str, str], ...]) -> re.Pattern[str]:
    def alternatives(which: Callable[[str], bool]) -> str:
        return "|".join(f"{lb}(?P<{n}>{rest})" for n, lb, rest in branches if which(n))

    after_letters = alternatives(lambda n: n in _AFTER_LETTERS)
    many = alternatives(lambda n: n in _MANY_DIGITS)
    few = alternatives(lambda n: n not in _MANY_DIGITS and n not in _AFTER_LETTERS)
    if many:
        many = rf"(?=(?:[ .()-]{{0,2}}[0-9]){{9}})(?:{many})"
    after_word = "|".join(filter(None, [few, many]))
    if after_word:
        after_word = rf"(?<!\w.)(?:{after_word})"
    return re.compile("[0-9+(](?:" + "|".join(filter(None, [after_letters, after_word])) + ")", re.VERBOSE)


_NUMBERS = _numbers_pattern(_NUMBER_BRANCHES)
# Each branch alone, to try the ones after a rejected candidate at the same place.
_NUMBER_ALONE = tuple((branch[0], _numbers_pattern((branch,))) for branch in _NUMBER_BRANCHES)
_NUMBER_INDEX = {name: i for i, (name, _) in enumerate(_NUMBER_ALONE)}

# A number check gets the text and the candidate's start and end, and answers with its finds
# (kind, start, end), each possibly shorter than the candidate; none if it is rejected.
Find = tuple[str, int, int]
NumberCheck = Callable[[str, int, int], list[Find]]

# IBAN lengths by country (the SWIFT IBAN registry): a known country's IBAN has exactly its length,
# which also tells where one ends when a group follows it; any other country's is taken whole.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def _iban(text: str, start: int, end: int) -> list[Find]:
    candidate = text[start:end]
    length = IBAN_LENGTHS.get(candidate[:2].upper())
    if length is None:
        compact = candidate.replace(" ", "").upper()
        return [("iban", start, end)] if iban_valid(compact) else []
    for n in _ends(candidate, " "):
        compact = candidate[:n].replace(" ", "").upper()
        if len(compact) == length:
            # Shaped exactly like the country's IBAN: if the check fails, its digits are no card.
            return [("iban" if iban_valid(compact) else "void", start, start + n)]
    return []


def _card(text: str, start: int, end: int) -> list[Find]:
    """The card number in the candidate's groups (its pattern keeps one separator throughout).

    The candidate may hold a little more than the card: a short number before it (`ref 123 4111
    1111 1111 1111`) or a security code or year after it. So the candidate is tried whole, without a
    first group of three digits, and without a last group of up to four, longest first."""
    candidate = text[start:end]
    sep = " " if " " in candidate else "-"
    groups = candidate.split(sep)
    firsts = [0, 1] if len(groups) > 2 and len(groups[0]) <= 3 else [0]
    lasts = [len(groups), len(groups) - 1] if len(groups) > 2 and len(groups[-1]) <= 4 else [len(groups)]
    windows = sorted(
        ((-sum(map(len, groups[i:j])), i, j) for i in firsts for j in lasts),
    )
    for negative, i, j in windows:
        digits = "".join(groups[i:j])
        if 13 <= -negative <= 19 and luhn_valid(digits):
            s = sum(len(g) + 1 for g in groups[:i])
            return [("card", start + s, start + s + len(sep.join(groups[i:j])))]
    return []


def _ipv4(text: str, start: int, end: int) -> list[Find]:
    try:
        ipaddress.IPv4Address(text[start:end])
    except ValueError:
        return []
    return [("ip", start, end)]


# Country calling codes (ITU E.164) are prefix-free: one or two digits, or three that start with one
# of these pairs.
_CALLING_CODES = frozenset(
    "1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 "
    "65 66 81 82 84 86 90 91 92 93 94 95 98".split()
)
_CALLING_CODE_PAIRS = frozenset("21 22 23 24 25 26 28 29 35 37 38 42 50 59 67 68 69 80 85 87 88 96 97 99".split())
_SEPARATOR = re.compile(r"[ .(-]")


def calling_code(digits: str) -> bool:
    return digits in _CALLING_CODES or (len(digits) == 3 and digits[:2] in _CALLING_CODE_PAIRS)


def _phone_intl(text: str, start: int, end: int) -> list[Find]:
    candidate = text[start:end]
    prefix = 2 if candidate.startswith("00") else 1
    if prefix == 2:
        # Written with 00, a number dialled abroad sets its country code apart (`0044 20 7946 0958`);
        # a run of digits that starts with 00 (`0010 0000 0000 0009`) is as likely an id or a card.
        first = _SEPARATOR.search(candidate)
        if first is None or not calling_code(candidate[2:first.start()]):
            return []
        if _follows_a_group(text, start, first.group()):
            return []
    if _card_layout(candidate):
        return []
    for n in _ends(candidate, " .-("):
        count = len(_digits(candidate[prefix:n]))
        if count < 8:
            break
        if count <= 15:
            return [("phone", start, start + n)]
    return []


def _thousands(groups: list[str]) -> bool:
    return len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])


def _card_layout(candidate: str) -> bool:
    """Four groups of four digits: a card's layout (one that failed its check), never a phone number."""
    groups = _SEPARATOR.split(candidate)
    return len(groups) == 4 and all(len(g) == 4 and g.isdigit() for g in groups)


def _follows_a_group(text: str, start: int, sep: str) -> bool:
    """Whether a group of digits and `sep` come before `start`: then the candidate is the last groups
    of a longer number (`2000 0000 0000 07`), not a phone number of its own (`v2 415 555 2671` is)."""
    if start < 2 or text[start - 1] != sep or not "0" <= text[start - 2] <= "9":
        return False
    i = start - 2
    while i > 0 and "0" <= text[i - 1] <= "9":
        i -= 1
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")


def _phone_national(text: str, start: int, end: int) -> list[Find]:
    candidate = text[start:end]
    if _card_layout(candidate):
        return []
    sep = _SEPARATOR.search(candidate)
    if sep is not None and not candidate.startswith("(") and _follows_a_group(text, start, sep.group()):
        return []
    for n in _ends(candidate, " .-"):
        part = candidate[:n]
        count = len(_digits(part))
        if count < 10:
            break
        if count <= 11 and (part.startswith("(") or not _thousands(re.split(r"[ .-]", part))):
            return [("phone", start, start + n)]
    return []


_NUMBER_CHECKS: dict[str, NumberCheck] = {
    "iban": _iban, "card": _card, "ipv4": _ipv4, "phone_intl": _phone_intl, "phone_national": _phone_national,
}


def _number_finds(text: str, m: re.Match[str], name: str) -> list[Find]:
    # An IBAN's match starts at its check digits: its country code is the two characters before.
    start = m.start() - 2 if name == "iban" else m.start()
    return _NUMBER_CHECKS[name](text, start, m.end())


def _numbers(text: str, finds: list[Find]) -> None:
    pos = 0
    search = _NUMBERS.search
    while (m := search(text, pos)) is not None:
        name = m.lastgroup
        assert name is not None
        found = _number_finds(text, m, name)
        if not found:
            for later, pattern in _NUMBER_ALONE[_NUMBER_INDEX[name] + 1:]:
                other = pattern.match(text, m.start())
                if other is not None and (found := _number_finds(text, other, later)):
                    break
        finds.extend(found)
        # A rejected candidate may hold a shorter one further in (`12 4111 1111 1111 1111`).
        pos = found[-1][2] if found else m.start() + 1


# --- IPv6 ------------------------------------------------------------------------------------------

_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f:][0-9A-Fa-f:.]{1,44}(?:(?<![.:])|(?<=::))(?![\w:])")
_V6_CHARS = frozenset("0123456789abcdefABCDEF:.")
# Hex digits, colons and dots as one byte each: a run of 15 of them holds an address written out
# in full (`1:2:3:4:5:6:7:8` is the shortest); a compressed one has `::`.
_V6_BYTES = bytes(ord("h") if chr(i) in _V6_CHARS else ord(" ") for i in range(256))
_V6_RUN = b"h" * 15


def _ipv6(text: str, finds: list[Find]) -> None:
    starts: set[int] = set()
    at, end = text.find("::"), 0
    while at != -1:
        # The run of hex digits, colons and dots around it, each looked at once.
        start = at
        while start > end and text[start - 1] in _V6_CHARS:
            start -= 1
        starts.add(start)
        end = at + 2
        while end < len(text) and text[end] in _V6_CHARS:
            end += 1
        at = text.find("::", end)
    if text.count(":") >= 7:
        runs = text.encode("ascii", "replace").translate(_V6_BYTES)
        at = runs.find(_V6_RUN)
        while at != -1:
            starts.add(runs.rfind(b" ", 0, at) + 1)
            end = runs.find(b" ", at)
            at = -1 if end == -1 else runs.find(_V6_RUN, end)
    for start in sorted(starts):
        m = _IPV6.match(text, start)
        if m is None or not any("0" <= ch <= "9" for ch in m.group()):
            continue
        try:
            ipaddress.IPv6Address(m.group())
        except ValueError:
            continue
        finds.append(("ip", m.start(), m.end()))


# --- E-mail addresses ------------------------------------------------------------------------------

_LOCAL_CHARS = frozenset("!#$%&'*+/=?^_`{|}~-.")
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+[^\W\d_](?:[\w-]*[^\W_])?")


def _emails(text: str, finds: list[Find]) -> None:
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_CHARS):
            start -= 1
        # Leading dots are the sentence's; dots anywhere else are taken as typed (`jo..e@`, `jo.@`).
        local = text[start:at].lstrip(".")
        domain = _DOMAIN.match(text, at + 1) if local else None
        if domain is not None and local[0] == "`" and text.startswith("`", domain.end()):
            local = local.lstrip("`")  # Markdown's code quotes around it, not part of it
        if local and domain is not None:
            finds.append(("email", at - len(local), domain.end()))
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)


# --- Secrets ---------------------------------------------------------------------------------------

_SECRET = re.compile(r"""
    (?<![\w-])(?P<prefixed>
        sk-[A-Za-z0-9_-]{20,}                       # OpenAI (sk-proj-, sk-svcacct-), Anthropic (sk-ant-)
      | [sr]k_(?:live|test)_[A-Za-z0-9]{16,}        # Stripe secret and restricted keys
      | gh[pousr]_[A-Za-z0-9]{36,}                  # GitHub
      | github_pat_[A-Za-z0-9_]{22,}
      | xox[abeoprs]-[A-Za-z0-9-]{15,}              # Slack
      | (?:AKIA|ASIA)[0-9A-Z]{16}                   # AWS access key ids
      | AIza[0-9A-Za-z_-]{35}                       # Google
      | prl_[A-Za-z0-9_-]{20,}                      # Parley's API tokens (accounts.models.TOKEN_PREFIX)
      | eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+   # JWTs
    )(?![\w-])
  | (?<![\w+/-])(?P<random>[A-Za-z0-9+/_-]{32,}={0,2})(?![\w+/=-])
""", re.VERBOSE)
_BEARER = re.compile(r"(?<!\w)(?i:bearer)[ \t]+\Z")
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{20,}=*")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_HEX = re.compile(r"[0-9a-fA-F]+")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_DIGITS_INSIDE = re.compile(r"(?<=[A-Za-z])[0-9]{1,2}(?=[A-Za-z])")

# The characters of keys and tokens, as one byte each: a run of 20 of them is where a secret can be
# (the shortest, an AWS key id, has 20).
_KEY_BYTES = bytes(
    ord("k") if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "_+/=.~-") else ord(" ") for i in range(256)
)
_RUN = b"k" * 20


def looks_random(token: str) -> bool:
    """A long token that is a key rather than an identifier, a file name or a path.

    Hex with letters and digits counts (hashes too). Otherwise it must mix capitals, small letters
    and digits, and not be made of words: identifiers like `WebMvcAutoConfiguration2` have 80% or
    more of their letters in runs of three or more that read as words, and few digits between
    letters. A random 32-character base64 string passes for a word-made one about once in 150, a
    40-character one once in 500."""
    token = token.rstrip("=")
    if len(token) < 32 or _UUID.fullmatch(token):
        return False
    has_digit = any("0" <= ch <= "9" for ch in token)
    if _HEX.fullmatch(token):
        return has_digit and not token.isdigit() and len(set(token)) >= 8
    if not (has_digit and any(ch.isupper() for ch in token) and any(ch.islower() for ch in token)):
        return False
    letters = sum(ch.isalpha() for ch in token)
    in_words = sum(len(w) for w in _WORD.findall(token) if len(w) >= 3)
    return in_words < 0.8 * letters or len(_DIGITS_INSIDE.findall(token)) > 2


def _secrets_in(text: str, start: int, end: int, finds: list[Find]) -> None:
    """Secrets in one run of key characters, text[start:end]."""
    if _BEARER.search(text, max(0, start - 20), start):
        token = _BEARER_TOKEN.match(text, start, end)
        if token is not None and any("0" <= ch <= "9" for ch in token.group()):
            finds.append(("secret", start, token.end()))
            return
    for m in _SECRET.finditer(text, start, end):
        prefixed = m.group("prefixed")
        if prefixed is not None:
            # `sk-` also starts hyphenated words; a key has digits or capitals in it.
            if prefixed.startswith("sk-") and not any(ch.isdigit() or ch.isupper() for ch in prefixed[3:]):
                continue
        elif not looks_random(m.group("random")):
            continue
        finds.append(("secret", m.start(), m.end()))


def _secrets(text: str, finds: list[Find]) -> None:
    # One byte per character ("?" for anything beyond ASCII), so offsets are the text's own.
    keys = text.encode("ascii", "replace").translate(_KEY_BYTES)
    at = keys.find(_RUN)
    while at != -1:
        start = keys.rfind(b" ", 0, at) + 1
        end = keys.find(b" ", at)
        end = len(keys) if end == -1 else end
        _secrets_in(text, start, end, finds)
        at = keys.find(_RUN, end)


# --- The whole ---------------------------------------------------------------------------------


def find(text: str) -> list[Span]:
    """The personal data in `text`: sorted, non-overlapping spans, each of a kind in `KINDS`."""
    finds: list[Find] = []
    if "@" in text:
        _emails(text, finds)
    _secrets(text, finds)
    _numbers(text, finds)
    _ipv6(text, finds)
    if not finds:
        return []
    # Where finds overlap, the higher priority wins, then the earlier start.
    finds.sort(key=lambda f: (_PRIORITY[f[0]], f[1]))
    starts: list[int] = []
    kept: list[Find] = []
    for found in finds:
        _, start, end = found
        i = bisect.bisect_right(starts, start)
        if (i and kept[i - 1][2] > start) or (i < len(kept) and kept[i][1] < end):
            continue
        starts.insert(i, start)
        kept.insert(i, found)
    return [Span(kind, start, end) for kind, start, end in kept if kind != "void"]


def mask(text: str) -> str:
    """`text` with each piece of personal data replaced by its kind's label, e.g. `[email]`."""
    spans = find(text)
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for span in spans:
        parts.append(text[pos:span.start])
        parts.append(f"[{span.kind}]")
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


# A word with an `@` in it is (part of) an address: searching for it could confirm one exists.
_AT_WORD = re.compile(r"\S*@\S*")


def masked_query(query: str) -> tuple[str, list[str]]:
    """A search query without its personal data, and the kinds dropped (each once, in order).

    The values are dropped, not labelled, and the spaces left are collapsed, so that a search can
    never confirm that a masked value exists. Words with an `@` (`jo@`, `@example.com`) are
    dropped as e-mail addresses too: they are parts of one."""
    kinds: list[str] = []
    kept: list[str] = []
    pos = 0
    for span in find(query):
        kept.append(query[pos:span.start])
        kinds.append(span.kind)
        pos = span.end
    kept.append(query[pos:])
    rest = " ".join(kept)
    if "@" in rest:
        rest = _AT_WORD.sub(" ", rest)
        kinds.append("email")
    return " ".join(rest.split()), list(dict.fromkeys(kinds))
