import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hyperprag.adapter import content_hash
from hyperprag.errors import HyperpragError
from hyperprag.store import AdapterStore
from store_worker import FakeEncoder, docs
from conftest import tiny_model

WORKER = Path(__file__).parent / "store_worker.py"


def run_worker(store, n, offset=0, delay=0.0):
    return subprocess.Popen([sys.executable, str(WORKER), str(store), str(n), str(offset), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class CountingEncoder(FakeEncoder):
    def __init__(self, model):
        super().__init__(model, 0.0)
        self.encoded = 0

    def encode(self, docs, progress=False):
        self.encoded += len(docs)
        return super().encode(docs)


def test_round_trip_and_reuse(tmp_path):
    store = AdapterStore(tmp_path)
    enc = CountingEncoder(tiny_model())
    first = store.get_or_encode(docs(3) + docs(1), enc, progress=False)  # a duplicate document
    assert enc.encoded == 3 and len(first) == 4
    again = store.get_or_encode(docs(3), enc, progress=False)
    assert enc.encoded == 3
    for a, b in zip(first, again):
        assert a.doc_hash == b.doc_hash
        name = next(iter(a.factors))
        assert torch.equal(a.factors[name][1], b.factors[name][1])
    rec = store.record(content_hash(docs(1)[0].text), "fake-v1", "tiny-llama")
    assert rec.bytes == (tmp_path / rec.file).stat().st_size


def test_corrupt_file_is_detected_and_reencoded(tmp_path):
    store = AdapterStore(tmp_path)
    enc = CountingEncoder(tiny_model())
    store.get_or_encode(docs(2), enc, progress=False)
    rec = store.record(content_hash(docs(1)[0].text), "fake-v1", "tiny-llama")
    path = tmp_path / rec.file
    data = bytearray(path.read_bytes())
    data[-10:] = b"\x00" * 10
    path.write_bytes(bytes(data))
    assert store.verify() == [f"{rec.file} is corrupt (sha256 mismatch)"]
    store.get_or_encode(docs(2), enc, progress=False)
    assert enc.encoded == 3 and store.verify() == []


class OtherModelEncoder(CountingEncoder):
    """The same encoder key for another base model, as the exact encoder's key is (it does not name the model)."""

    def __init__(self, model):
        super().__init__(model)
        self.base_model = "other-model"

    def encode(self, docs, progress=False):
        out = super().encode(docs)
        for ad in out:
            ad.base_model = self.base_model
        return out


def test_two_base_models_share_a_store_without_overwriting_each_other(tmp_path):
    store = AdapterStore(tmp_path)
    tiny, other = CountingEncoder(tiny_model()), OtherModelEncoder(tiny_model())
    store.get_or_encode(docs(2), tiny, progress=False)
    store.get_or_encode(docs(2), other, progress=False)
    assert store.verify() == [] and len(store.records()) == 4
    store.get_or_encode(docs(2), tiny, progress=False)
    store.get_or_encode(docs(2), other, progress=False)
    assert tiny.encoded == 2 and other.encoded == 2  # nothing retrained
    doc = content_hash(docs(1)[0].text)
    assert store.record(doc, "fake-v1", "tiny-llama").file != store.record(doc, "fake-v1", "other-model").file


def test_kill_and_resume_loses_nothing_and_corrupts_nothing(tmp_path):
    proc = run_worker(tmp_path, 12, delay=0.3)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some, not all, adapters are in
        done = len(AdapterStore(tmp_path).records()) if (tmp_path / "index.sqlite").exists() else 0
        if done >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = AdapterStore(tmp_path)
    before = {r.doc_hash for r in store.records()}
    assert 3 <= len(before) < 12
    assert store.verify() == []
    out = run_worker(tmp_path, 12).communicate(timeout=300)
    assert "finished" in out[0], out[1]
    after = store.records()
    assert {content_hash(d.text) for d in docs(12)} == {r.doc_hash for r in after}
    assert store.verify() == []
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert len(leftovers) <= 1  # at most the file being written at the kill


def test_two_processes_writing_one_store(tmp_path):
    procs = [run_worker(tmp_path, 10, offset=0), run_worker(tmp_path, 10, offset=5)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert "finished" in out, err
    store = AdapterStore(tmp_path)
    assert len(store.records()) == 15 and store.verify() == []
    for rec in store.records():
        assert store.get(rec.doc_hash, "fake-v1", "tiny-llama") is not None


def test_encode_sharded_over_two_accelerate_processes_fills_one_store(tmp_path, tokenizer):
    import json

    from conftest import tiny_model as make

    model_dir = tmp_path / "tiny"
    make("llama").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"p{i}", "title": f"T{i}", "text": f"Fact number {i} of Vask."})
                                for i in range(6)))
    env = dict(os.environ, OMP_NUM_THREADS="1", HYPERPRAG_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hyperprag", "encode", "--docs", str(corpus),
           "--model", str(model_dir), "--store", str(tmp_path / "store"), "--quiet", "--n-qa", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process 0/2: 3 documents" in proc.stderr and "process 1/2: 3 documents" in proc.stderr
    assert proc.stdout.count("stored=6 ") == 1  # printed once, by the main process, for the whole store
    store = AdapterStore(tmp_path / "store")
    assert len(store.records()) == 6 and store.verify() == []


def _open_store_at_barrier(root, barrier, errors):
    barrier.wait()
    try:
        AdapterStore(root)
    except Exception as err:  # noqa: BLE001 - reported to the parent
        errors.put(repr(err))


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    # The race `accelerate launch ... hyperprag encode` runs: every process creates the same new
    # store. SQLite refuses all but one the switch to WAL with "database is locked" at once.
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    for trial in range(40):
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_store_at_barrier, args=(tmp_path / str(trial), barrier, errors))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
    assert errors.empty(), errors.get()


