"""benchmarks/topic_specificity.py: which paragraphs it takes, whose adapter each is answered with,
and how it splits the cosines and the lift."""
import sys
from pathlib import Path

import pytest

from conftest import random_adapter, tiny_model
from hyperprag.adapter import content_hash
from hyperprag.data import Passage, QAExample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from topic_specificity import choose, cosines, losses, summarise, swaps, table, versus  # noqa: E402


def _questions() -> list[QAExample]:
    """Articles A (3 paragraphs), B (2), C (3); paragraph A1 is not held out."""
    out = []
    for art, n in (("A", 3), ("B", 2), ("C", 3)):
        for p in range(n):
            para = Passage(art, f"article {art} paragraph {p}")
            out += [QAExample(f"{art}{p}q{q}", f"q{q}?", ["x"], [para]) for q in range(3)]
    return out


def test_choose_takes_held_out_paragraphs_of_full_articles_in_file_order():
    exs = _questions()
    held = {content_hash(ex.passages[0].text) for ex in exs if not ex.id.startswith("A1")}
    chosen = choose(exs, held, articles=2, paragraphs=2, questions=2)
    assert [[p.text for p, _ in art] for art in chosen] == [
        ["article A paragraph 0", "article A paragraph 2"], ["article B paragraph 0", "article B paragraph 1"]]
    assert [ex.id for ex in chosen[0][1][1]] == ["A2q0", "A2q1"]
    with pytest.raises(SystemExit, match="only 1 articles"):
        choose(exs, held, articles=3, paragraphs=3, questions=1)  # only C: B has 2, A 2 held out


def test_swaps_stay_in_or_leave_the_article_and_never_give_the_own_adapter():
    plan = swaps(3, 4)
    for (a, p), (sa, sp) in plan["same_article"].items():
        assert sa == a and sp != p
    for (a, p), (sa, sp) in plan["other_article"].items():
        assert sa != a
    assert all(k == v for k, v in plan["own"].items())


def test_cosines_split_pairs_by_article():
    model = tiny_model()
    x, y = random_adapter(model, 1), random_adapter(model, 2)
    c = cosines([[x, x], [y, y]])  # each article one adapter twice, unrelated random ones across
    assert c["within_article"] == pytest.approx(1.0)
    assert abs(c["across_articles"]) < 0.1


def test_summarise_reports_lift_and_the_share_each_swap_loses():
    none = {"q1": 3.0, "q2": 3.0}
    rows = {"own": {"q1": 1.0, "q2": 1.0}, "same_article": {"q1": 2.0, "q2": 2.0},
            "other_article": {"q1": 3.0, "q2": 3.0}}
    r = summarise(none, rows)
    assert r["lift"]["own"][0] == pytest.approx(2.0)
    assert r["share_lost"] == pytest.approx({"same_article": 0.5, "other_article": 1.0})
    assert r["own_minus"]["other_article"][0] == pytest.approx(2.0)
    assert r["questions_own_below_none"] == 2


def test_share_lost_is_undefined_when_the_own_adapter_lifts_nothing():
    none = {"q1": 1.0}
    rows = {"own": {"q1": 2.0}, "same_article": {"q1": 5.0}, "other_article": {"q1": 5.0}}
    r = summarise(none, rows)
    assert r["share_lost"] == {"same_article": None, "other_article": None}
    assert r["own_minus"]["same_article"][0] == pytest.approx(3.0)


def test_versus_pairs_the_specific_parts_of_two_encoders_question_by_question():
    none = {"q1": 4.0, "q2": 4.0}
    gen = summarise(none, {"own": {"q1": 1.0, "q2": 2.0}, "same_article": {"q1": 3.0, "q2": 3.0},
                           "other_article": {"q1": 4.0, "q2": 4.0}})
    exact = summarise(none, {"own": {"q1": 2.0, "q2": 2.0}, "same_article": {"q1": 2.5, "q2": 2.5},
                             "other_article": {"q1": 2.0, "q2": 2.0}})
    v = versus(gen, exact)
    # gen loses (2, 1) to the same-article swap, exact (0.5, 0.5): 1.0 more on average
    assert v["same_article"][0] == pytest.approx(1.0)
    assert v["other_article"][0] == pytest.approx(2.5)  # (3, 2) against (0, 0)
    for r in (gen, exact):
        r["cosine"] = {"within_article": 0.0, "across_articles": 0.0}
    gen["versus"] = {"exact": v}
    assert "| exact | +1.000 [" in table({"gen": gen, "exact": exact})


def test_losses_answer_each_question_with_the_swapped_adapter_and_the_paragraph_in_context(tokenizer):
    model = tiny_model()
    exs = _questions()
    chosen = choose(exs, {content_hash(ex.passages[0].text) for ex in exs}, articles=2, paragraphs=2, questions=1)
    x, y = random_adapter(model, 1), random_adapter(model, 2)
    rows = losses(model, tokenizer, chosen, [[x, x], [y, y]])  # one adapter per article
    assert rows["same_article"] == pytest.approx(rows["own"])  # a same-article swap changes nothing
    assert all(rows["other_article"][i] != pytest.approx(rows["own"][i]) for i in rows["own"])
    none = losses(model, tokenizer, chosen, None)["none"]
    in_context = losses(model, tokenizer, chosen, None, in_context=True)["in_context"]
    assert set(none) == set(in_context) == set(rows["own"])
    assert all(in_context[i] != pytest.approx(none[i]) for i in none)


@pytest.mark.parametrize("option", ["--articles", "--paragraphs"])
def test_one_article_or_paragraph_is_refused_before_anything_loads(tmp_path, option):
    """With one, the swap to another article (or paragraph) would give back the own adapter."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "topic_specificity.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "--out", str(tmp_path / "o"), option, "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"{option}: must be at least 2, got 1" in proc.stderr
