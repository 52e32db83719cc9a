import json
from pathlib import Path

import pytest

from conftest import tiny_model, tiny_model_dir
from hyperprag.cli import main
from hyperprag.data import Passage, QAExample
from hyperprag.evaluate import evaluate, retrieve_all

EXAMPLES = [
    QAExample("a", "What does the library hold?", ["Amberlin Codex"],
              [Passage("L", "The library holds the Amberlin Codex."), Passage("R", "A rowing race.")]),
    QAExample("b", "Which race is on the lake?", ["Glass Regatta"],
              [Passage("R", "The Glass Regatta is a race on the lake."), Passage("L", "A library.")]),
    QAExample("c", "Who?", ["nobody"], [Passage("X", "Nothing here.")]),
]


@pytest.mark.parametrize("mode", ["closed", "rag"])
def test_evaluate_runs_and_scores_every_question(mode, tokenizer):
    model = tiny_model("llama")
    retrieved = retrieve_all(EXAMPLES, top_k=1)
    result = evaluate(model, tokenizer, EXAMPLES, mode, retrieved, batch_size=2, max_new_tokens=4,
                      progress=False)
    assert result["mode"] == mode and result["n"] == 3
    assert [r["id"] for r in result["predictions"]] == ["a", "b", "c"]
    assert [r["passages"] for r in result["predictions"]] == [["L"], ["R"], ["X"]]
    assert 0.0 <= result["em"] <= result["f1"] <= 1.0
    assert all(r["seconds"] > 0 for r in result["predictions"])


@pytest.mark.parametrize("mode", ["closed", "rag"])
def test_only_in_context_modes_put_the_retrieved_passages_in_the_prompt_and_scores_are_exact(mode, tokenizer,
                                                                                           monkeypatch):
    import hyperprag.evaluate as ev

    prompts = []

    def answer(model, tokenizer, batch, max_new_tokens):  # the first right, the second in part
        prompts.extend(batch)
        return [{"What does the library hold?": "Amberlin Codex", "Which race is on the lake?": "Glass"}.get(
            p.rsplit("Question: ", 1)[1].split("\n")[0], "") for p in batch]

    monkeypatch.setattr(ev, "generate_answers", answer)
    result = evaluate(tiny_model("llama"), tokenizer, EXAMPLES, mode, retrieve_all(EXAMPLES, top_k=1),
                      batch_size=2, progress=False)
    assert len(prompts) == 3
    in_prompt = ["[1] L: The library holds the Amberlin Codex." in prompts[0],
                 "[1] R: The Glass Regatta is a race on the lake." in prompts[1], "[1] X: Nothing here." in prompts[2]]
    assert in_prompt == [mode == "rag"] * 3
    assert [r["em"] for r in result["predictions"]] == [1.0, 0.0, 0.0]
    # "Glass" against "Glass Regatta": precision 1, recall 1/2, F1 2/3
    assert result["em"] == pytest.approx(1 / 3) and result["f1"] == pytest.approx((1 + 2 / 3) / 3)


def test_summarize_means_each_score_overall_and_by_type():
    from hyperprag.evaluate import summarize

    records = [{"em": 1.0, "f1": 1.0, "seconds": 1.0, "type": "bridge"},
               {"em": 0.0, "f1": 0.5, "seconds": 3.0, "type": "bridge"},
               {"em": 0.0, "f1": 0.2, "seconds": 2.0, "type": "comparison"}]
    out = summarize(records)
    assert (out["n"], out["em"], out["f1"], out["seconds_per_question"]) == (3, pytest.approx(1 / 3),
                                                                             pytest.approx(1.7 / 3), 2.0)
    assert out["by_type"] == {"bridge": {"n": 2, "em": 0.5, "f1": 0.75},
                              "comparison": {"n": 1, "em": 0.0, "f1": 0.2}}
    assert "by_type" not in summarize([{"em": 1.0, "f1": 1.0, "seconds": 1.0, "type": None}])