def _put_and_get(root, seed, barrier, lost):
    import logging

    from conftest import random_adapter

    logging.disable(logging.WARNING)
    store, ad = AdapterStore(root), random_adapter(tiny_model(), seed=seed, doc="shared passage")
    barrier.wait()
    misses = 0
    for _ in range(60):
        store.put(ad, "fake-v1")
        misses += store.get(ad.doc_hash, "fake-v1", ad.base_model) is None
    lost.put(misses)


def test_processes_storing_one_document_at_once_never_discard_it_as_corrupt(tmp_path):
    # Two runs that encode one document at once (exact training is not bitwise reproducible across
    # machines; adapters once differed in bytes even when equal). With one file per document, a row
    # could hold one writer's sha256 over the other's bytes: a good adapter was dropped as corrupt
    # and re-encoded (minutes each, for the exact encoder).
    import multiprocessing as mp

    AdapterStore(tmp_path)
    ctx = mp.get_context("fork")
    barrier, lost = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_put_and_get, args=(tmp_path, seed, barrier, lost)) for seed in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert lost.get() + lost.get() == 0
    store = AdapterStore(tmp_path)
    assert len(store.records()) == 1 and store.verify() == []
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1  # each replaced file went with its row


def test_a_reader_holding_a_replaced_row_reads_the_new_one(tmp_path, monkeypatch, caplog):
    from conftest import random_adapter

    store, model = AdapterStore(tmp_path), tiny_model()
    first, second = (random_adapter(model, seed=s, doc="one passage") for s in (1, 2))
    store.put(first, "fake-v1")
    stale = store.record(first.doc_hash, "fake-v1", first.base_model)
    store.put(second, "fake-v1")  # another process re-encodes the document, after this one read the row
    fresh = AdapterStore.record
    calls = iter([stale])
    monkeypatch.setattr(AdapterStore, "record", lambda self, *key: next(calls, None) or fresh(self, *key))
    got = store.get(first.doc_hash, "fake-v1", first.base_model)
    assert got is not None and caplog.text == ""
    assert all(torch.equal(got.factors[n][1], second.factors[n][1]) for n in second.factors)
    assert store.verify() == []


def test_a_store_whose_index_is_no_database_is_one_clear_error(tmp_path):
    (tmp_path / "index.sqlite").write_text("these are notes, not an adapter index\n" * 100)
    with pytest.raises(HyperpragError, match=r"index.sqlite: not a usable adapter store \(file is not a database\)"):
        AdapterStore(tmp_path)
