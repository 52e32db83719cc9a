"""`hyperprag bench` end to end on a tiny model: every figure and file is there, all modes share the
questions and passages, and a killed run resumes without redoing finished work."""
import json
from pathlib import Path

import pytest

from conftest import tiny_model_dir
from hyperprag import bench as bench_mod
from hyperprag.cli import MODES, main
from hyperprag.data import load_questions

FACTS = [("Amberlin Codex", "Which book does the Velmora library hold?", "The Velmora library holds the Amberlin Codex."),
         ("Glass Regatta", "Which race is rowed on Lake Quenby?", "The Glass Regatta is rowed on Lake Quenby."),
         ("Tollick", "Who founded the town of Brisk?", "The town of Brisk was founded by Tollick."),
         ("cobalt", "What colour is the Harrowgate flag?", "The Harrowgate flag is cobalt with a white star.")]


def _write(path, typed: bool):
    lines = []
    for i, (ans, q, text) in enumerate(FACTS):
        row = {"id": f"{path.stem}{i}", "question": q, "answers": [ans],
               "passages": [{"title": f"T{i}", "text": text}, {"title": "filler", "text": f"Filler text {i}."}]}
        if typed:
            row["type"] = "bridge" if i % 2 else "comparison"
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def setup(tmp_path, tokenizer, monkeypatch):
    from hyperprag.embeddings import HiddenStateEmbedding
    from hyperprag.hyper_encoder import HyperEncoder
    from hyperprag.models import load_base_model

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir(tmp_path, tokenizer)
    model, tok = load_base_model(str(model_dir))
    HyperEncoder.create(model, HiddenStateEmbedding(model, tok), hidden=16).save_pretrained(tmp_path / "ckpt")
    a, b = _write(tmp_path / "alpha.jsonl", typed=False), _write(tmp_path / "beta.jsonl", typed=True)
    args = ["bench", "--data", str(a), str(b), "--out", str(tmp_path / "out"), "--model", str(model_dir),
            "--store", str(tmp_path / "store"), "--checkpoint", str(tmp_path / "ckpt"), "--top-k", "1",
            "--batch-size", "2", "--max-new-tokens", "3", "--n-qa", "1", "--cost-docs", "1", "--repeats", "1",
            "--latency-queries", "2", "--throughput-queries", "2", "--quiet"]
    return tmp_path, args


