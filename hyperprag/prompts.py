"""Completion prompts for a *base* (non-chat) model and extraction of the answer it writes.

A base model continues text, so the prompt ends in ``Answer:`` after one fictional worked example
that shows the short-answer format; the answer is the rest of that line.
"""
from __future__ import annotations

from collections.abc import Sequence

from .data import Passage

INSTRUCTION = "Answer the question with a short answer, a few words at most."
# One fictional example fixes the output format without leaking real-world knowledge.
EXAMPLE_PASSAGE = Passage(
    title="Velmora Lighthouse",
    text="The Velmora Lighthouse was built in 1872 by the engineer Orla Fenwick on the cliffs of Dunmere.",
)
EXAMPLE_QUESTION = "Who built the Velmora Lighthouse?"
EXAMPLE_ANSWER = "Orla Fenwick"


def format_passages(passages: Sequence[Passage]) -> str:
    return "\n".join(f"[{i}] {p.title}: {p.text}" if p.title else f"[{i}] {p.text}"
                     for i, p in enumerate(passages, 1))


def build_prompt(question: str, passages: Sequence[Passage] = ()) -> str:
    """The prompt for one question, with the passages as context when given (rag) or none (closed)."""
    if passages:
        example = (f"Context:\n{format_passages([EXAMPLE_PASSAGE])}\n"
                   f"Question: {EXAMPLE_QUESTION}\nAnswer: {EXAMPLE_ANSWER}\n\n")
        query = f"Context:\n{format_passages(passages)}\nQuestion: {question.strip()}\nAnswer:"
    else:
        example = f"Question: {EXAMPLE_QUESTION}\nAnswer: {EXAMPLE_ANSWER}\n\n"
        query = f"Question: {question.strip()}\nAnswer:"
    return f"{INSTRUCTION}\n\n{example}{query}"


def extract_answer(completion: str) -> str:
    """The answer is the first non-empty line of the completion, whole.

    It is never cut at a comma: "August 25, 1963" is one answer. Only a trailing full stop and
    wrapping quotes are trimmed, since a base model often closes its sentence.
    """
    for line in completion.split("\n"):
        line = line.strip()
        if line:
            break
    else:
        return ""
    for marker in ("Question:", "Context:"):  # the model started the next example on the same line
        if marker in line:
            line = line.split(marker, 1)[0].strip()
    line = line.strip().strip('"').strip()
    if line.endswith(".") and not line[-2:-1].isupper():  # keep "Washington D.C."
        line = line[:-1].rstrip()
    return line
