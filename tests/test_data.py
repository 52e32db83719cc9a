import json

import pytest

from hyperprag.data import DataError, Passage, load_questions, passages_of, read_corpus, read_qa_jsonl


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"id": "q1", "question": "Who?", "answers": ["X", "Y"],
                   "passages": [{"title": "T", "text": "X did it."}], "type": "bridge"})


def test_reads_shared_shape(tmp_path):
    [ex] = read_qa_jsonl(_write(tmp_path, "q.jsonl", [GOOD]))
    assert ex.answers == ["X", "Y"] and ex.passages[0].title == "T" and ex.type == "bridge"


@pytest.mark.parametrize("bad, message", [
    ("{not json", "invalid JSON"),
    (json.dumps({"id": "q", "answers": ["a"]}), "missing field 'question'"),
    (json.dumps({"question": "q", "answers": []}), "'answers' must be a non-empty list"),
    (json.dumps({"question": "q", "answers": ["a"], "passages": [{"title": "t"}]}), "passage 0 has no 'text'"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"question": "q", "answers": ["a"], "doc_id": ["a"]}), "field 'doc_id' must be a string, got ['a']"),
    (json.dumps({"question": "q", "answers": ["a"], "type": 3}), "field 'type' must be a string, got 3"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, "q.jsonl", [GOOD, "", bad])
    with pytest.raises(DataError) as err:
        read_qa_jsonl(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_question_ids_are_unique_and_a_null_id_is_the_lines(tmp_path):
    """Modes and runs are paired by id: two questions under one id would be paired wrongly."""
    row = {"question": "q", "answers": ["a"]}
    path = _write(tmp_path, "q.jsonl", [json.dumps({**row, "id": None}), json.dumps({**row, "id": None})])
    assert [ex.id for ex in read_qa_jsonl(path)] == ["q-1", "q-2"]
    path = _write(tmp_path, "d.jsonl", [json.dumps({**row, "id": 7}), "", json.dumps({**row, "id": "7"})])
    with pytest.raises(DataError, match=r"d.jsonl:3: question id '7' is already used on line 1"):
        read_qa_jsonl(path)


def test_non_utf8_line_is_reported(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"q.jsonl:2: not valid UTF-8"):
        read_qa_jsonl(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_qa_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no questions"):
        read_qa_jsonl(_write(tmp_path, "e.jsonl", [""]))


def test_a_directory_given_as_data_is_one_line(tmp_path):
    with pytest.raises(DataError, match="is a directory, not a JSONL file"):
        read_qa_jsonl(tmp_path)


def test_corpus_ids_default_to_line(tmp_path):
    path = _write(tmp_path, "c.jsonl", [json.dumps({"id": "p1", "title": "A", "text": "a"}),
                                        json.dumps({"title": "B", "text": "b"})])
    ps = read_corpus(path)
    assert [p.id for p in ps] == ["p1", "c-2"]


def test_native_squad_json(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "Super_Bowl_50", "paragraphs": [
        {"context": "Denver won.", "qas": [{"id": "a", "question": "Who won?",
                                             "answers": [{"text": "Denver", "answer_start": 0}]}]}]}]}))
    [ex] = load_questions(path)
    assert ex.answers == ["Denver"] and ex.passages[0].title == "Super Bowl 50"
    assert ex.doc_id == "Super_Bowl_50#0"


def test_native_hotpot_json(tmp_path):
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([{"_id": "h1", "question": "Q?", "answer": "yes", "type": "comparison",
                                 "context": [["T1", ["S one.", " S two."]], ["T2", ["Other."]]]}]))
    [ex] = load_questions(path)
    assert ex.passages[0].text == "S one. S two." and ex.type == "comparison"


def test_native_json_error_has_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n "data": [\n oops]\n}')
    with pytest.raises(DataError, match=r"bad.json:3: invalid JSON"):
        load_questions(path)


@pytest.mark.parametrize("root, message", [
    ({"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}, "article 0 is malformed"),
    ({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"question": "q?",
                                                                     "answers": [{"text": "a"}]}]}]}]},
     "article 0 is malformed"),
    ({"data": ["x"]}, "article 0 is malformed"),
    ({"data": []}, "no questions in file"),
    ({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [
        {"id": "1", "question": "When?", "answers": [{"text": 1990}]}]}]}]},
     r"article 0 question 1: 'answers\[0\]' must be a string, got int"),
    ({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [
        {"id": "2", "question": None, "answers": [{"text": "x"}]}]}]}]},
     "article 0 question 2: 'question' must be a string, got NoneType"),
    ({"data": [{"title": "T", "paragraphs": [{"context": 5, "qas": []}]}]},
     "article 0 paragraph 0: 'context' must be a string"),
    ({"data": [{"title": "T", "paragraphs": [{"context": " ", "qas": []}]}]},
     "article 0 paragraph 0: 'context' is empty"),
    ({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [
        {"id": "q1", "question": "A?", "answers": [{"text": "c"}]}]}, {"context": "d", "qas": [
            {"id": "q1", "question": "B?", "answers": [{"text": "d"}]}]}]}]},
     "question id 'q1' is used by questions 0 and 1"),
])
def test_malformed_native_squad_is_a_data_error(tmp_path, root, message):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(root))
    with pytest.raises(DataError, match=message):
        load_questions(path)