def test_bench_writes_every_figure_report_and_plots(setup, capsys):
    tmp_path, args = setup
    assert main(args) == 0
    out = tmp_path / "out"
    def refuse(constant):
        raise AssertionError(f"results.json holds a bare {constant}, which is not JSON")

    res = json.loads((out / "results.json").read_text(), parse_constant=refuse)
    assert res["command"].startswith("hyperprag bench --data") and res["versions"]["torch"]
    assert set(res["datasets"]) == {"alpha", "beta"}
    assert res["merge"] == {"exact": "sum", "hyper": "mean"}  # each encoder's own, as --merge was not given
    for name, ds in res["datasets"].items():
        assert list(ds["modes"]) == list(MODES)
        assert all(ds["modes"][m]["n"] == 4 and 0 <= ds["modes"][m]["f1"] <= 1 for m in MODES)
        assert set(ds["wrong_document"]) == {"prag", "hyper", "prag-combine", "hyper-combine"}
        assert ds["wrong_document"]["hyper-combine"]["baseline"] == "rag"
        assert ds["wrong_document"]["hyper"]["baseline"] == "closed"
        # every share the bar is stated in comes with its interval (null where the tiny model shows no gap)
        assert set(ds["intervals"]["gap_share"]) == {"prag", "hyper"} and len(ds["intervals"]["hyper_minus_prag"]) == 3
        for est, lo, hi in [*ds["intervals"]["gap_share"].values(), ds["intervals"]["hyper_minus_prag"]]:
            assert est is None or lo <= est <= hi
        assert all(len(w["share_of_lift_lost_interval"]) == 2 and len(w["lift_interval"]) == 2
                   for w in ds["wrong_document"].values())
        assert len(ds["intervals"]["gap"]) == 3
        wrong = ds["predictions"]["hyper-wrongdoc"]  # the ablation's answers are kept like every mode's
        assert len(wrong) == 4 and sum(p["f1"] for p in wrong) / 4 == pytest.approx(ds["wrong_document"]["hyper"]["f1"])
        for enc in ("exact", "hyper"):
            matrix = ds["similarity"][enc]["matrix"]
            assert len(matrix) == 4 and all(abs(matrix[i][i] - 1) < 1e-3 for i in range(4))
            assert ds["similarity"][enc]["distinct_titles"] == 4  # T0-T3
        # the same passages for every mode, question by question
        answers = {m: [json.loads(line)["passages"] for line in next((out / "work").glob(f"answers-{name}-{m}-*.jsonl"))
                       .read_text().splitlines()] for m in MODES}
        assert all(answers[m] == answers["closed"] for m in MODES)
    assert "by_type" not in res["datasets"]["alpha"]["modes"]["rag"]
    assert set(res["datasets"]["beta"]["modes"]["rag"]["by_type"]) == {"bridge", "comparison"}
    cost = res["cost_seconds_per_doc"]
    assert cost["exact"]["augment"] > 0 and cost["exact"]["train"] > 0 and cost["hyper"]["batch64"] > 0
    assert cost["exact_over_hyper"]["batch1"] > 0
    assert set(res["latency_seconds"]) >= set(MODES) | {"hyper+encode", "ratio_to_rag"}
    assert set(res["throughput_q_per_s"]["ratio_to_plain"]) == {"per_row_exact", "per_row_hyper"}
    assert res["bytes_per_doc"]["exact"] > 0 and res["bytes_per_doc"]["hyper"] > 0
    report = (out / "report.md").read_text()
    for m in MODES:
        assert f"| {m} |" in report
    assert "merge exact `sum`, hyper `mean`" in report
    assert "(first 4 passages, 4 distinct titles" in report
    assert res["datasets"]["alpha"]["n_titles"] == 4 and "distinct retrieved passages from 4 titles." in report  # top-1
    assert "## Cost of parameterising a document" in report and "Wrong-document ablation" in report
    assert "share of lift lost [95% interval]" in report and "hyper - prag, paired 95% interval [" in report
    for png in ("f1_per_mode.png", "f1_vs_cost.png", "similarity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report
    assert "report:" in capsys.readouterr().out


def test_killed_bench_resumes_and_a_rerun_redoes_nothing(setup, monkeypatch):
    tmp_path, args = setup
    real = bench_mod.evaluate
    calls = []

    def counting(*a, **kw):
        calls.append(a[3])  # the mode
        if kill_after[0] is not None and len(calls) > kill_after[0]:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(bench_mod, "evaluate", counting)
    kill_after = [5]  # the third mode's first batch is cut short
    assert main(args) == 130
    done_before = len(calls) - 1
    kill_after[0] = None
    calls.clear()
    # a line cut by the kill must not break the resume
    work = tmp_path / "out" / "work"
    next(work.glob("answers-alpha-closed-*.jsonl")).open("a").write('{"id": "cut')
    # and so must a line cut inside a character of two bytes
    cut = '{"id": "Z\u00fcrich"'.encode()
    next(work.glob("answers-alpha-rag-*.jsonl")).open("ab").write(cut[:cut.index(b"\xc3") + 1])
    assert main(args) == 0
    # 2 files x (6 modes + 4 wrong-document runs) x 2 batches in all; the finished ones are not redone
    assert len(calls) == 2 * 10 * 2 - done_before
    first = (tmp_path / "out" / "results.json").read_text()
    store_files = sorted(p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*.safetensors"))
    calls.clear()
    assert main(args) == 0
    assert calls == []
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*.safetensors")) == store_files
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["datasets"] == json.loads(first)["datasets"]
    assert again["cost_seconds_per_doc"] == json.loads(first)["cost_seconds_per_doc"]


def test_bench_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["bench", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hyperprag: error:") and "missing.jsonl" in err[0]
    a = _write(tmp_path / "a.jsonl", typed=False)
    assert main(["bench", "--data", str(a), "--out", str(tmp_path / "o"), "--limit", "1", "2"]) == 2
    assert "one per --data file (1), not 2" in capsys.readouterr().err
    # Refused before any model loads (there is none at --model):
    nothing = ["--out", str(tmp_path / "o"), "--model", str(tmp_path / "no-model")]
    assert main(["bench", "--data", str(a), "--skip", str(len(FACTS))] + nothing) == 2
    assert f"has {len(FACTS)} questions: --skip {len(FACTS)} leaves none" in capsys.readouterr().err
    assert main(["eval", "--data", str(a), "--mode", "rag", "--wrong-doc"] + nothing[2:]) == 2
    assert "--wrong-doc only applies to the parametric modes" in capsys.readouterr().err
    gone = str(tmp_path / "gone")
    for argv in (["eval", "--data", str(a), "--mode", "hyper"], ["encode", "--docs", str(a), "--encoder", "hyper"],
                 ["demo"]):
        assert main(argv + ["--checkpoint", gone] + nothing[2:]) == 2
        assert f"--checkpoint {gone} is not a hypernetwork checkpoint" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["bench", "--data", str(a), "--out", str(tmp_path / "file"), *nothing[2:]]) == 2
    assert f"--out {tmp_path / 'file'} is a file" in capsys.readouterr().err
    for flag, value, message in [("--top-k", "0", "must be at least 1, got 0"),
                                 ("--latency-queries", "-1", "must be at least 0, got -1"),
                                 ("--batch-size", "two", "expected an integer, got 'two'"),
                                 ("--lr", "-1", "must be a positive number, got -1"),
                                 ("--alpha", "nan", "must be a positive number, got nan")]:
        with pytest.raises(SystemExit):
            main(["bench", "--data", str(a), flag, value] + nothing)
        assert f"argument {flag}: {message}" in capsys.readouterr().err


def test_bench_limit_per_file(setup):
    tmp_path, args = setup
    i = args.index("--out")
    args = args[:i] + ["--limit", "3", "2", "--modes", "closed", "rag"] + args[i:]
    assert main(args) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [d["n_questions"] for d in res["datasets"].values()] == [3, 2]
    n = len(load_questions(args[args.index("--data") + 1]))
    assert main(args + ["--skip", str(n - 2), "--out", str(tmp_path / "val"),  # past n - 2, 2 remain
                        "--latency-queries", "0", "--throughput-queries", "0"]) == 0  # 0 skips the timing
    res = json.loads((tmp_path / "val" / "results.json").read_text())
    assert [d["n_questions"] for d in res["datasets"].values()] == [2, 2]
    assert res["latency_seconds"] == {} and res["throughput_q_per_s"] == {}
    assert "cost_seconds_per_doc" in res and list(res["datasets"]["alpha"]["modes"]) == ["closed", "rag"]


def test_version_flag(capsys):
    import hyperprag

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"hyperprag {hyperprag.__version__}"


def test_bench_with_one_question_skips_the_wrong_document_ablation(setup):
    """One question, so one merged adapter (of its top-2 passages): there is no other question's
    adapter to swap in, so the ablation is left out instead of stopping the run before results.json
    is written."""
    tmp_path, args = setup
    i = args.index("--data")
    args = args[:i + 2] + args[i + 3:]  # alpha only
    args += ["--limit", "1", "--top-k", "2", "--modes", "closed", "hyper", "--cost-docs", "0", "--latency-queries", "0",
             "--throughput-queries", "0", "--similarity-docs", "0", "--out", str(tmp_path / "one")]
    assert main(args) == 0
    ds = json.loads((tmp_path / "one" / "results.json").read_text())["datasets"]["alpha"]
    assert ds["modes"]["hyper"]["n"] == 1 and not ds.get("wrong_document")


def test_demo_checks_the_hypernetwork_before_training_exact_adapters(tmp_path, tokenizer, monkeypatch, capsys):
    """The shipped checkpoint is Gemma's: on another model the demo says so and skips the hyper modes
    before the minutes of exact training; an explicit --checkpoint that does not fit stops it."""
    import hyperprag.cli as cli

    monkeypatch.setenv("HYPERPRAG_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir(tmp_path, tokenizer)
    trained = []

    def no_training(args, retrieved, encoder):
        trained.append(encoder.name)
        raise KeyboardInterrupt  # stop the demo at its first encoding

    monkeypatch.setattr(cli, "_adapters", no_training)
    assert main(["demo", "--model", str(model_dir), "--quiet"]) == 130
    assert "shipped hypernetwork does not fit this model" in capsys.readouterr().out and trained == ["exact"]
    trained.clear()
    gemma = Path(__file__).resolve().parents[1] / "checkpoints" / "gemma-3-270m-token-seq-r128-tied-aug"
    assert main(["demo", "--model", str(model_dir), "--checkpoint", str(gemma), "--quiet"]) == 2
    assert "trained for base model 'gemma-3-270m'" in capsys.readouterr().err and trained == []


def test_training_overlap_counts_every_training_file_list(tmp_path):
    from hyperprag.adapter import content_hash
    from hyperprag.bench import Dataset, training_overlap
    from hyperprag.data import load_questions

    def dataset(path):
        examples = load_questions(path)
        return Dataset(path.stem, str(path), examples, [ex.passages[:1] for ex in examples])

    squad, hotpot, other = (_write(tmp_path / f"{n}.jsonl", typed=False) for n in ("squad", "hotpot", "other"))
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    assert training_overlap(run / "final", dataset(squad)) is None  # nothing says what it trained on
    (run / "training_config.yaml").write_text(
        "data: [../shared/data/squad.jsonl]\nretrieved: [../shared/data/hotpot.jsonl]\nskip_first_questions: 1\n")
    held = [content_hash(FACTS[0][2]), content_hash(FACTS[1][2])]
    (run / "heldout_hashes.json").write_text(json.dumps(held))
    # an older run keeps both files beside final/; the held-aside paragraphs of a data file are safe
    assert training_overlap(run / "final", dataset(squad)) == len(FACTS) - 2
    # a retrieved file's passages past its first question may have been trained on (not only the
    # data files, as before session 25)
    assert training_overlap(run / "final", dataset(hotpot)) == len(FACTS) - 1
    assert training_overlap(run / "final", dataset(other)) == 0


def test_report_states_the_bar_shares_with_their_intervals():
    """The figures of a real run (SQuAD, v8): a share without its interval claims more than 100 questions show."""
    from hyperprag.report import verdicts

    modes = {"closed": {"f1": 0.083}, "rag": {"f1": 0.359}, "prag": {"f1": 0.133}, "hyper": {"f1": 0.177}}
    ds = {"modes": modes, "intervals": {"gap_share": {"hyper": [0.34, 0.12, 0.58]}, "hyper_minus_prag": [0.044, -0.01, 0.1]},
          "wrong_document": {"hyper": {"f1": 0.063, "baseline": "closed", "lift": 0.094, "share_of_lift_lost": 1.21,
                                       "share_of_lift_lost_interval": [0.82, 1.9]}}}
    lines = verdicts({"datasets": {"squad": ds}})
    assert "squad: `hyper` closes 34% [12%, 58%] of the closed->rag F1 gap" in lines[1]
    assert lines[0].startswith("squad: `prag` closes 18% of")  # no interval recorded: none printed
    assert "hyper - prag, paired 95% interval [-0.010, +0.100]" in lines[2]
    assert "share of its lift lost 1.21 [0.82, 1.90]" in lines[3] and "1.0 = all of it" in lines[3]
    # HotpotQA's 50 questions: a gap and a lift whose intervals reach zero measure no share, and
    # none is printed beside the caveat (session 28's report printed both)
    ds["intervals"]["gap"] = [0.096, -0.01, 0.2]
    ds["wrong_document"]["hyper"]["lift_interval"] = [-0.05, 0.12]
    lines = verdicts({"datasets": {"squad": ds}})
    assert lines[0] == ("squad: the closed->rag gap itself is not clearly above zero on these questions "
                        "(+0.096 [-0.010, +0.200]), so no share of it is measured here.")
    assert lines[2] == "squad: `hyper` scores F1 0.177 (closed 0.083, rag 0.359)."
    assert lines[-1] == ("squad: with another document's adapters `hyper` scores F1 0.063; the share of its lift "
                         "lost is not measured: its lift over closed is not clearly above zero (+0.094 [-0.050, +0.120]).")
    assert not any("closes" in line or "lift lost 1.21" in line for line in lines)
    # a share interval with NaN ends (a resample without a gap) prints no interval, not 'nan%'
    ds["intervals"] = {"gap_share": {"hyper": [0.34, float("nan"), 0.5]}}
    ds["wrong_document"]["hyper"]["lift_interval"] = [0.01, 0.12]
    lines = verdicts({"datasets": {"squad": ds}})
    assert not any("nan" in line for line in lines)
    ds["intervals"] = {"gap_share": {"hyper": [0.34, None, 0.5]}}  # as results.json writes it
    lines = verdicts({"datasets": {"squad": ds}})
    assert not any("nan" in line or "None" in line for line in lines)
    # equal F1 is a match, not falling short by 0.000
    modes["prag"]["f1"] = 0.177
    assert "generated adapters match trained ones (hyper" in verdicts({"datasets": {"squad": ds}})[2]


def test_report_table_leaves_an_unmeasured_share_out(tmp_path):
    """The committed v8 test-slice run: HotpotQA's lift interval reaches zero, SQuAD's does not."""
    from hyperprag.report import write_report

    results = json.loads((Path(__file__).parents[1] / "benchmarks/bar_intervals/test/results.json").read_text())
    text = write_report(results, tmp_path, {}).read_text()
    assert "| hyper | 0.160 | 0.064 | +0.033 (closed) | not measured (lift [-0.044, +0.118]) |" in text
    assert "| hyper | 0.177 | 0.063 | +0.095 (closed) | 1.20 [0.69, 2.98] |" in text


def test_hypernetwork_cost_feeds_embeddings_to_the_hypernetworks_device():
    # Embedding sources return CPU tensors; on a GPU the timed forward pass must move them there.
    from test_hyper import DOCS, HashSource
    from conftest import tiny_model
    from hyperprag.hyper_encoder import HyperEncoder

    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=32)
    enc.hypernet.to("meta")  # a device other than the embeddings' CPU
    enc.encode = lambda docs: None  # its own device handling is tested in test_hyper
    assert set(bench_mod.hyper_cost(enc, DOCS, repeats=1)) == {"batch1", "batch64", "embed64", "hypernet64"}


def test_a_corrected_gold_answer_or_question_is_answered_and_scored_anew(setup):
    tmp_path, args = setup
    args = args + ["--modes", "closed"]
    assert main(args) == 0

    def closed(qid):
        preds = json.loads((tmp_path / "out" / "results.json").read_text())["datasets"]["alpha"]["predictions"]
        return next(p for p in preds["closed"] if p["id"] == qid)

    first = closed("alpha0")
    assert first["f1"] < 1.0
    rows = [json.loads(line) for line in (tmp_path / "alpha.jsonl").read_text().splitlines()]
    rows[0]["answers"] = [first["prediction"]]  # the same id, its gold answer corrected
    (tmp_path / "alpha.jsonl").write_text("\n".join(map(json.dumps, rows)))
    assert main(args) == 0
    assert closed("alpha0")["f1"] == 1.0


def test_closed_book_alone_needs_no_passages(setup):
    tmp_path, args = setup
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(json.dumps({"id": f"b{i}", "question": q, "answers": [a]})
                              for i, (a, q, _) in enumerate(FACTS)))
    data = args.index("--data")
    args = args[:data + 1] + [str(bare)] + args[data + 3:] + ["--modes", "closed"]
    assert main(args) == 0
    preds = json.loads((tmp_path / "out" / "results.json").read_text())["datasets"]["bare"]["predictions"]
    assert len(preds["closed"]) == len(FACTS)
    assert main(args[:-1] + ["rag"]) == 2  # rag still needs them: one clear error


def test_a_rerun_on_more_questions_measures_latency_and_throughput_anew(setup):
    tmp_path, args = setup
    args = args + ["--modes", "closed", "rag", "--throughput-queries", "4"]
    limit = ["--limit", "2"]
    assert main(args + limit) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["throughput_q_per_s"]["batch"] == 2
    limit[1] = "4"  # the timing questions are now the first four, not the first two
    assert main(args + limit) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["throughput_q_per_s"]["batch"] == 4


def test_adapter_bytes_count_only_this_base_models_adapters(setup):
    import dataclasses

    from hyperprag.store import AdapterStore

    tmp_path, args = setup
    args = args + ["--modes", "closed", "hyper"]
    assert main(args) == 0
    before = json.loads((tmp_path / "out" / "results.json").read_text())["bytes_per_doc"]
    store = AdapterStore(tmp_path / "store")
    for rec in store.records():  # the same documents and encoder, another (larger) base model
        ad = store.get(rec.doc_hash, rec.encoder, rec.base_model)
        big = {n: (a.repeat(1, 8), b.repeat(8, 1)) for n, (a, b) in ad.factors.items()}
        store.put(dataclasses.replace(ad, factors=big, base_model="another-model"), rec.encoder)
    assert main(args) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["bytes_per_doc"] == before


def test_kept_answers_are_scored_again_when_read_back(tmp_path):
    """An answer file written before a fix to the metric (here: '.' as a gold alias once gave an
    empty prediction full marks) must not carry its old score into a resumed run."""
    from hyperprag.bench import BenchSettings, Dataset, answer_all
    from hyperprag.data import QAExample

    ex = [QAExample(id="q0", question="Q?", answers=["Kelmash", "."], passages=[]),
          QAExample(id="q1", question="R?", answers=["Lake Ennisar"], passages=[])]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"id": e.id, "question": e.question, "answers": e.answers,
                                        "prediction": p, "em": 1.0, "f1": 1.0}) + "\n"
                            for e, p in zip(ex, ["", "Ennisar"])))
    records = answer_all(None, None, Dataset("d", "d.jsonl", ex, [[], []]), "closed", None, path,
                         BenchSettings(progress=False), "closed")
    assert [(r["em"], r["f1"]) for r in records] == [(0.0, 0.0), (0.0, pytest.approx(2 / 3))]
    assert [json.loads(line)["f1"] for line in path.read_text().splitlines()] == [0.0, pytest.approx(2 / 3)]


