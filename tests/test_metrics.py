import pytest

from hyperprag.metrics import best_em_f1, exact_match, normalize_answer, token_f1


def test_normalisation_drops_articles_punctuation_case():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"


def test_exact_match():
    assert exact_match("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match("Broncos", "Denver Broncos") == 0.0


def test_f1_partial_overlap():
    # pred: {denver}, gold: {denver, broncos}: p=1, r=0.5
    assert token_f1("Denver", "Denver Broncos") == pytest.approx(2 / 3)
    assert token_f1("Carolina", "Denver Broncos") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "x") == 0.0


def test_best_over_aliases_each_metric_independently():
    em, f1 = best_em_f1("Silver Heron", ["the Silver Heron trophy", "Silver Heron"])
    assert (em, f1) == (1.0, 1.0)
    em, f1 = best_em_f1("Heron trophy", ["Silver Heron trophy", "cup"])
    assert em == 0.0 and f1 == pytest.approx(0.8)


def test_an_alias_empty_after_normalisation_gives_no_free_marks():
    golds = ["renewal of hostilities", "."]  # as SQuAD's 5725bad5271a42140099d0c1
    for empty_or_article in ("", "The", "?"):
        assert best_em_f1(empty_or_article, golds) == (0.0, 0.0)
    assert best_em_f1("renewal of hostilities", golds) == (1.0, 1.0)
    assert best_em_f1("", ["."]) == (1.0, 1.0)  # with no alias of content, the empty one still counts


def test_no_gold_is_an_error():
    with pytest.raises(ValueError):
        best_em_f1("x", [])


def test_paired_bootstrap_interval():
    from hyperprag.metrics import paired_bootstrap

    same = [0.0, 1.0, 0.5, 0.25] * 25
    assert paired_bootstrap(same, same) == (0.0, 0.0, 0.0)
    better = [x + 0.1 for x in same]
    mean, lo, hi = paired_bootstrap(better, same)
    assert mean == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    # Ten answers of 100 right in one system only: the interval excludes 0; one of 100 does not.
    mean, lo, hi = paired_bootstrap([1.0] * 10 + [0.0] * 90, [0.0] * 100)
    assert mean == pytest.approx(0.1) and 0.03 < lo < 0.1 < hi < 0.17
    mean, lo, hi = paired_bootstrap([1.0] + [0.0] * 99, [0.0] * 100)
    assert lo == 0.0 < mean < hi
    assert paired_bootstrap([1.0, 0.0], [0.0, 1.0], seed=1) == paired_bootstrap([1.0, 0.0], [0.0, 1.0], seed=1)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_bootstrap_share_interval():
    from hyperprag.metrics import bootstrap_share

    # A mode that gains on exactly the questions rag gains on, by half as much: 50% of the gap, surely.
    whole = [1.0, 0.0, 0.5, 0.0] * 25
    assert bootstrap_share([x / 2 for x in whole], whole) == pytest.approx((0.5, 0.5, 0.5))
    # 10 of 100 questions gained where rag gains on 40: a share of 25% whose interval is wide but excludes 0 and 50%.
    share, lo, hi = bootstrap_share([1.0] * 10 + [0.0] * 90, [1.0] * 40 + [0.0] * 60)
    assert share == pytest.approx(0.25) and 0.1 < lo < 0.25 < hi < 0.45
    # Gains on questions rag does not help with still count: the share is of mean F1, not of questions.
    share, lo, hi = bootstrap_share([0.0] * 40 + [1.0] * 10 + [0.0] * 50, [1.0] * 40 + [0.0] * 60)
    assert share == pytest.approx(0.25) and lo < share < hi
    assert all(x != x for x in bootstrap_share([1.0, 0.0], [0.5, -0.5]))  # no gap: no share
    # gaps that cancel only up to rounding are no gap either: rag's F1 1/3, 1/3, 0 against closed's
    # 0, 0, 2/3 sum to 1e-16, which gave a share of -3e15
    from hyperprag.metrics import token_f1
    third = token_f1("x y z z z", "x")
    gaps = [third - 0, third - 0, 0 - 2 / 3]
    assert sum(gaps) != 0
    assert all(x != x for x in bootstrap_share([1.0, 0.0, 0.0], gaps))
    assert bootstrap_share([1.0, 0.0, 1.0], [1.0, 1.0, 0.5], seed=3) == bootstrap_share([1.0, 0.0, 1.0], [1.0, 1.0, 0.5], seed=3)
    with pytest.raises(ValueError):
        bootstrap_share([1.0], [1.0, 0.0])


def test_bootstrap_intervals_are_symmetric_under_swap_follow_the_seed_and_allow_negative_gaps():
    import random

    from hyperprag.metrics import bootstrap_share, paired_bootstrap

    rng = random.Random(3)
    a, b = [rng.random() for _ in range(60)], [rng.random() for _ in range(60)]
    m, lo, hi = paired_bootstrap(a, b, resamples=1000)
    assert paired_bootstrap(b, a, resamples=1000) == pytest.approx((-m, -hi, -lo))  # both ends by one rule
    ten = [1.0] * 10 + [0.0] * 90
    assert paired_bootstrap(ten, [0.0] * 100, seed=5) != paired_bootstrap(ten, [0.0] * 100, seed=0)
    forty = [1.0] * 40 + [0.0] * 60
    assert bootstrap_share(ten, forty, seed=5) != bootstrap_share(ten, forty, seed=0)
    # a mode that loses half of what rag loses: a share, not "no gap"
    share, lo, hi = bootstrap_share([-0.5] * 10 + [0.0] * 90, [-1.0] * 40 + [0.0] * 60)
    assert share == pytest.approx(0.125) and lo < share < hi
