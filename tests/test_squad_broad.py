"""benchmarks/squad_broad.py: one question from every held-out paragraph no slice has used."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from squad_broad import broad_questions  # noqa: E402
from topic_specificity import choose  # noqa: E402
from hyperprag.adapter import content_hash  # noqa: E402
from hyperprag.data import Passage, QAExample, spread_questions  # noqa: E402


def test_one_question_per_unused_held_out_paragraph_in_file_order():
    # 40 articles x 5 paragraphs x 4 questions: 800 questions, so that the test slice (the first 100 by
    # 5 a paragraph), the validation slice (from question 378) and the six-article set all exist
    examples = [QAExample(f"a{a}p{p}q{q}", f"question {q}?", ["x"], [Passage(f"Article {a}", f"Article {a}, paragraph {p}.")])
                for a in range(40) for p in range(5) for q in range(4)]
    held = {content_hash(f"Article {a}, paragraph {p}.") for a in range(40) for p in range(5) if (a + p) % 2 == 0}
    held |= {content_hash(f"Article {a}, paragraph {p}.") for a in range(8, 14) for p in range(5)}  # fully held articles
    chosen = broad_questions(examples, held)
    hashes = [content_hash(ex.passages[0].text) for ex in chosen]
    assert len(hashes) == len(set(hashes)) and set(hashes) <= held
    assert all(ex.id.endswith("q0") for ex in chosen)  # each paragraph's first question
    assert [examples.index(ex) for ex in chosen] == sorted(examples.index(ex) for ex in chosen)
    used = spread_questions(examples, 100, 5) + spread_questions(examples[378:], 50, 5)
    six = {content_hash(p.text) for art in choose(examples, held, 6, 4, 3) for p, _ in art}
    assert not set(hashes) & ({content_hash(ex.passages[0].text) for ex in used} | six)
    assert len(hashes) == len(held - {content_hash(ex.passages[0].text) for ex in used} - six)
