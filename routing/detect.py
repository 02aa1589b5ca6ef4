"""What routing rules read in a message's text: whether it contains code, and their keywords.

"Contains code" means, and only means, one of:
- a fenced block: a line opening with three or more backticks or tildes (Markdown's fences);
- a Python traceback (`Traceback (most recent call last):`);
- at least two lines that each carry a strong sign of code: a definition (`def f(`, `class A:`,
  `function f(`, `fn main(`, `func main(`), an import (`import x`, `from x import y`,
  `#include <x>`, `use x::y;`), a declaration (`const x =`, `let x =`, `var x =`, a typed Java/C#
  method), an SQL statement in capitals (`SELECT … FROM`, `INSERT INTO`, `CREATE TABLE`, ...), a
  block opener (`if (…) {`, `for x in y:`), a line ending in `;` or `{`, a line of closing
  braces, an HTML tag, or a `>>>` prompt; or a line indented by four spaces or a tab right under
  such a line.
One such line alone is not enough: prose has the odd semicolon or a sentence starting "import".
"""

import re
from collections.abc import Iterable

KEYWORDS_MAX = 100
KEYWORD_MAX_CHARS = 60

_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)", re.MULTILINE)
_INDENTED = re.compile(r"^(?: {4}|\t)\s*\S")
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE)
_CODE_LINE = re.compile(
    r"""^\s*(?:
        (?:async\s+)?def\s+\w+\s*\(                                   # Python
      | class\s+\w+[\w\s,.()<>]*[:{(]                                 # Python, Java, JS, C#
      | (?:export\s+)?(?:async\s+)?function\s*\*?\s*\w*\s*\(          # JavaScript
      | (?:pub\s+)?fn\s+\w+\s*[(<]                                    # Rust
      | func\s+(?:\([^)]*\)\s*)?\w+\s*\(                              # Go
      | import\s+[\w.{*]                                              # Python, JS, Java, Go
      | from\s+[\w.]+\s+import\s+\S                                   # Python
      | \#include\s*[<"]                                              # C, C++
      | use\s+[\w:]+(?:::\{?[\w, ]+\}?)?\s*;                          # Rust, PHP
      | (?:const|let|var)\s+[\w{\[][^=]*=                              # JavaScript
      | (?:public|private|protected)\s+(?:static\s+)?[\w<>\[\],]+\s+\w+\s*\(  # Java, C#
      | (?:SELECT\s.+\sFROM\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|CREATE\s+(?:TABLE|INDEX)\s)  # SQL
      | (?:if|for|while|switch)\s*\(.*\)\s*\{                          # C-like blocks
      | (?:for\s+[\w, ]+\s+in\s+\S.*|(?:if|elif|while)\s+\S.*(?:==|!=|<=|>=|\bnot\s|\bis\s|\bin\s|\(|\.\w).*
         |with\s+\S.*\sas\s+\w+|try|except(?:\s+\w.*)?|else|finally)\s*:\s*$  # Python blocks
      | [})\]]+\s*;?\s*$                                               # closing braces
      | </?[a-zA-Z][\w-]*(?:\s[^>]*)?>                                 # HTML
      | >>>\s                                                          # a Python prompt
    )
    | [;{]\s*$                                                         # a statement's or block's end
    """,
    re.VERBOSE,
)


def contains_code(text: str) -> bool:
    """Whether the text contains code, as the module's docstring defines it."""
    if _FENCE.search(text) or _TRACEBACK.search(text):
        return True
    signs, after_sign = 0, False
    for line in text.splitlines():
        if not line.strip():
            continue
        # A body indented under a line of code is code too ("def f():" then "    return 1").
        after_sign = bool(_CODE_LINE.search(line) or (after_sign and _INDENTED.match(line)))
        signs += after_sign
        if signs >= 2:
            return True
    return False


def clean_keywords(text: str) -> list[str]:
    """Keywords as an admin typed them (one per line or comma-separated) made a list: trimmed, one
    space between words, lower case, each once, in order. ValueError says what is wrong."""
    found: list[str] = []
    for raw in re.split(r"[,\n]", text):
        keyword = " ".join(raw.split()).casefold()
        if not keyword or keyword in found:
            continue
        if len(keyword) > KEYWORD_MAX_CHARS:
            raise ValueError(f"“{keyword[:20]}…” is longer than {KEYWORD_MAX_CHARS} characters.")
        if not re.search(r"\w", keyword):
            raise ValueError(f"“{keyword}” has no letter or digit: it would never be a whole word.")
        found.append(keyword)
    if len(found) > KEYWORDS_MAX:
        raise ValueError(f"{len(found)} keywords: at most {KEYWORDS_MAX}.")
    return found


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern that finds any of the keywords as whole words, in any case; None for none.
    A keyword of several words matches with any spaces between them."""
    parts = [r"\s+".join(map(re.escape, keyword.split())) for keyword in keywords]
    if not parts:
        return None
    # Longest first, so that "unit test" is named rather than "unit" when both are keywords.
    parts.sort(key=len, reverse=True)
    return re.compile(rf"(?<!\w)(?:{'|'.join(parts)})(?!\w)", re.IGNORECASE)