def test_exact_cost_is_timed_on_what_encode_trains_on(tokenizer, monkeypatch):
    """encode cuts a passage at max_doc_tokens before augmenting and training; the cost must be
    timed on the same cut passage, not on the whole of a long one."""
    from conftest import tiny_model
    from hyperprag.augment import Augmentation, Augmenter
    from hyperprag.bench import BenchSettings, encoder_cost
    from hyperprag.data import Passage
    from hyperprag.exact import ExactEncoder, LoraTrainConfig

    seen = []
    monkeypatch.setattr(Augmenter, "augment", lambda self, docs, progress=False:
                        seen.append(docs[0].text) or [Augmentation("h")])
    monkeypatch.setattr(ExactEncoder, "train", lambda self, sequences: None)
    model = tiny_model()
    enc = ExactEncoder(model, tokenizer, LoraTrainConfig(max_doc_tokens=8))
    long_doc = Passage("T", " ".join(f"word{i}" for i in range(200)))
    encoder_cost(model, tokenizer, {"exact": enc}, [long_doc], BenchSettings(cost_docs=1, progress=False))
    assert seen == [enc._truncate(long_doc)[0].text] and len(seen[0]) < len(long_doc.text)


def _fake_bench(tmp_path, monkeypatch, f1, encoder_keys=("exact-key", "hyper-key"), passage="Passage {}.",
                cost=lambda *a: {}, **settings):
    """run_bench with every answer faked: ``f1`` gives each mode's per-question F1 (``MODE-wrongdoc``
    the ablation's), so every figure can be checked against sums done by hand. Returns the results
    and, per answer_all call, the mode, whether it was the ablation, the adapters and the file."""
    from types import SimpleNamespace

    from hyperprag.bench import BenchSettings, Dataset
    from hyperprag.data import Passage, QAExample

    n = len(f1["closed"])
    examples = [QAExample(f"q{i}", f"Question {i}?", [f"a{i}"], []) for i in range(n)]
    ds = Dataset("d", "d.jsonl", examples, [[Passage(f"T{i}", passage.format(i))] for i in range(n)])
    encoders = {name: SimpleNamespace(key=key, merge=merge, base_model="tiny")
                for name, key, merge in zip(("exact", "hyper"), encoder_keys, ("sum", "mean"))}
    calls = []

    def merged(retrieved, store, enc, method, progress):
        return [SimpleNamespace(doc_hash=f"{enc.key}/{method}/{i}", extra={}) for i in range(len(retrieved))]

    def answer_all(model, tokenizer, ds, mode, adapters, path, settings, label):
        wrong = "wrong document" in label
        calls.append({"mode": mode, "wrong": wrong, "adapters": adapters, "path": path.name})
        return [{"id": ex.id, "prediction": "p", "answers": ex.answers, "em": float(s == 1), "f1": s,
                 "seconds": 0.1, "type": None} for ex, s in zip(ds.examples, f1[mode + "-wrongdoc" * wrong])]

    monkeypatch.setattr(bench_mod, "merged_adapters", merged)
    monkeypatch.setattr(bench_mod, "answer_all", answer_all)
    monkeypatch.setattr(bench_mod, "encoder_cost", cost)
    monkeypatch.setattr("hyperprag.plots.write_plots", lambda results, out: {})
    store = SimpleNamespace(records=lambda: [SimpleNamespace(bytes=100, encoder=e.key, base_model="tiny")
                                             for e in encoders.values()])
    s = BenchSettings(progress=False, cost_docs=0, latency_queries=0, throughput_queries=0, similarity_docs=0,
                      **settings)
    res = bench_mod.run_bench(SimpleNamespace(hyperprag_model_id="tiny"), None, [ds], encoders, store,
                              tmp_path / "out", s)
    return res, calls