def test_batched_generation_equals_one_by_one(tokenizer):
    from hyperprag.generation import generate_completions

    model = tiny_model("llama")
    prompts = ["Question: short?\nAnswer:", "Question: a much longer question here?\nAnswer:"]
    batched = generate_completions(model, tokenizer, prompts, max_new_tokens=5)
    single = [generate_completions(model, tokenizer, [p], max_new_tokens=5)[0] for p in prompts]
    assert batched == single


def test_unknown_mode_is_refused(tokenizer):
    with pytest.raises(ValueError, match="unknown mode 'nope'"):
        evaluate(tiny_model(), tokenizer, EXAMPLES, "nope", [[]] * 3, progress=False)


def test_cli_bad_data_prints_one_line_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answers": ["a"]}\n{oops\n')
    assert main(["eval", "--data", str(path), "--mode", "closed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{path}:2: invalid JSON" in err


def test_cli_requires_corpus_when_questions_have_no_passages(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "q", "answers": ["a"], "passages": []}) + "\n")
    assert main(["eval", "--data", str(path), "--mode", "rag"]) == 2
    assert "pass --corpus" in capsys.readouterr().err


def _tiny_model_and_questions(tmp_path, tokenizer):
    """A tiny GPT-2 saved as a model directory, and EXAMPLES as a question file."""
    model_dir = tmp_path / "tiny"
    tiny_model("gpt2").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(json.dumps({"id": e.id, "question": e.question, "answers": e.answers,
                                          "passages": [{"title": p.title, "text": p.text} for p in e.passages]})
                              for e in EXAMPLES))
    return model_dir, data


