"""SQuAD-style answer scoring: exact match and token F1, the best over every gold alias; and a
paired bootstrap to tell two systems' scores on the same questions apart, and one for the shares the
bar is stated in."""
from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (the official SQuAD v1.1 script)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        # Both empty is a match; one empty is a miss. The official script agrees.
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_em_f1(prediction: str, golds: Iterable[str]) -> tuple[float, float]:
    """EM and F1 of one prediction, each maximised over the gold aliases independently."""
    golds = list(golds)
    if not golds:
        raise ValueError("a question needs at least one gold answer to be scored")
    # an alias with nothing left after normalisation (SQuAD has "." for one question) would give an
    # empty or all-article prediction full marks; it counts only when no alias has content
    golds = [g for g in golds if normalize_answer(g)] or golds
    return (max(exact_match(prediction, g) for g in golds), max(token_f1(prediction, g) for g in golds))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired questions, with a 95% percentile bootstrap interval: on 100
    questions a gap of a few answers is often noise, and pairing removes the questions' own spread."""
    if len(a) != len(b) or not a:
        raise ValueError("need the same questions, at least one, in both")
    diffs = [x - y for x, y in zip(a, b)]
    rng, n = random.Random(seed), len(diffs)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    return sum(diffs) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def bootstrap_share(part: Sequence[float], whole: Sequence[float], resamples: int = 10_000,
                    seed: int = 0) -> tuple[float, float, float]:
    """``mean(part) / mean(whole)`` over paired questions, with a 95% percentile bootstrap interval
    (questions resampled jointly; resamples whose ``whole`` sums to zero are dropped).

    The bar's figures are such ratios (the share of the closed-book to in-context gap a mode
    closes, the share of its lift another document's adapter loses), and on 50-100 questions their
    denominators are noisy too, so a share alone says far less than it seems to."""
    if len(part) != len(whole) or not part:
        raise ValueError("need the same questions, at least one, in both")
    rng, n = random.Random(seed), len(part)
    # F1 differences that cancel leave a sum of about 1e-16, not 0: dividing by it gives a share of
    # 1e15. A mean below 1e-9 (as in ``specificity``) is no gap.
    tiny = 1e-9 * n
    if abs(sum(whole)) <= tiny:
        return float("nan"), float("nan"), float("nan")
    shares = []
    for _ in range(resamples):
        idx = rng.choices(range(n), k=n)
        w = sum(whole[i] for i in idx)
        if abs(w) > tiny:
            shares.append(sum(part[i] for i in idx) / w)
    shares.sort()
    k = len(shares)
    return sum(part) / sum(whole), shares[int(0.025 * k)], shares[int(0.975 * k) - 1]