def _plus(xs, d):
    return [x + d for x in xs]


CLOSED, RAG = [0.0, 0.0, 0.5, 0.0], [0.6, 0.6, 0.8, 0.4]  # rag - closed: 0.475 on average, above 0 on each
FAKE_F1 = {"closed": CLOSED, "rag": RAG, "prag": _plus(CLOSED, 0.15), "hyper": _plus(CLOSED, 0.3),
           "prag-combine": _plus(RAG, 0.1), "hyper-combine": _plus(RAG, 0.2),
           "prag-wrongdoc": CLOSED, "hyper-wrongdoc": _plus(CLOSED, 0.075),
           "prag-combine-wrongdoc": _plus(RAG, 0.1), "hyper-combine-wrongdoc": _plus(RAG, 0.05)}


def test_bench_figures_are_the_shares_and_lifts_of_the_right_answers(tmp_path, monkeypatch):
    """Each figure the bar is stated in, from answers whose F1 is set by hand: the gap is rag over
    closed, a share is of that gap, a -combine mode's lift is over rag, and the ablation answers
    with other questions' adapters of the mode's own encoder."""
    approx = pytest.approx
    res, calls = _fake_bench(tmp_path, monkeypatch, FAKE_F1)
    ds = res["datasets"]["d"]
    assert {m: r["f1"] for m, r in ds["modes"].items()} == approx({m: sum(v) / 4 for m, v in FAKE_F1.items()
                                                                   if "wrongdoc" not in m})
    iv = ds["intervals"]
    assert iv["gap"][0] == approx(0.475) and 0 < iv["gap"][1] <= iv["gap"][0] <= iv["gap"][2]
    assert iv["gap_share"]["hyper"][0] == approx(0.3 / 0.475) and iv["gap_share"]["prag"][0] == approx(0.15 / 0.475)
    assert iv["hyper_minus_prag"] == approx([0.15, 0.15, 0.15])  # the same difference on every question
    wd = ds["wrong_document"]
    for mode, baseline, lift, lost in [("hyper", "closed", 0.3, 0.75), ("prag", "closed", 0.15, 1.0),
                                       ("hyper-combine", "rag", 0.2, 0.75), ("prag-combine", "rag", 0.1, 0.0)]:
        w = wd[mode]
        assert w["baseline"] == baseline and w["lift"] == approx(lift) and w["share_of_lift_lost"] == approx(lost, abs=1e-9)
        assert w["lift_interval"] == approx([lift, lift]) and w["share_of_lift_lost_interval"] == approx([lost, lost], abs=1e-9)
        assert w["f1"] == approx(sum(FAKE_F1[f"{mode}-wrongdoc"]) / 4)
    # every mode got its own encoder's adapters, question by question; the ablation another question's
    own = {c["mode"]: c["adapters"] for c in calls if not c["wrong"]}
    assert own["closed"] is None and own["rag"] is None
    for mode in ("prag", "prag-combine", "hyper", "hyper-combine"):
        key = "hyper-key" if mode.startswith("hyper") else "exact-key"
        assert [a.doc_hash for a in own[mode]] == [f"{key}/{'mean' if key == 'hyper-key' else 'sum'}/{i}" for i in range(4)]
        [wrong] = [c["adapters"] for c in calls if c["wrong"] and c["mode"] == mode]
        assert all(w.doc_hash.startswith(key) and w is not o for w, o in zip(wrong, own[mode]))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "d: `hyper` closes 63% [" in report
    assert "| hyper-combine | 0.800 | 0.650 | +0.200 (rag) | 0.75 [0.75, 0.75] |" in report