def test_cli_eval_writes_result_json(tmp_path, tokenizer, capsys):
    model_dir, data = _tiny_model_and_questions(tmp_path, tokenizer)
    out = tmp_path / "res.json"
    rc = main(["eval", "--data", str(data), "--mode", "rag", "--model", str(model_dir), "--limit", "2",
               "--max-new-tokens", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("EM=") and last.endswith("n=2")
    result = json.loads(out.read_text())
    assert result["mode"] == "rag" and result["n"] == 2 and len(result["predictions"]) == 2
    assert {"em", "f1", "seconds_per_question", "config"} <= result.keys()
    # --skip leaves out the first questions (a validation slice past the benchmark's)
    assert main(["eval", "--data", str(data), "--mode", "closed", "--model", str(model_dir), "--skip", "1",
                 "--limit", "1", "--max-new-tokens", "3", "--out", str(out), "--quiet"]) == 0
    assert [r["id"] for r in json.loads(out.read_text())["predictions"]] == [EXAMPLES[1].id]


def test_cli_eval_refuses_an_out_directory_before_any_work(tmp_path, capsys):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "q", "answers": ["a"], "passages": []}) + "\n")
    # no model at --model: the refusal must come before it would be loaded
    assert main(["eval", "--data", str(data), "--mode", "closed", "--model", str(tmp_path / "none"),
                 "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a directory" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert main(["eval", "--data", str(data), "--mode", "closed", "--model", str(tmp_path / "none"),
                 "--out", str(tmp_path / "notes.txt" / "r.json")]) == 2
    assert capsys.readouterr().err.strip() == (f"hyperprag: error: {tmp_path / 'notes.txt'} is a file, where a "
                                               f"folder is needed (check --out and --store)")
    # bench's hyper modes with a --checkpoint that is not one: named as the flag given
    data.write_text(json.dumps({"question": "q", "answers": ["a"], "passages": [{"title": "T", "text": "a"}]}))
    assert main(["bench", "--data", str(data), "--modes", "closed", "hyper", "--checkpoint", str(tmp_path / "nock"),
                 "--model", str(tmp_path / "none"), "--out", str(tmp_path / "b")]) == 2
    assert f"--checkpoint {tmp_path / 'nock'} is not a hypernetwork checkpoint" in capsys.readouterr().err


def test_cli_closed_book_needs_no_passages_nor_corpus(tmp_path, tokenizer, capsys):
    model_dir = tmp_path / "tiny"
    tiny_model("gpt2").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "Who rows the Glass Regatta?", "answers": ["Ennisar crews"],
                                "passages": []}) + "\n")
    assert main(["eval", "--data", str(data), "--mode", "closed", "--model", str(model_dir),
                 "--max-new-tokens", "2", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("n=1")


def test_cli_eval_resumes_after_a_kill_without_answering_twice(tmp_path, tokenizer, monkeypatch):
    import hyperprag.bench as bench

    model_dir, data = _tiny_model_and_questions(tmp_path, tokenizer)
    out = tmp_path / "res.json"
    args = ["eval", "--data", str(data), "--mode", "rag", "--model", str(model_dir), "--batch-size", "1",
            "--max-new-tokens", "3", "--out", str(out), "--quiet"]
    answered, real = [], bench.evaluate

    def dies_on_the_second_batch(*a, **kw):
        if len(answered) == 1:
            raise KeyboardInterrupt
        answered.append(a[2][0].id)
        return real(*a, **kw)

    monkeypatch.setattr(bench, "evaluate", dies_on_the_second_batch)
    assert main(args) == 130 and not out.exists()
    assert answered == [EXAMPLES[0].id] and len(list(tmp_path.glob("res.json.answers-*.jsonl"))) == 1
    monkeypatch.setattr(bench, "evaluate", lambda *a, **kw: (answered.append(a[2][0].id), real(*a, **kw))[1])
    assert main(args) == 0
    assert answered == [e.id for e in EXAMPLES]  # the first question was not answered again
    result = json.loads(out.read_text())
    assert [p["id"] for p in result["predictions"]] == [e.id for e in EXAMPLES] and result["n"] == len(EXAMPLES)
    assert not list(tmp_path.glob("res.json.answers-*.jsonl"))


def test_cli_help_explains_options(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--corpus", "--mode", "--top-k", "--limit", "--out"):
        assert option in text


def _write_questions(path):
    path.write_text("\n".join(json.dumps({"id": e.id, "question": e.question, "answers": e.answers,
                                          "passages": [{"title": p.title, "text": p.text} for p in e.passages]})
                              for e in EXAMPLES))


@pytest.mark.parametrize("mode", ["prag", "prag-combine"])
def test_cli_parametric_modes_encode_on_demand_then_reuse_the_store(tmp_path, tokenizer, capsys, monkeypatch, mode):
    from hyperprag.store import AdapterStore

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir(tmp_path, tokenizer)
    data = tmp_path / "q.jsonl"
    _write_questions(data)
    args = ["eval", "--data", str(data), "--mode", mode, "--model", str(model_dir), "--top-k", "1",
            "--max-new-tokens", "3", "--store", str(tmp_path / "store"), "--quiet", "--n-qa", "1"]
    assert main(args + ["--out", str(tmp_path / "r.json")]) == 0
    store = AdapterStore(tmp_path / "store")
    assert len(store.records()) == 3  # one passage retrieved per question, all distinct
    mtimes = {r.file: (tmp_path / "store" / r.file).stat().st_mtime_ns for r in store.records()}
    assert main(args) == 0
    assert {r.file: (tmp_path / "store" / r.file).stat().st_mtime_ns for r in store.records()} == mtimes
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["mode"] == mode and result["n"] == 3
    assert -1.0 <= result["adapter_mean_cosine"] <= 1.0
    assert main(args + ["--wrong-doc"]) == 0


def test_cli_adapter_cosine_counts_each_passage_once(tmp_path, tokenizer, capsys, monkeypatch):
    """Questions sharing a passage (SQuAD has ~5 a paragraph) must not add pairs at cosine 1."""
    from hyperprag.diagnostics import mean_pairwise_cosine
    from hyperprag.store import AdapterStore

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir(tmp_path, tokenizer)
    data = tmp_path / "q.jsonl"
    _write_questions(data)
    first = json.loads(data.read_text().splitlines()[0])
    data.write_text(data.read_text() + "\n" + json.dumps(first | {"id": "again"}))
    args = ["eval", "--data", str(data), "--mode", "prag", "--model", str(model_dir), "--top-k", "1",
            "--max-new-tokens", "3", "--store", str(tmp_path / "store"), "--quiet", "--n-qa", "1",
            "--out", str(tmp_path / "r.json")]
    assert main(args) == 0
    assert "(first 3 distinct adapters)" in capsys.readouterr().out
    store = AdapterStore(tmp_path / "store")
    stored = [store.get(r.doc_hash, r.encoder, r.base_model) for r in store.records()]
    cosine = json.loads((tmp_path / "r.json").read_text())["adapter_mean_cosine"]
    assert cosine == pytest.approx(mean_pairwise_cosine(stored), abs=1e-6)


def test_cli_encode_fills_store_and_skips_done(tmp_path, tokenizer, capsys, monkeypatch):
    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir(tmp_path, tokenizer)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"p{i}", "title": f"T{i}", "text": f"Fact number {i}."})
                                for i in range(3)))
    args = ["encode", "--docs", str(corpus), "--model", str(model_dir), "--store", str(tmp_path / "s"),
            "--quiet", "--n-qa", "1"]
    assert main(args + ["--limit", "2"]) == 0
    assert "stored=2" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stored=3" in out and "augmentation_failed=3" in out  # a random model writes no valid QA
    assert main(args + ["--limit", "1"]) == 0  # the summary counts this run's documents, not the store's
    assert "stored=1 augmentation_failed=1" in capsys.readouterr().out


