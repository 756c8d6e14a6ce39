"""A1111's prompt syntax: its parser's documented examples, and the syntax refused rather than misread."""

from __future__ import annotations

import pytest

from sdxl_bedrock.api.a1111.prompts import parse_prompt, parse_prompt_attention, spans_of, strip_comments
from sdxl_bedrock.errors import MalformedBody
from sdxl_bedrock.schema import PromptSpan

# The doctests of A1111's modules/prompt_parser.py::parse_prompt_attention, verbatim.
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), A1111_EXAMPLES)
def test_a1111s_documented_examples(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected


def test_square_brackets_weaken_and_weights_tolerate_spaces() -> None:
    assert parse_prompt_attention("[faint] ( bold : 1.5 )") == [
        ("faint", 1 / 1.1),
        (" ", 1.0),
        (" bold ", 1.5),
    ]
    assert parse_prompt_attention("\\\\ \\[x\\]") == [("\\ [x]", 1.0)]
    assert parse_prompt_attention("") == [("", 1.0)]


def test_break_starts_a_chunk() -> None:
    parsed = parse_prompt_attention("a castle BREAK (a moat:1.2) BREAK")
    # A1111's own result: BREAK splits the text around it, empty pieces included.
    assert parsed == [
        ("a castle", 1.0),
        ("BREAK", -1.0),
        ("", 1.0),
        ("a moat", 1.2),
        ("", 1.0),
        ("BREAK", -1.0),
        ("", 1.0),
    ]
    assert spans_of(parsed) == (
        PromptSpan("a castle"),
        PromptSpan("", starts_chunk=True),
        PromptSpan("a moat", 1.2),
        PromptSpan(""),
        PromptSpan("", starts_chunk=True),
    )
    assert parse_prompt_attention("BREAKING news") == [("BREAKING news", 1.0)]


def test_a_parsed_prompt_keeps_the_words_without_the_syntax() -> None:
    parsed = parse_prompt("a (red:1.3) [old] \\(car\\)", "prompt", positive=True)
    assert parsed.text == "a red old (car)"
    assert parsed.weighted().encoding_key() == parsed.spans
    plain = parse_prompt("a red car, (unbalanced:1.0)", "prompt", positive=True)
    assert plain.weighted().encoding_key() == "a red car, unbalanced"


@pytest.mark.parametrize(
    "text",
    [
        "a [dog:cat:0.5] on grass",  # prompt editing
        "a [cat:3]",
        "[from::0.25]",
        "[(a:2):3]",
        "a [cat|dog] portrait",  # alternation
        "a cat AND a dog",  # composable diffusion
        "a cat :1.2",  # its weight on the whole prompt
        "photo, 16:9",
        "(a:1.2.3)",  # not a number
    ],
)
def test_syntax_this_server_does_not_run_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(MalformedBody) as raised:
        parse_prompt(text, "prompt", positive=True)
    assert raised.value.problem.location == ("prompt",)


@pytest.mark.parametrize("text", ["a [cat:dog] portrait", "(cat:1.2) [cat]", "\\[a:1\\]", "rock AND roll"])
def test_what_a1111_reads_as_emphasis_or_text_is_taken(text: str) -> None:
    parse_prompt(text, "negative_prompt", positive=False)
    if "AND" not in text:
        parse_prompt(text, "prompt", positive=True)


def test_the_negative_prompt_takes_and_and_a_trailing_number_literally() -> None:
    assert (
        parse_prompt("blurry AND dark, 16:9", "negative_prompt", positive=False).text
        == "blurry AND dark, 16:9"
    )
    # A1111 parses extra networks out of the prompt only: in a negative prompt a tag is text.
    assert parse_prompt("blurry <lora:x:1>", "negative_prompt", positive=False).text == "blurry <lora:x:1>"


# What A1111's modules/processing_scripts/comments.py::strip_comments makes of them: a whole-line comment and
# one after text each leave a newline; in a run of comment lines the first takes the newline before the
# second, which the second pattern then takes; there is no escape.
@pytest.mark.parametrize(
    ("prompt", "stripped"),
    [
        ("a cat", "a cat"),
        ("a cat # a note", "a cat \n"),
        ("# a note\na cat", "\na cat"),
        ("a cat\n# a note\nin a hat", "a cat\nin a hat"),
        ("#one\n#two\na cat", "\n\na cat"),
        ("a cat #1\nin a hat #2", "a cat \nin a hat \n"),
        ("a \\# cat", "a \\\n"),
        ("#", "\n"),
    ],
)
def test_comments_are_stripped_as_a1111_strips_them(prompt: str, stripped: str) -> None:
    assert strip_comments(prompt) == stripped