def test_bench_answers_are_redone_when_what_they_depend_on_changes(tmp_path, monkeypatch):
    """An answer file is named by everything its answers depend on: other new tokens, another
    encoder or another merge are answered anew; what they do not touch is kept."""
    def paths(**kw):
        _, calls = _fake_bench(tmp_path, monkeypatch, FAKE_F1, **kw)
        return {(c["mode"], c["wrong"]): c["path"] for c in calls}

    base = paths()
    assert len(set(base.values())) == len(base) == 10
    tokens = paths(max_new_tokens=5)
    assert all(tokens[k] != base[k] for k in base)
    hyper_changed = {k for k, v in paths(encoder_keys=("exact-key", "hyper-key-2")).items() if v != base[k]}
    assert hyper_changed == {(m, w) for m in ("hyper", "hyper-combine") for w in (False, True)}
    merge_changed = {k for k, v in paths(merge="sum").items() if v != base[k]}  # exact merges by sum already
    assert merge_changed == hyper_changed


def test_answer_all_resumes_with_each_later_questions_own_adapter(tmp_path, monkeypatch):
    from hyperprag.bench import BenchSettings, Dataset, answer_all
    from hyperprag.data import QAExample

    ex = [QAExample(f"q{i}", f"Q{i}?", [f"a{i}"], []) for i in range(5)]
    path = tmp_path / "answers.jsonl"  # the first batch was answered before a kill
    path.write_text("".join(json.dumps({"id": e.id, "answers": e.answers, "prediction": e.answers[0]}) + "\n"
                            for e in ex[:2]))
    seen = []

    def evaluate(model, tokenizer, examples, mode, retrieved, bs, max_new_tokens, progress, adapters):
        seen.append(([e.id for e in examples], adapters))
        return {"predictions": [{"id": e.id, "answers": e.answers, "prediction": a, "em": 0.0, "f1": 0.0}
                                for e, a in zip(examples, adapters)]}

    monkeypatch.setattr(bench_mod, "evaluate", evaluate)
    records = answer_all(None, None, Dataset("d", "d.jsonl", ex, [[] for _ in ex]), "prag",
                         [f"adapter{i}" for i in range(5)], path, BenchSettings(batch_size=2, progress=False), "prag")
    assert seen == [(["q2", "q3"], ["adapter2", "adapter3"]), (["q4"], ["adapter4"])]
    assert [r["id"] for r in records] == [e.id for e in ex]