def test_native_hotpot_errors(tmp_path):
    path = tmp_path / "hotpot.json"
    good = {"_id": "h", "question": "q?", "answer": "a", "context": [["T", ["one. ", "two."]]]}
    for root, message in [(["x"], "question 0 is malformed"), ([], "no questions in file"),
                          ([good, {**good, "answer": 7}], "question 1: 'answer' must be a string, got int"),
                          ([{**good, "context": [[None, ["s"]]]}], r"question 0: 'context\[0\] title' must be"),
                          ([{**good, "context": [["T", ["one."]], ["Empty", []]]}],
                           "question 0: passage 'Empty' has no text"),
                          ([good, {**good, "question": "other?"}], "question id 'h' is used by questions 0 and 1")]:
        path.write_text(json.dumps(root))
        with pytest.raises(DataError, match=message):
            load_questions(path)


def test_passages_of_a_bad_question_file_reports_the_question_error(tmp_path):
    path = _write(tmp_path, "q.jsonl", [GOOD, json.dumps({"question": "q?", "answers": "a"})])
    with pytest.raises(DataError, match=r"q.jsonl:2: field 'answers'"):
        passages_of(path)
    corpus = _write(tmp_path, "c.jsonl", [json.dumps({"title": "A", "text": "a"}), json.dumps({"title": "B"})])
    with pytest.raises(DataError, match=r"c.jsonl:2: passage has no 'text'"):
        passages_of(corpus)


def test_last_line_without_a_newline_and_every_passage_are_read(tmp_path):
    path = tmp_path / "q.jsonl"
    two = json.dumps({"id": "q2", "question": "Where?", "answers": ["Z"],
                      "passages": [{"title": "A", "text": "a."}, {"title": "B", "text": "b.", "id": 5}]})
    path.write_text(GOOD + "\n" + two)  # no newline at the end
    _, second = read_qa_jsonl(path)
    assert (second.id, second.question, second.answers) == ("q2", "Where?", ["Z"])
    assert second.passages == [Passage("A", "a."), Passage("B", "b.", "5")]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "x"}\n{"text": "y"}')
    assert [p.id for p in read_corpus(corpus)] == ["c-1", "c-2"]


def test_a_blank_question_is_refused(tmp_path):
    path = _write(tmp_path, "q.jsonl", [json.dumps({"question": " \t", "answers": ["a"]})])
    with pytest.raises(DataError, match=r"q.jsonl:1: field 'question' is empty"):
        read_qa_jsonl(path)


def test_native_hotpot_keeps_question_answer_and_id_apart(tmp_path):
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([{"_id": "h1", "question": "Which is older?", "answer": "Ennisar",
                                 "context": [["T1", ["S one."]]]}]))
    [ex] = load_questions(path)
    assert (ex.id, ex.question, ex.answers, ex.dataset) == ("h1", "Which is older?", ["Ennisar"], "hotpotqa")


def test_native_squad_doc_id_names_article_and_paragraph(tmp_path):
    para = lambda n: {"context": f"Paragraph {n}.", "qas": [{"id": f"q{n}", "question": "Which?",  # noqa: E731
                                                              "answers": [{"text": "Paragraph"}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": [{"title": "A", "paragraphs": [para(0), para(1)]},
                                         {"title": "B", "paragraphs": [para(2)]}]}))
    assert [ex.doc_id for ex in load_questions(path)] == ["A#0", "A#1", "B#0"]


def test_passages_of_a_question_file_are_distinct_and_skip_the_first_questions(tmp_path):
    def row(qid, *texts):
        return json.dumps({"id": qid, "question": "q?", "answers": ["a"],
                           "passages": [{"title": t, "text": t + " text."} for t in texts]})

    path = _write(tmp_path, "q.jsonl", [row("1", "A", "B"), row("2", "B", "C"), row("3", "C", "D")])
    assert [p.title for p in passages_of(path)] == ["A", "B", "C", "D"]
    # question 1's passages are left out even where a later question shares them
    assert [p.title for p in passages_of(path, skip_first=1)] == ["C", "D"]


def test_spread_questions_takes_per_doc_questions_of_each_passage_up_to_n():
    from hyperprag.data import QAExample, spread_questions

    examples = [QAExample(f"{d}{i}", "q?", ["a"], doc_id=d) for d in "xyz" for i in range(3)]
    assert [ex.id for ex in spread_questions(examples, None, 2)] == ["x0", "x1", "y0", "y1", "z0", "z1"]
    assert [ex.id for ex in spread_questions(examples, 3, 1)] == ["x0", "y0", "z0"]
    assert [ex.id for ex in spread_questions(examples, 4, None)] == ["x0", "x1", "x2", "y0"]


def test_passages_of_a_corpus_whose_rows_have_a_question_field_reports_the_passage_error(tmp_path):
    """Only a first row with both 'question' and 'answers' makes a file read as questions."""
    corpus = _write(tmp_path, "c.jsonl", [json.dumps({"title": "A", "text": "a", "question": "meta"}),
                                          json.dumps({"title": "B"})])
    with pytest.raises(DataError, match=r"c.jsonl:2: passage has no 'text'"):
        passages_of(corpus)