def test_cli_augment_caches_every_passage_but_the_evaluated_questions_and_resumes(tmp_path, tokenizer, capsys,
                                                                                  monkeypatch):
    from hyperprag.adapter import content_hash
    from hyperprag.augment import read_cached

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir(tmp_path, tokenizer)
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps({"id": ex.id, "question": ex.question, "answers": ex.answers,
                                               "passages": [{"title": p.title, "text": p.text} for p in ex.passages]})
                                   for ex in EXAMPLES))
    args = ["augment", "--docs", str(questions), "--skip-first", "1", "--model", str(model_dir), "--quiet",
            "--n-qa", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # Question a's two passages are left out; b's two and c's one are augmented (a random model writes no QA).
    assert "passages=3 complete=0" in out
    cache = Path(out.split("cache=")[1].strip())
    aug = read_cached(cache, content_hash("The Glass Regatta is a race on the lake."))
    assert aug is not None and aug.failed
    assert read_cached(cache, content_hash("The library holds the Amberlin Codex.")) is None
    stamp = {f.name: f.stat().st_mtime_ns for f in cache.iterdir()}
    assert main(args) == 0 and {f.name: f.stat().st_mtime_ns for f in cache.iterdir()} == stamp  # all cached


def test_cli_encode_non_utf8_file_is_one_clear_line(tmp_path, capsys):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"id": "a", "title": "t", "text": "ok"}\n{"id": "b", "title": "t", "text": "caf\xe9"}\n')
    assert main(["encode", "--docs", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hyperprag: error: {path}:2: not valid UTF-8 (byte 38)"


def test_cli_encode_and_augment_with_no_passages_stop_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import hyperprag.models

    monkeypatch.setattr(hyperprag.models, "load_base_model", lambda *a, **k: pytest.fail("loaded a model"))
    questions = tmp_path / "q.jsonl"  # questions for a corpus: they carry no passages
    questions.write_text(json.dumps({"id": "a", "question": "Who?", "answers": ["x"], "passages": []}))
    assert main(["encode", "--docs", str(questions)]) == 2
    assert capsys.readouterr().err.strip() == (f"hyperprag: error: {questions}: no passages to encode "
                                               f"(its questions carry none: give a corpus file)")
    with_passage = tmp_path / "p.jsonl"
    with_passage.write_text(json.dumps({"id": "a", "question": "Who?", "answers": ["x"],
                                        "passages": [{"title": "T", "text": "x did it."}]}))
    assert main(["augment", "--docs", str(with_passage), "--skip-first", "1"]) == 2
    assert capsys.readouterr().err.strip() == (f"hyperprag: error: {with_passage}: no passages to augment "
                                               f"once the first 1 questions' are left out")
    assert main(["encode", "--docs", str(with_passage), "--store", str(questions)]) == 2  # a file as the store
    assert capsys.readouterr().err.strip() == (f"hyperprag: error: {questions} is a file, where a folder is needed "
                                               f"(check --out and --store)")


@pytest.mark.parametrize("mode", ["hyper", "hyper-combine"])
def test_cli_hyper_modes_with_a_checkpoint(tmp_path, tokenizer, monkeypatch, mode):
    from hyperprag.embeddings import HiddenStateEmbedding
    from hyperprag.hyper_encoder import HyperEncoder
    from hyperprag.models import load_base_model
    from hyperprag.store import AdapterStore

    model_dir = tiny_model_dir(tmp_path, tokenizer)
    model, tok = load_base_model(str(model_dir))
    HyperEncoder.create(model, HiddenStateEmbedding(model, tok), hidden=16).save_pretrained(tmp_path / "ckpt")
    data = tmp_path / "q.jsonl"
    _write_questions(data)
    assert main(["eval", "--data", str(data), "--mode", mode, "--model", str(model_dir), "--top-k", "2",
                 "--max-new-tokens", "3", "--store", str(tmp_path / "store"), "--checkpoint",
                 str(tmp_path / "ckpt"), "--quiet", "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 3
    records = AdapterStore(tmp_path / "store").records()
    assert len(records) == 5 and all(r.encoder.startswith("hyper-v1-") for r in records)


def _answer_as_the_injected_adapter_says(monkeypatch, clock=None):
    """evaluate with inject and generation faked: each row answers what its injected adapter (a
    string here) holds, so an answer is right only with its own question's adapter. Generating
    takes one second a question on ``clock``."""
    from contextlib import contextmanager

    import hyperprag.evaluate as ev

    seen = {"rows": [], "prompts": []}

    @contextmanager
    def inject(model, rows):
        seen["rows"].append(rows)
        yield

    def answer(model, tokenizer, prompts, max_new_tokens):
        seen["prompts"].extend(prompts)
        if clock is not None:
            clock[0] += len(prompts)
        rows = seen["rows"][-1]
        return list(rows) if rows is not None else [""] * len(prompts)

    monkeypatch.setattr(ev, "inject", inject)
    monkeypatch.setattr(ev, "generate_answers", answer)
    return seen


@pytest.mark.parametrize("mode", ["prag", "prag-combine"])
def test_parametric_modes_answer_each_question_with_its_own_adapter(mode, monkeypatch):
    seen = _answer_as_the_injected_adapter_says(monkeypatch)
    # the second question's gold answer is its second alias: any alias counts
    examples = [QAExample(e.id, e.question, answers, e.passages)
                for e, answers in zip(EXAMPLES, [["Amberlin Codex"], ["the Lake", "Glass Regatta"], ["nobody"]])]
    result = evaluate(None, None, examples, mode, retrieve_all(examples, top_k=1), batch_size=2, progress=False,
                      adapters=["Amberlin Codex", "Glass Regatta", "nobody"])
    assert seen["rows"] == [["Amberlin Codex", "Glass Regatta"], ["nobody"]]
    assert [r["em"] for r in result["predictions"]] == [1.0, 1.0, 1.0] and result["f1"] == 1.0
    assert all(("[1] " in p) == (mode == "prag-combine") for p in seen["prompts"])


def test_seconds_per_question_divide_each_batch_by_its_own_questions(monkeypatch):
    import hyperprag.evaluate as ev

    clock = [0.0]
    _answer_as_the_injected_adapter_says(monkeypatch, clock)
    monkeypatch.setattr(ev, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    result = evaluate(None, None, EXAMPLES, "closed", retrieve_all(EXAMPLES, top_k=1), batch_size=2, progress=False)
    # one second a question, the last batch holding one question of two
    assert [r["seconds"] for r in result["predictions"]] == [1.0, 1.0, 1.0] and result["seconds_per_question"] == 1.0