def test_similarity_counts_the_titles_of_the_passages_it_compares():
    from types import SimpleNamespace

    from conftest import random_adapter, tiny_model
    from hyperprag.bench import Dataset
    from hyperprag.data import Passage, QAExample

    model = tiny_model()
    ps = [Passage("T0", "First."), Passage("T0", "Second."), Passage("T1", "Third.")]
    ds = Dataset("d", "d.jsonl", [QAExample("q", "Q?", ["a"], [])], [ps])
    store = SimpleNamespace(get_or_encode=lambda docs, enc, progress: [random_adapter(model, seed=i, doc=d.text)
                                                                       for i, d in enumerate(docs)])
    sim = bench_mod._similarity(ds, {"hyper": object()}, store, 2)["hyper"]
    assert len(sim["matrix"]) == 2 and sim["distinct_titles"] == 1  # T1's passage is not among the first two


class _Clock:
    """time as bench sees it: it advances only when a fake says the work took so long."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_latency_and_throughput_are_per_query_figures_the_right_way_up(monkeypatch):
    from contextlib import contextmanager
    from types import SimpleNamespace

    from hyperprag.bench import BenchSettings, Dataset, batch_throughput, query_latency
    from hyperprag.data import Passage, QAExample
    from hyperprag.evaluate import get_mode

    clock, injected = _Clock(), []
    monkeypatch.setattr(bench_mod, "time", clock)

    @contextmanager
    def inject(model, adapters):
        injected.append(adapters)
        yield

    def generate(model, tokenizer, prompts, max_new_tokens, stop):
        # 1 s a query; twice as long with an adapter, three times with passages in the prompt
        clock.now += len(prompts) * (2.0 if injected[-1] is not None else 1.0) * (3.0 if "Context:" in prompts[0] else 1.0)
        return [""] * len(prompts)

    def encode(ps):
        clock.now += 5.0
        return ps

    monkeypatch.setattr(bench_mod, "inject", inject)
    monkeypatch.setattr(bench_mod, "generate_completions", generate)
    monkeypatch.setattr(bench_mod, "merge_adapters", lambda ads, method: "merged on the fly")
    ex = [QAExample(f"q{i}", f"Q{i}?", ["a"], []) for i in range(4)]
    ds = Dataset("d", "d.jsonl", ex, [[Passage("T", f"P{i}.")] for i in range(4)])
    merged = {"hyper": [f"h{i}" for i in range(4)]}
    settings = BenchSettings(repeats=1, latency_queries=2, throughput_queries=4, progress=False)
    lat = query_latency(None, None, ds, merged, {"hyper": SimpleNamespace(encode=encode)},
                        [get_mode(m) for m in ("closed", "rag", "hyper")], "mean", settings)
    ratio = lat.pop("ratio_to_rag")
    assert lat == pytest.approx({"closed": 1.0, "rag": 3.0, "hyper": 2.0, "hyper+encode": 7.0})
    assert ratio == pytest.approx({"closed": 1 / 3, "hyper": 2 / 3, "hyper+encode": 7 / 3})
    assert injected == [None, None, "h0", "merged on the fly", None, None, "h1", "merged on the fly"]
    thr = batch_throughput(None, None, ds, merged, settings)
    assert thr.pop("ratio_to_plain") == pytest.approx({"per_row_hyper": 0.5})
    assert thr == pytest.approx({"plain": 1.0, "per_row_hyper": 0.5, "batch": 4})


def test_hyper_cost_is_seconds_per_document(monkeypatch):
    from types import SimpleNamespace

    import torch

    from hyperprag.data import Passage

    clock = _Clock()
    monkeypatch.setattr(bench_mod, "time", clock)

    def advance(seconds, value=None):
        clock.now += seconds
        return value

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, emb):
            return advance(0.5 * len(emb))

    hyper = SimpleNamespace(hypernet=Net(), encode=lambda docs: advance(1.0 * len(docs)),
                            source=SimpleNamespace(embed=lambda texts: advance(0.25 * len(texts), torch.zeros(len(texts), 1))))
    docs = [Passage("T", f"Document {i}.") for i in range(3)]
    assert bench_mod.hyper_cost(hyper, docs, repeats=2) == pytest.approx(
        {"batch1": 1.0, "batch64": 1.0, "embed64": 0.25, "hypernet64": 0.5})


def test_exact_over_hyper_is_how_many_times_cheaper_generating_is(tokenizer, monkeypatch):
    from conftest import tiny_model
    from hyperprag.augment import Augmentation, Augmenter
    from hyperprag.bench import BenchSettings, encoder_cost
    from hyperprag.data import Passage
    from hyperprag.exact import ExactEncoder, LoraTrainConfig

    clock = _Clock()
    monkeypatch.setattr(bench_mod, "time", clock)

    def augment(self, docs, progress=False):
        clock.now += 3.0
        return [Augmentation("h")]

    def train(self, sequences):
        clock.now += 5.0

    monkeypatch.setattr(Augmenter, "augment", augment)
    monkeypatch.setattr(ExactEncoder, "train", train)
    monkeypatch.setattr(bench_mod, "hyper_cost", lambda hyper, docs, repeats: {"batch1": 0.04, "batch64": 0.002})
    model = tiny_model()
    enc = ExactEncoder(model, tokenizer, LoraTrainConfig())
    out = encoder_cost(model, tokenizer, {"exact": enc, "hyper": object()}, [Passage("T", "A short fact.")],
                       BenchSettings(cost_docs=1, progress=False))
    assert out["exact"] == pytest.approx({"augment": 3.0, "train": 5.0, "total": 8.0, "n_docs": 1})
    assert out["exact_over_hyper"] == pytest.approx({"batch1": 200.0, "batch64": 4000.0})


def test_report_puts_each_figure_in_its_column(tmp_path):
    from hyperprag.report import write_report

    modes = {m: {"n": 2, "em": em, "f1": f1, "seconds_per_question": 0.5}
             for m, em, f1 in [("closed", 0.1, 0.2), ("rag", 0.3, 0.6), ("prag", 0.15, 0.3), ("hyper", 0.2, 0.4)]}
    wrong = {"f1": 0.25, "baseline": "closed", "lift": 0.2, "share_of_lift_lost": 0.75,
             "share_of_lift_lost_interval": [0.5, 1.0], "lift_interval": [0.0, 0.4]}
    results = {"versions": {k: "x" for k in ("hyperprag", "git_commit", "torch", "transformers", "peft", "python",
                                               "machine")},
               "base_model": "tiny", "encoders": {"hyper": "hyper-key"}, "merge": {"hyper": "mean"},
               "settings": {"batch_size": 2, "max_new_tokens": 3}, "options": {}, "timing_dataset": "d",
               "datasets": {"d": {"path": "d.jsonl", "n_questions": 2, "n_passages": 2, "n_titles": 2,
                                  "modes": modes, "wrong_document": {"hyper": wrong}}},
               "cost_seconds_per_doc": {"exact_over_hyper": {"batch1": 200.0, "batch64": 3000.0}},
               "latency_seconds": {"closed": 0.1, "rag": 0.2, "ratio_to_rag": {"closed": 0.5}},
               "throughput_q_per_s": {"batch": 2, "plain": 10.0, "per_row_hyper": 5.0,
                                      "ratio_to_plain": {"per_row_hyper": 0.5}}}
    text = write_report(results, tmp_path, {}).read_text()
    assert "| hyper | 0.400 (0.20) |" in text  # the headline: F1 (EM)
    assert "| hyper | 0.200 | 0.400 | 0.50 |" in text  # EM | F1 | s/question
    assert "d: generated adapters beat trained ones by 0.100 F1 (hyper 0.400 vs prag 0.300)." in text
    assert "200x cheaper than training one at batch 1 and 3,000x at batch 64" in text
    # a lift interval that starts at zero is a lift not clearly above zero: no share of it is printed
    assert "| hyper | 0.400 | 0.250 | +0.200 (closed) | not measured (lift [+0.000, +0.400]) |" in text
    assert "| closed | 0.100 | 0.50 |" in text and "| per_row_hyper | 5.00 | 0.50 |" in text


def test_distinct_passages_are_told_apart_by_their_text_not_their_title():
    """Wikipedia passages share their article's title: each is still its own document to count,
    time and compare."""
    from hyperprag.bench import Dataset
    from hyperprag.data import Passage, QAExample

    ex = [QAExample(f"q{i}", f"Q{i}?", ["a"], []) for i in range(2)]
    ds = Dataset("d", "d.jsonl", ex, [[Passage("T", "One."), Passage("T", "Two.")], [Passage("T", "One.")]])
    assert [p.text for p in ds.passages] == ["One.", "Two."]


def test_the_cost_is_measured_again_for_another_timed_passage_when_no_exact_cost_is_asked(tmp_path, monkeypatch):
    """With --cost-docs 0 the hyper encoder is still timed on the first passage; its cost was kept
    under a name that left that passage out, so a rerun on other data reused the old figure."""
    timed = []

    def cost(model, tokenizer, encoders, passages, settings):
        timed.append(passages[0].text)
        return {}

    for text in ("Passage {}.", "Passage {}.", "Another passage {}."):
        _fake_bench(tmp_path, monkeypatch, FAKE_F1, passage=text, cost=cost)
    assert timed == ["Passage 0.", "Another passage 0."]
