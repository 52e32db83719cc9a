import pytest

from hyperprag.data import Passage, QAExample
from hyperprag.retrieval import build_index, retrieve

PASSAGES = [
    Passage("Glass Regatta", "The Glass Regatta is a rowing race on Lake Ennisar.", "p1"),
    Passage("Zentari cuisine", "Kelmash is a stew of smoked barley and plum.", "p2"),
    Passage("Brindlewood Library", "The library holds the Amberlin Codex.", "p3"),
    Passage("Quillon Bay", "An observatory on the island of Marrowick.", "p4"),
]


def test_bm25_ranks_the_matching_passage_first():
    index = build_index(PASSAGES)
    assert index.search("Which stew is made of smoked barley?", 1)[0].id == "p2"
    assert [p.id for p in index.search("rowing race lake", 2)][0] == "p1"


def test_k_larger_than_corpus_returns_all():
    assert len(build_index(PASSAGES).search("codex", 10)) == 4


def test_retrieve_uses_own_candidates_without_corpus():
    ex = QAExample("q", "What does the library hold?", ["Amberlin Codex"], passages=PASSAGES)
    assert retrieve(ex, k=1)[0].id == "p3"
    assert len(retrieve(ex, k=3)) == 3
    # k covering every candidate returns them all, still best first
    assert [p.id for p in retrieve(ex, k=10)][0] == "p3" and len(retrieve(ex, k=10)) == 4


def test_dense_index_with_packaged_embedder():
    from hyperprag.embedder import load_embedder

    index = build_index(PASSAGES, "dense", load_embedder())
    assert index.search("an astronomy building on an island", 1)[0].id == "p4"


def test_a_text_listed_twice_is_retrieved_once():
    # HotpotQA lists a few texts under two titles: retrieved twice, they would be prompted and merged twice
    twin = Passage("Amberlin Codex (book)", PASSAGES[2].text, "p3b")
    ex = QAExample("q", "What does the library hold?", ["Amberlin Codex"], passages=[*PASSAGES, twin])
    assert [p.id for p in retrieve(ex, k=10)].count("p3b") == 0 and len(retrieve(ex, k=10)) == 4
    assert [p.id for p in build_index([*PASSAGES, twin]).search("library codex", 10)].count("p3") == 1
    only = QAExample("q", "What does the library hold?", ["Amberlin Codex"], passages=[PASSAGES[2], twin])
    assert [p.id for p in retrieve(only, k=3)] == ["p3"]


class RecordingEmbedder:
    """Bag-of-words vectors over a fixed vocabulary, recording every text it embeds and whether it
    was asked for a progress bar."""

    def __init__(self):
        self.seen, self.bars = [], []

    def encode(self, texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False):
        import numpy as np

        self.seen += texts
        self.bars.append(show_progress_bar)
        vocab = ["regatta", "stew", "codex", "observatory", "island", "library"]
        v = np.array([[float(w in t.lower()) for w in vocab] + [1e-3] for t in texts])
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_corpus_index_is_searched_even_when_the_question_has_its_own_passages():
    corpus = build_index([Passage("Codex", "The Amberlin Codex is kept in the library.", "c1"), *PASSAGES[:2]])
    ex = QAExample("q", "Where is the Amberlin Codex kept?", ["library"], passages=PASSAGES[:2])
    assert retrieve(ex, k=1, corpus_index=corpus)[0].id == "c1"


def test_dense_retrieval_over_own_candidates_embeds_title_and_text_once_each():
    emb = RecordingEmbedder()
    twin = Passage("Observatory (again)", PASSAGES[3].text, "p4b")
    ex = QAExample("q", "Which island has the observatory?", ["Marrowick"], passages=[*PASSAGES, twin])
    assert retrieve(ex, k=1, method="dense", embedder=emb)[0].id == "p4"
    assert emb.seen[:4] == [f"{p.title}: {p.text}" for p in PASSAGES]  # the twin is not embedded
    assert len(build_index([*PASSAGES, twin], "dense", emb).passages) == 4


def test_bm25_reads_titles_drops_stopwords_and_refuses_unknown_methods():
    assert build_index(PASSAGES).search("Zentari", 1)[0].id == "p2"  # only p2's title says it
    # without stopwords, "the ... of the ... of the" outweighs the one passage about the mill
    mill = [Passage("Town", "The history of the town and of the people of the valley and the hills.", "a"),
            Passage("Mill", "Gresham owns a mill.", "b"), Passage("River", "Trout swim upstream.", "c")]
    assert build_index(mill).search("who is the owner of the mill", 1)[0].id == "b"
    with pytest.raises(ValueError, match="unknown retrieval method 'bm26'"):
        build_index(PASSAGES, "bm26")


def test_a_large_dense_index_shows_its_bar_unless_quiet():
    emb = RecordingEmbedder()
    many = [Passage(f"T{i}", f"Passage number {i}.") for i in range(300)]
    build_index(many, "dense", emb)
    build_index(many, "dense", emb, progress=False)
    build_index(PASSAGES, "dense", emb)
    assert emb.bars == [True, False, False]
