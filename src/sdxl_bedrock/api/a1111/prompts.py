"""A1111's prompt syntax: emphasis parsed into weighted spans, and what it has that this server does not run.

`parse_prompt_attention` is A1111's parser (modules/prompt_parser.py), same grammar and same results:
`(text)` multiplies the emphasis of `text` by 1.1, `[text]` divides it by 1.1, `(text:1.3)` multiplies it by
1.3, brackets nest and multiply, an unclosed bracket runs to the end, `\\(`, `\\)`, `\\[`, `\\]`, `\\\\`
are literal characters, and `BREAK` (upper case, a word) starts a new 75-token chunk. Runs of equal emphasis
are merged. The engine then scales each token's embedding by its span's emphasis and restores the chunk's
mean (engine/prompts.py).

Refused with a 422 naming the field, never taken as plain text: prompt editing `[from:to:when]`,
`[to:when]`, `[from::when]` and alternation `[a|b]` (they change the prompt during sampling), composable
diffusion `a AND b` and a trailing `:weight` on the whole prompt (A1111 reads `a cat :1.2` as a weight on
the prompt's guidance). A `:` or `|` inside `[...]` that A1111 would not read as editing (`[a:b]`, no number
at the end) is ordinary text. Extra networks (`<lora:name:1>`) are taken out of a prompt before it comes
here (extra_networks.py); in a negative prompt they are text, as in A1111.

Comments (`strip_comments`) go before either, as A1111's "Comments" script takes them out
(modules/processing_scripts/comments.py, ScriptStripComments.process) while the `enable_prompt_comments`
setting is on (its default): from `#` to the end of its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from sdxl_bedrock.api.validation import malformed, shown
from sdxl_bedrock.errors import ProblemKind
from sdxl_bedrock.schema import PromptSpan, WeightedPrompt

# A1111's two passes, kept as two: the newlines they leave (a run of comment lines leaves one each) reach the
# infotext, which reports the prompt as A1111 does.
WHOLE_LINE_COMMENT = re.compile(r"(^|\n)#[^\n]*(\n|$)")
LINE_END_COMMENT = re.compile(r"#[^\n]*(\n|$)")


def strip_comments(text: str) -> str:
    """A1111 1.8+'s prompt comments taken out (modules/processing_scripts/comments.py, strip_comments):
    each `#` to its line's end becomes a newline (there is no escape: every `#` starts a comment)."""
    return LINE_END_COMMENT.sub("\n", WHOLE_LINE_COMMENT.sub("\n", text))


ROUND_BRACKET_MULTIPLIER = 1.1
SQUARE_BRACKET_MULTIPLIER = 1 / 1.1

RE_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
BREAK = ("BREAK", -1.0)  # A1111's marker in the parsed list

