"""Questions and passages: the shared JSONL shape, passage corpora, and native SQuAD/HotpotQA JSON.

Every reader fails with a :class:`DataError` naming the file, the line and what is wrong, so a bad
row in a 10,000-line file is found without a debugger.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .adapter import content_hash


class DataError(ValueError):
    """Malformed input data; ``str()`` is one line: ``file:line: what is wrong``."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path, self.line, self.message = str(path), line, message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    id: str = ""


@dataclass
class QAExample:
    id: str
    question: str
    answers: list[str]
    passages: list[Passage] = field(default_factory=list)
    type: str | None = None
    doc_id: str | None = None
    dataset: str | None = None


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, or one line naming it when it cannot be read (missing, a directory, no access)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, None, "is a directory, not a JSONL file") from None
    except OSError as err:
        raise DataError(path, None, f"cannot read: {err.strerror}") from None


def _iter_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    raw = _read_bytes(path)
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(path, lineno, f"not valid UTF-8 (byte {err.start})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, lineno, f"invalid JSON: {err.msg} at column {err.colno}") from None
        if not isinstance(obj, dict):
            raise DataError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _require_str(obj: dict, key: str, path: Path, lineno: int, allow_empty: bool = False) -> str:
    if key not in obj:
        raise DataError(path, lineno, f"missing field '{key}'")
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(path, lineno, f"field '{key}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(path, lineno, f"field '{key}' is empty")
    return value


def _parse_passage(obj: object, path: Path, lineno: int, where: str) -> Passage:
    if not isinstance(obj, dict):
        raise DataError(path, lineno, f"{where} must be an object with 'title' and 'text'")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, lineno, f"{where} has no 'text' string")
    title = obj.get("title", "")
    if not isinstance(title, str):
        raise DataError(path, lineno, f"{where} 'title' must be a string")
    return Passage(title=title, text=text, id=str(obj.get("id", "")))


def read_qa_jsonl(path: str | Path) -> list[QAExample]:
    """Questions in the shared shape: id, question, answers, passages, optional type/doc_id/dataset."""
    path = Path(path)
    examples, first_line = [], {}
    for lineno, obj in _iter_json_lines(path):
        # answers are paired across modes and runs by id: a repeated one would pair two questions
        qid = str(obj["id"]) if obj.get("id") is not None else f"{path.stem}-{lineno}"
        if qid in first_line:
            raise DataError(path, lineno, f"question id {qid!r} is already used on line {first_line[qid]}")
        first_line[qid] = lineno
        answers = obj.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise DataError(path, lineno, "field 'answers' must be a non-empty list of strings")
        passages = obj.get("passages", [])
        if not isinstance(passages, list):
            raise DataError(path, lineno, "field 'passages' must be a list")
        for key in ("type", "doc_id", "dataset"):  # grouped and sorted on: a list here crashed much later
            if obj.get(key) is not None and not isinstance(obj[key], str):
                raise DataError(path, lineno, f"field '{key}' must be a string, got {obj[key]!r}")
        examples.append(QAExample(
            id=qid,
            question=_require_str(obj, "question", path, lineno),
            answers=answers,
            passages=[_parse_passage(p, path, lineno, f"passage {i}") for i, p in enumerate(passages)],
            type=obj.get("type"),
            doc_id=obj.get("doc_id"),
            dataset=obj.get("dataset"),
        ))
    if not examples:
        raise DataError(path, None, "no questions in file")
    return examples


def read_corpus(path: str | Path) -> list[Passage]:
    """A passage corpus, one ``{"id", "title", "text"}`` object a line."""
    path = Path(path)
    passages = []
    for lineno, obj in _iter_json_lines(path):
        passage = _parse_passage(obj, path, lineno, "passage")
        passages.append(Passage(passage.title, passage.text, passage.id or f"{path.stem}-{lineno}"))
    if not passages:
        raise DataError(path, None, "no passages in file")
    return passages


def _load_json(path: Path) -> object:
    raw = _read_bytes(path)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(path, None, f"not valid UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(path, err.lineno, f"invalid JSON: {err.msg} at column {err.colno}") from None


def _require_strings(path: Path, where: str, **fields: object) -> None:
    """Native JSON has no line to point at, so an error names the article or question instead."""
    for key, value in fields.items():
        if not isinstance(value, str):
            raise DataError(path, None, f"{where}: '{key}' must be a string, got {type(value).__name__}")


def _parse_squad(root: object, path: Path) -> list[QAExample]:
    if not isinstance(root, dict) or not isinstance(root.get("data"), list):
        raise DataError(path, None, "not SQuAD JSON: expected an object with a 'data' list")
    examples = []
    for a_idx, article in enumerate(root["data"]):
        try:
            title = article.get("title", "")
            _require_strings(path, f"article {a_idx}", title=title)
            for p_idx, para in enumerate(article.get("paragraphs", [])):
                _require_strings(path, f"article {a_idx} paragraph {p_idx}", context=para["context"])
                if not para["context"].strip():
                    raise DataError(path, None, f"article {a_idx} paragraph {p_idx}: 'context' is empty")
                passage = Passage(title=title.replace("_", " "), text=para["context"])
                for qa in para.get("qas", []):
                    answers = [a["text"] for a in qa.get("answers", [])]
                    if not answers:
                        raise DataError(path, None, f"question {qa.get('id')} has no answers")
                    _require_strings(path, f"article {a_idx} question {qa.get('id')}", id=qa["id"],
                                     question=qa["question"], **{f"answers[{i}]": a for i, a in enumerate(answers)})
                    examples.append(QAExample(id=qa["id"], question=qa["question"], answers=answers,
                                              passages=[passage], doc_id=f"{title}#{p_idx}", dataset="squad"))
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(path, None, f"article {a_idx} is malformed: {err!r}") from None
    return _with_unique_ids(examples, path)


def _with_unique_ids(examples: list[QAExample], path: Path) -> list[QAExample]:
    """Answers are paired across modes and runs by id, as in ``read_qa_jsonl``: a repeated one
    would pair two questions."""
    if not examples:
        raise DataError(path, None, "no questions in file")
    first: dict[str, int] = {}
    for n, ex in enumerate(examples):
        if ex.id in first:
            raise DataError(path, None, f"question id {ex.id!r} is used by questions {first[ex.id]} and {n}")
        first[ex.id] = n
    return examples


def _parse_hotpot(root: object, path: Path) -> list[QAExample]:
    if not isinstance(root, list):
        raise DataError(path, None, "not HotpotQA JSON: expected a list of questions")
    examples = []
    for i, row in enumerate(root):
        try:
            _require_strings(path, f"question {i}", _id=row["_id"], question=row["question"], answer=row["answer"],
                             **{f"context[{j}] title": t for j, (t, _) in enumerate(row["context"])})
            passages = [Passage(title=t, text="".join(sents)) for t, sents in row["context"]]
            if empty := [p.title for p in passages if not p.text.strip()]:
                raise DataError(path, None, f"question {i}: passage {empty[0]!r} has no text")
            examples.append(QAExample(id=row["_id"], question=row["question"], answers=[row["answer"]],
                                      passages=passages, type=row.get("type"), dataset="hotpotqa"))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(path, None, f"question {i} is malformed: {err!r}") from None
    return _with_unique_ids(examples, path)


def load_questions(path: str | Path) -> list[QAExample]:
    """Any supported question file, chosen by extension and shape."""
    path = Path(path)
    if path.suffix == ".json":
        root = _load_json(path)
        return _parse_squad(root, path) if isinstance(root, dict) else _parse_hotpot(root, path)
    return read_qa_jsonl(path)


def spread_questions(examples: Sequence[QAExample], n: int | None, per_doc: int | None) -> list[QAExample]:
    """The first ``per_doc`` questions of each passage, in order, until ``n``: with SQuAD's ~5
    questions a paragraph, 100 questions then span 20 paragraphs instead of the first few."""
    if per_doc is None:
        return list(examples[:n])
    taken: dict[str, int] = {}
    out = []
    for ex in examples:
        key = ex.doc_id or ex.id
        if taken.get(key, 0) < per_doc:
            taken[key] = taken.get(key, 0) + 1
            out.append(ex)
            if n is not None and len(out) == n:
                break
    return out


def _looks_like_questions(path: Path) -> bool:
    """Native JSON, or JSONL whose first row has a question and answers."""
    if path.suffix == ".json":
        return True
    try:
        _, first = next(_iter_json_lines(path))
    except (DataError, StopIteration):
        return False
    return "question" in first and "answers" in first


def passages_of(path: str | Path, skip_first: int = 0) -> list[Passage]:
    """A file's distinct passages: a corpus JSONL, or a question file's, less those of its first
    ``skip_first`` questions."""
    try:
        docs = read_corpus(path)
    except DataError as corpus_err:  # not a corpus: maybe a question file, whose passages we take
        try:
            examples = load_questions(path)
        except DataError as question_err:
            # Report what the file was meant to be: a bad question row should not read as
            # "passage has no 'text'".
            raise (question_err if _looks_like_questions(Path(path)) else corpus_err) from None
        skipped = {content_hash(p.text) for ex in examples[:skip_first] for p in ex.passages}
        docs = [p for ex in examples[skip_first:] for p in ex.passages if content_hash(p.text) not in skipped]
    return list({content_hash(d.text): d for d in docs}.values())