# modules/prompt_parser.py: composable diffusion splits on AND and reads a trailing weight.
RE_AND = re.compile(r"\bAND\b")
RE_TRAILING_WEIGHT = re.compile(r"^(\s*.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))\s*$", re.S)
# The schedule grammar's SIGNED_NUMBER, closing a `[...]` that A1111 reads as prompt editing.
RE_WHEN = re.compile(r":\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """A1111's parse: (text, emphasis) pairs, with ("BREAK", -1.0) where a chunk must end.

    Raises ValueError where a `(text:weight)` weight is not a number (`(a:1.2.3)`), which A1111 fails on."""
    res: list[list[str | float]] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start_position: int, multiplier: float) -> None:
        for position in range(start_position, len(res)):
            res[position][1] = float(res[position][1]) * multiplier

    for match in RE_ATTENTION.finditer(text):
        part, weight = match.group(0), match.group(1)
        if part.startswith("\\"):
            res.append([part[1:], 1.0])
        elif part == "(":
            round_brackets.append(len(res))
        elif part == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif part == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_BRACKET_MULTIPLIER)
        elif part == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_BRACKET_MULTIPLIER)
        else:
            for index, piece in enumerate(RE_BREAK.split(part)):
                if index > 0:
                    res.append(list(BREAK))
                res.append([piece, 1.0])
    for position in round_brackets:
        multiply_range(position, ROUND_BRACKET_MULTIPLIER)
    for position in square_brackets:
        multiply_range(position, SQUARE_BRACKET_MULTIPLIER)
    if not res:
        res = [["", 1.0]]
    merged = 0
    while merged + 1 < len(res):
        if res[merged][1] == res[merged + 1][1]:
            res[merged][0] = str(res[merged][0]) + str(res[merged + 1][0])
            res.pop(merged + 1)
        else:
            merged += 1
    return [(str(piece), float(emphasis)) for piece, emphasis in res]


def spans_of(parsed: list[tuple[str, float]]) -> tuple[PromptSpan, ...]:
    """The parse as the engine's spans: a BREAK marker becomes the next span's `starts_chunk` (a trailing
    BREAK an empty span that starts a chunk)."""
    spans: list[PromptSpan] = []
    starts_chunk = False
    for piece, emphasis in parsed:
        if (piece, emphasis) == BREAK:
            if starts_chunk:
                spans.append(PromptSpan("", 1.0, True))
            starts_chunk = True
            continue
        spans.append(PromptSpan(piece, emphasis, starts_chunk))
        starts_chunk = False
    if starts_chunk:
        spans.append(PromptSpan("", 1.0, True))
    return tuple(spans)


@dataclass(frozen=True)
class ParsedPrompt:
    text: str  # the prompt's words without the emphasis syntax
    spans: tuple[PromptSpan, ...]

    def weighted(self) -> WeightedPrompt:
        return WeightedPrompt(self.text, 1.0, self.spans)


def parse_prompt(text: str, field: str, *, positive: bool) -> ParsedPrompt:
    """A prompt field's text as spans; MalformedBody (422) for syntax this server does not run."""
    check_supported(text, field, positive=positive)
    try:
        parsed = parse_prompt_attention(text)
    except ValueError:
        raise malformed(
            (field,), "an emphasis weight `(text:weight)` is not a number", kind=ProblemKind.INVALID
        ) from None
    spans = spans_of(parsed)
    return ParsedPrompt("".join(span.text for span in spans), spans)


def check_supported(text: str, field: str, *, positive: bool) -> None:
    if positive and RE_AND.search(text):
        refuse(field, "composable diffusion (AND) is not supported here")
    if positive and RE_TRAILING_WEIGHT.fullmatch(text):
        refuse(
            field,
            "a trailing `:weight` on the whole prompt is A1111's composable-diffusion weight, which is not "
            "supported here; write `(text:weight)` for emphasis",
        )
    editing = prompt_editing(text)
    if editing is not None:
        refuse(field, f"prompt editing and alternation ({shown(editing)}) are not supported here")


def prompt_editing(text: str) -> str | None:
    """The first `[...]` that A1111 reads as prompt editing (`[a:b:0.5]`, `[a:3]`) or alternation (`[a|b]`),
    or None. Nested brackets are looked into; escaped ones are text."""
    # Each open bracket: (its character, where it opened, its own top-level text with nested groups
    # replaced by a placeholder, whether a `|` sits at its top level).
    stack: list[tuple[str, int, list[str], bool]] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            if stack:
                stack[-1][2].append("x")
            position += 2
            continue
        if char in "([":
            stack.append((char, position, [], False))
        elif char in ")]" and stack and stack[-1][0] == ("(" if char == ")" else "["):
            opener, start, content, has_pipe = stack.pop()
            inner = "".join(content)
            if opener == "[" and (has_pipe or RE_WHEN.search(inner)):
                return text[start : position + 1]
            if stack:
                stack[-1][2].append("x")
        elif stack:
            opener, start, content, has_pipe = stack[-1]
            content.append(char)
            if char == "|" and opener == "[":
                stack[-1] = (opener, start, content, True)
        position += 1
    return None


def refuse(field: str, description: str) -> NoReturn:
    raise malformed((field,), description, kind=ProblemKind.NOT_ALLOWED)
