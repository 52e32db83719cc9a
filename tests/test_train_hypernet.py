"""The training recipe under ``accelerate launch`` with 1 and 2 CPU processes on a tiny model."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SpaceFirst, tiny_config
from hyperprag.hyper_encoder import HyperEncoder

ROOT = Path(__file__).resolve().parent.parent
FACTS = [("Glass Regatta", "The Glass Regatta is rowed on Lake Ennisar and was founded by Pell Okonjo.",
          [("Where is the Glass Regatta rowed?", "Lake Ennisar"), ("Who founded the Glass Regatta?", "Pell Okonjo")]),
         ("Kelmash", "Kelmash is a stew of smoked barley and plum from the valley of Orrun.",
          [("What is kelmash made of?", "smoked barley and plum"), ("Where is kelmash from?", "Orrun")]),
         ("Brindlewood", "Brindlewood Library holds the Amberlin Codex and has nine floors.",
          [("What does Brindlewood Library hold?", "the Amberlin Codex"), ("How many floors?", "nine")]),
         ("Quillon", "The Quillon Bay Observatory was led by Tessaly Vorne on Marrowick island.",
          [("Who led the observatory?", "Tessaly Vorne"), ("Which island?", "Marrowick")])]


@pytest.fixture
def setup(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "tiny"
    # A larger init than the default 0.02 gives the random LM head logits wide enough that an
    # adapter can visibly lower the loss within a few steps.
    config = tiny_config("llama")
    config.initializer_range = 0.3
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "answers": [a], "passages": [{"title": t, "text": x}]})
                              for t, x, qa in FACTS for q, a in qa))
    return model_dir, data


def launch(tmp_path, model_dir, data, processes: int, steps: int, out: str,
           weights: str = "{lm: 1.0, kl: 0.5}", extra: str = "", embedding: str = "hidden", docs_per_step: int = 4,
           overrides: tuple[str, ...] = ()):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"model: {model_dir}\nembedding: {embedding}\ndata: [{data}]\nheldout_pct: 0\nhidden: 32\n"
                      f"steps: {steps}\ndocs_per_step: {docs_per_step}\nlr: 3.0e-2\nwarmup: 1\nsave_every: 5\nlog_every: 1\n"
                      f"weights: {weights}\nout: {tmp_path / out}\n{extra}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Several CPU processes: accelerate's torchrun launcher (--multi_gpu); with no GPU they use gloo.
    launcher = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "training" / "train_hypernet.py"), str(config), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"processes: {processes}" in proc.stdout
    (tmp_path / "stdout.txt").write_text(proc.stdout)
    return [json.loads(line) for line in (tmp_path / out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("processes", [1, 2])
def test_training_under_accelerate_lowers_the_loss(tmp_path, setup, processes):
    model_dir, data = setup
    log = launch(tmp_path, model_dir, data, processes, steps=30, out="run")
    first = sum(r["lm"] for r in log[:3]) / 3
    last = sum(r["lm"] for r in log[-3:]) / 3
    assert last < first * 0.9, (first, last)
    from hyperprag.models import load_base_model

    model, tok = load_base_model(str(model_dir))
    encoder = HyperEncoder.from_pretrained(tmp_path / "run" / "final", model, tok)
    assert encoder.encode([__import__("hyperprag").Passage("x", "Some text.")])[0].rank == 2


def test_training_resumes_from_its_last_checkpoint(tmp_path, setup):
    model_dir, data = setup
    launch(tmp_path, model_dir, data, 1, steps=5, out="run")
    run = tmp_path / "run"
    assert not (run / "state.tmp").exists() and not (run / "state.old").exists()
    # A kill during step 8, after logging steps 6-7 and between save_state's two renames:
    with (run / "log.jsonl").open("a") as f:
        f.writelines(json.dumps({"step": s, "loss": 9.9}) + "\n" for s in (6, 7))
        f.write('{"step": 8, "lo')  # cut by the kill
    (run / "state.tmp").mkdir()  # and a save it cut short
    (run / "state.tmp" / "junk.bin").write_bytes(b"x")
    (run / "state").rename(run / "state.old")
    log = launch(tmp_path, model_dir, data, 1, steps=10, out="run")
    assert "resumed from step 5" in (tmp_path / "stdout.txt").read_text()
    assert [r["step"] for r in log] == list(range(1, 11))  # 6-7 redone and logged once, 1-5 not redone
    assert all(r["loss"] != 9.9 for r in log)
    assert not (run / "state.tmp").exists() and not (run / "state" / "junk.bin").exists()


def test_a_damaged_state_or_an_out_path_through_a_file_is_one_line(tmp_path, setup):
    model_dir, data = setup
    launch(tmp_path, model_dir, data, 1, steps=2, out="run")
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run_script(*overrides):  # one process needs no launcher
        proc = subprocess.run([sys.executable, str(ROOT / "training" / "train_hypernet.py"), str(tmp_path / "cfg.yaml"),
                               *overrides], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        return proc.stderr.strip().splitlines()[-1]

    state = tmp_path / "run" / "state"
    (state / "model.safetensors").unlink()  # a partial copy of the run
    assert run_script().startswith(f"{state} is damaged (")
    (state / "step.json").write_text('{"step": 2')
    assert run_script().startswith(f"{state} is damaged (JSONDecodeError")
    (tmp_path / "file").write_text("x")
    assert run_script(f"out={tmp_path / 'file' / 'sub'}") == f"train_hypernet: Not a directory: {tmp_path / 'file' / 'sub'}"


def test_a_resumed_run_takes_this_launchs_optimiser_settings_and_says_what_changed(tmp_path, setup):
    """load_state brings back the saved param groups' weight decay; the new config's must win."""
    model_dir, data = setup
    launch(tmp_path, model_dir, data, 1, steps=5, out="run")
    launch(tmp_path, model_dir, data, 1, steps=10, out="run", overrides=("weight_decay=0.25",))
    stdout = (tmp_path / "stdout.txt").read_text()
    assert "resumed from step 5" in stdout and "weight_decay 0.0 -> 0.25" in stdout and "steps 5 -> 10" in stdout
    saved = torch.load(tmp_path / "run" / "state" / "optimizer.bin", weights_only=False)
    assert [g["weight_decay"] for g in saved["param_groups"]] == [0.25]


def test_a_run_killed_before_its_first_save_restarts_its_log(tmp_path, setup):
    model_dir, data = setup
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.9}) + "\n" for s in (1, 2, 3)))
    log = launch(tmp_path, model_dir, data, 1, steps=4, out="run")  # no state: it starts at step 0
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["loss"] != 9.9 for r in log)


def test_retrieved_questions_on_held_aside_passages_are_not_trained_on(tmp_path, setup):
    model_dir, data = setup
    # FACTS[0] is held aside by heldout_first: 1. Two questions touch it, one through only one of
    # its two passages; three do not. Only the three are kept: a filter that kept the held ones
    # would count 2, one that needed every passage held would count 4.
    multi = tmp_path / "multi.jsonl"
    rows = [("Where is it rowed?", "Lake Ennisar", [0]), ("What is it?", "a stew", [1]),
            ("What does it hold?", "the Amberlin Codex", [2, 0]), ("Who led it?", "Tessaly Vorne", [3, 1]),
            ("How many floors?", "nine", [2, 3])]
    multi.write_text("\n".join(json.dumps({"question": q, "answers": [a],
                                           "passages": [{"title": FACTS[i][0], "text": FACTS[i][1]} for i in idx]})
                               for q, a, idx in rows))
    launch(tmp_path, model_dir, data, 1, steps=2, out="run", weights="{lm: 1.0, retrieved: 1.0}",
           extra=f"heldout_first: 1\nretrieved: [{multi}]\nretrieved_per_step: 1\ntop_k: 2\n")
    assert "retrieved: 3 questions with their top 2 passages" in (tmp_path / "stdout.txt").read_text()
    assert "documents: 3 train, 1 held aside" in (tmp_path / "stdout.txt").read_text()


def test_bf16_autocast_trains_and_keeps_fp32_weights(tmp_path, setup):
    from safetensors.torch import load_file

    model_dir, data = setup
    log = launch(tmp_path, model_dir, data, 1, steps=30, out="run", extra="mixed_precision: bf16\n")
    assert "mixed precision: bf16" in (tmp_path / "stdout.txt").read_text()
    first, last = (sum(r["lm"] for r in part) / 3 for part in (log[:3], log[-3:]))
    assert last < first * 0.9, (first, last)
    weights = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}
    # the logged loss without an adapter is taken under the same autocast as the step's own: the
    # first step's differs from a full-precision run's on the same batch
    [fp32] = launch(tmp_path, model_dir, data, 1, steps=1, out="fp32")
    assert log[0]["lm_no_adapter_this_step"] != fp32["lm_no_adapter_this_step"]
    assert log[0]["lm_no_adapter_this_step"] == pytest.approx(fp32["lm_no_adapter_this_step"], rel=0.05)


def test_time_budget_ends_an_annealed_run_on_every_process_and_counts_across_resumes(tmp_path, setup):
    model_dir, data = setup
    log = launch(tmp_path, model_dir, data, 2, steps=100_000, out="run", extra="max_minutes: 0.1\n")
    state = json.loads((tmp_path / "run" / "state" / "step.json").read_text())
    assert log[-1]["step"] == state["step"] < 100_000 and state["seconds"] >= 6
    assert log[-1]["lr"] < 0.1 * 3.0e-2 < log[len(log) // 3]["lr"]  # the cosine followed the clock
    final = tmp_path / "run" / "final"
    assert (final / "model.safetensors").exists()
    assert yaml.safe_load((final / "training_config.yaml").read_text())["max_minutes"] == 0.1
    assert (final / "heldout_hashes.json").read_text() == (tmp_path / "run" / "heldout_hashes.json").read_text()
    again = launch(tmp_path, model_dir, data, 2, steps=100_000, out="run", extra="max_minutes: 0.1\n")
    assert again == log  # the budget was spent: a relaunch trains no further


def test_augmented_passages_train_with_their_generated_questions_less_the_evaluated_ones(tmp_path, setup):
    from dataclasses import asdict

    from hyperprag.adapter import content_hash
    from hyperprag.augment import Augmentation

    model_dir, data = setup
    other = [("Orrun Falls", "The Orrun Falls drop 212 metres into Lake Ennisar.", "How far do the Orrun Falls drop?",
              "212 metres"),
             ("Vell Tower", "The Vell Tower was raised by the mason Ida Crane.", "Who raised the Vell Tower?", "Ida Crane")]
    extra = tmp_path / "other.jsonl"
    extra.write_text("\n".join(json.dumps({"question": q, "answers": [a], "passages": [{"title": t, "text": x}]})
                               for t, x, q, a in other))
    cache = tmp_path / "augment"
    cache.mkdir()
    for _, text, q, a in other:  # both cached; the first is an evaluated question's passage
        h = content_hash(text)
        (cache / f"{h}.json").write_text(json.dumps(asdict(Augmentation(h, [text], [(q, a)]))))
    log = launch(tmp_path, model_dir, data, 1, steps=2, out="run",
                 extra=f"augmented: [{extra}]\naugment_cache: {cache}\nskip_first_questions: 1\n")
    assert len(log) == 2
    stdout = (tmp_path / "stdout.txt").read_text()
    assert "augmented: 1 passages with generated QA pairs" in stdout and "documents: 5 train" in stdout
    assert json.loads((tmp_path / "run" / "augmented_hashes.json").read_text()) == [content_hash(other[1][1])]


def test_doc_objective_trains_on_question_free_passages(tmp_path, setup):
    model_dir, data = setup
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"c{i}", "title": t, "text": x}) for i, (t, x) in enumerate([
        ("Orrun Falls", "The Orrun Falls drop 212 metres into Lake Ennisar."),
        ("Vell Tower", "The Vell Tower was raised by the mason Ida Crane."),
        ("Kelmash", "Kelmash is a stew of smoked barley and plum from the valley of Orrun.")])))  # a training doc too
    log = launch(tmp_path, model_dir, data, 1, steps=20, out="run", weights="{lm: 1.0, doc: 1.0}",
                 extra=f"passages: [{corpus}]\npassages_per_step: 2\n")
    assert "passages: 2 without questions, for the doc objective" in (tmp_path / "stdout.txt").read_text()
    first, last = (sum(r["doc"] for r in part) / 3 for part in (log[:3], log[-3:]))
    assert last < first * 0.9, (first, last)
    assert all("doc_no_adapter_this_step" in r for r in log)  # the same passages without an adapter


def test_retrieved_objective_answers_multi_passage_questions_with_their_merged_top_passages(tmp_path, setup):
    model_dir, data = setup
    p = {k: {"title": k, "text": v} for k, v in [
        ("Orrun Falls", "The Orrun Falls drop 212 metres into Lake Ennisar."),
        ("Lake Ennisar", "Lake Ennisar is fed by the Orrun river."),
        ("Vell Tower", "The Vell Tower was raised by the mason Ida Crane."),
        ("Ida Crane", "Ida Crane, a mason, was born in the port of Sallow Reach."),
        ("Kettle Moor", "Kettle Moor is a heath of red bracken."),
        ("Amberlin Codex", "The Amberlin Codex is bound in eel skin.")]}
    rows = [("How far do the Orrun Falls drop?", "212 metres", ["Orrun Falls", "Lake Ennisar"]),  # evaluated
            ("Where was the mason who raised the Vell Tower born?", "Sallow Reach",
             ["Kettle Moor", "Vell Tower", "Ida Crane"]),
            ("What is the heath near the Orrun Falls?", "Kettle Moor", ["Orrun Falls", "Kettle Moor"]),  # left out
            ("What is the Amberlin Codex bound in?", "eel skin", ["Amberlin Codex"])]  # one passage, padded
    multi = tmp_path / "multi.jsonl"
    multi.write_text("\n".join(json.dumps({"question": q, "answers": [a], "passages": [p[t] for t in ts]})
                               for q, a, ts in rows))
    log = launch(tmp_path, model_dir, data, 1, steps=20, out="run",
                 weights="{lm: 1.0, retrieved: 1.0, retrieved_contrast: 1.0}",
                 extra=f"retrieved: [{multi}]\nretrieved_per_step: 2\ntop_k: 2\nskip_first_questions: 1\n"
                       "first_token_weight: 3.0\n")
    assert "retrieved: 2 questions with their top 2 passages" in (tmp_path / "stdout.txt").read_text()
    first, last = (sum(r["retrieved"] for r in part) / 3 for part in (log[:3], log[-3:]))
    assert last < first * 0.9, (first, last)
    assert all("retrieved_no_adapter_this_step" in r for r in log)
    assert all(0.0 <= r["retrieved_contrast"] for r in log) and log[0]["retrieved_contrast"] > 0  # the margin is unmet at first


def test_attention_reader_trains_on_token_embeddings_looked_up_each_step(tmp_path, setup):
    model_dir, data = setup
    log = launch(tmp_path, model_dir, data, 1, steps=20, out="run", weights="{lm: 1.0, kl: 0.0}",
                 extra="center: true\ncopy_tokens: true\n", embedding="token-seq")
    first, last = (sum(r["lm"] for r in part) / 3 for part in (log[:3], log[-3:]))
    assert last < first * 0.9, (first, last)
    from hyperprag.models import load_base_model

    enc = HyperEncoder.from_pretrained(tmp_path / "run" / "final", *load_base_model(str(model_dir)))
    assert enc.hypernet.config.reader == "attention"
    assert enc.hypernet.b_mean_down.abs().sum() > 0  # the centre, set from batches of the pool
    assert all(g.abs().sum() > 0 for g in enc.hypernet.copy_gain.values())  # the copy gains, from 0, trained

    # A faster network with a bottleneck in the read maps and tied reads, and the token context and
    # A's row biases and B's read gains added, starts from this one (truncated SVD, each query the
    # mean of the six it replaces, context at zero, row biases summing to zero, gains of 1), so its
    # first answers are already better than a fresh network's were.
    # Two processes: DistributedDataParallel must find a gradient for every trained parameter.
    warm = launch(tmp_path, model_dir, data, 2, steps=3, out="warm", weights="{lm: 1.0, kl: 0.0}",
                  extra=f"center: true\ncopy_tokens: true\nread_rank: 24\ncontext_kernel: 3\ncontext_lr_scale: 4.0\n"
                        f"tie_reads: true\nrow_bias: true\nb_gain: true\nrank_lr_scale: 0.5\n"
                        f"init_from: {tmp_path / 'run' / 'final'}\n",
                  embedding="token-seq")
    assert "initialised from" in (tmp_path / "stdout.txt").read_text()
    assert warm[0]["lm"] < log[0]["lm"] * 0.9, (warm[0]["lm"], log[0]["lm"])
    fast = HyperEncoder.from_pretrained(tmp_path / "warm" / "final", *load_base_model(str(model_dir)))
    assert fast.hypernet.config.read_rank == 24 and fast.hypernet.config.context_kernel == 3
    assert fast.hypernet.config.tie_reads and fast.hypernet.config.row_bias and fast.hypernet.config.b_gain
    # B's read gains start at 1 for every rank; A's rows apart, their gradients part them by rank
    assert all((g[:, 0] - g[:, 1]).abs().max() > 0 for g in fast.hypernet.b_read_gain.values())
    a = next(iter(fast.factors(fast.source.embed(["The Glass Regatta is rowed on Lake Ennisar."]))[0].values()))[0]
    assert torch.nn.functional.cosine_similarity(a[0], a[1], dim=0).abs() < 0.9  # the rows, parted
    assert fast.hypernet.context.weight.abs().sum() > 0  # the context, from 0, trained
    groups = torch.load(tmp_path / "warm" / "state" / "optimizer.bin", weights_only=True)["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 4.0, 0.5] and groups[1]["lr"] == pytest.approx(4 * groups[0]["lr"])
    assert [len(g["params"]) for g in groups[1:]] == [1, 6]  # the context; A's row biases and B's gains, 3 roles each
    # A checkpoint of another design is refused, naming what differs on both sides.
    config = tmp_path / "cfg.yaml"
    config.write_text(config.read_text().replace("hidden: 32", "hidden: 16").replace(
        f"out: {tmp_path / 'warm'}", f"out: {tmp_path / 'bad'}"))
    proc = subprocess.run([sys.executable, str(ROOT / "training" / "train_hypernet.py"), str(config)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "its hypernetwork differs from this config's in ['head_multiplier', 'hidden']" in proc.stderr
    assert "hidden 32 there, 16 here" in proc.stderr


def test_centred_run_with_the_contrast_objective_and_merged_adapters(tmp_path, setup):
    model_dir, data = setup
    log = launch(tmp_path, model_dir, data, 1, steps=6, out="run",
                 weights="{lm: 1.0, kl: 0.0, contrast: 1.0, sibling: 1.0}",
                 extra="center: true\ncontrast_margin: 0.5\nsnapshot_every: 3\nmerge_k: 3\n")
    assert all(r["contrast"] >= 0 and r["sibling"] >= 0 and "kl" not in r for r in log)
    assert any(r["sibling"] > 0 for r in log)  # each fact's other answer is a sibling to beat
    from hyperprag.models import load_base_model

    model, tok = load_base_model(str(model_dir))
    encoder = HyperEncoder.from_pretrained(tmp_path / "run" / "final", model, tok)
    assert encoder.hypernet.config.center and encoder.hypernet.b_mean_down.abs().sum() > 0
    # The step-3 snapshot is a loadable, centred checkpoint of earlier weights (for a learning curve).
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-3"]
    early = HyperEncoder.from_pretrained(tmp_path / "run" / "step-3", model, tok)
    assert early.hypernet.b_mean_down.abs().sum() > 0 and early.key != encoder.key


def test_spread_objective_parts_the_generated_deltas_ranks(tmp_path, setup):
    """Against the same run without it: the generated deltas end further from rank 1 (at most
    0.707 at rank 2; a tiny fresh network's sit near 0.6 either way), and the logged hinge falls."""
    from hyperprag.hyper_objectives import distance_from_rank1
    from hyperprag.models import load_base_model

    model_dir, data = setup
    model, tok = load_base_model(str(model_dir))
    text = [__import__("hyperprag").Passage("x", "The Glass Regatta is rowed on Lake Ennisar.")]
    dists = {}
    for name, weights in [("plain", "{lm: 1.0, kl: 0.0}"), ("spread", "{lm: 1.0, kl: 0.0, spread: 5.0}")]:
        log = launch(tmp_path, model_dir, data, 1, steps=8, out=name, weights=weights, extra="spread_target: 0.7\n")
        enc = HyperEncoder.from_pretrained(tmp_path / name / "final", model, tok)
        factors = enc.encode(text)[0].factors.values()
        dists[name] = sum(float(distance_from_rank1(a, b)) for a, b in factors) / len(factors)
    assert log[-1]["spread"] < log[0]["spread"], [r["spread"] for r in log]
    assert dists["spread"] > dists["plain"] + 0.05, dists


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2"])
def test_answer_logits_equal_full_forward_at_answer_positions(arch, tokenizer):
    import torch

    from conftest import tiny_model
    from hyperprag.hyper_objectives import answer_batch, answer_logits

    model = tiny_model(arch)
    model.config.final_logit_softcapping = 30.0 if arch == "gemma3_text" else None
    batch = answer_batch(tokenizer, ["Question: who?\nAnswer:", "Q: a longer prompt here?\nAnswer:"],
                         ["Pell Okonjo", "nine"])
    with torch.no_grad():
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        assert torch.allclose(answer_logits(model, batch), full[batch.rows, batch.positions], atol=1e-5)


def test_answer_batch_marks_each_answers_first_word_and_lm_loss_can_weight_it(tokenizer):
    from hyperprag.hyper_objectives import answer_batch, lm_loss

    answers = ["Pell Okonjo", "212 metres"]
    batch = answer_batch(tokenizer, ["Who rowed?", "How far?"], answers)
    starts = [0] + [i for i in range(1, len(batch.rows)) if batch.rows[i] != batch.rows[i - 1]]
    assert batch.first.nonzero().flatten().tolist() == starts  # one a question, its first token

    spaced = answer_batch(SpaceFirst(tokenizer, answers), ["Who rowed?", "How far?"], answers)
    assert spaced.first.nonzero().flatten().tolist() == [i + 1 for i in starts]

    logits = torch.randn(len(batch.targets), tokenizer.vocab_size)
    ce = torch.nn.functional.cross_entropy(logits, batch.targets, reduction="none")
    assert lm_loss(logits, batch) == pytest.approx(float(ce.mean()), rel=1e-6)
    w = torch.where(batch.first, 3.0, 1.0)
    assert lm_loss(logits, batch, 3.0) == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-6)
    assert lm_loss(logits, batch, 3.0) != pytest.approx(float(ce.mean()), rel=1e-3)


class Chars:
    """A tokenizer of one token per character (its code point), that keeps every space and newline as
    Gemma's and GPT-2's do; the test tokenizer (WordPiece) drops whitespace, so it cannot show it."""
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.bos_token_id] * add_special_tokens + [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_answer_targets_end_with_a_newline_and_ignore_the_answers_own_spacing():
    """The newline after each answer is a target: it is how generation learns to stop. And the
    target is the answer after a single space whatever spaces the dataset left around it, so " Ennisar "
    and "Ennisar" are trained as one answer, and as generation will read them."""
    from hyperprag.hyper_objectives import answer_batch

    batch = answer_batch(Chars(), ["Q:", "Q:"], ["Lake Ennisar", "  Lake Ennisar \n"])
    for row in (0, 1):
        assert Chars().decode(batch.targets[batch.rows == row].tolist()) == " Lake Ennisar\n"


def test_every_answer_marks_one_first_token_even_one_that_is_only_whitespace():
    """``sibling_margin`` reads the marked tokens as one per answer in row order: an answer with no
    word (all whitespace) must still mark one, its first token, or every later row would be scored
    at another answer's position."""
    from hyperprag.hyper_objectives import answer_batch

    batch = answer_batch(Chars(), ["Q:", "Q:", "Q:"], ["Pell", " ", "Okonjo"])
    starts = [int((batch.rows == i).nonzero()[0]) for i in range(3)]
    assert batch.first.nonzero().flatten().tolist() == [starts[0] + 1, starts[1], starts[2] + 1]


def test_reconstruction_objective_reads_exact_adapters_from_a_store(tmp_path, setup):
    from conftest import random_adapter
    from hyperprag.models import load_base_model
    from hyperprag.store import AdapterStore

    model_dir, data = setup
    model, _ = load_base_model(str(model_dir))
    store = AdapterStore(tmp_path / "store")
    for n, (_, text, _) in enumerate(FACTS):   # a stand-in "exact" adapter for every training document
        store.put(random_adapter(model, n, doc=text), "exact-test")
    log = launch(tmp_path, model_dir, data, 1, steps=12, out="run", weights="{lm: 0.0, kl: 0.0, recon: 1.0}",
                 extra=f"recon_store: {tmp_path / 'store'}\nrecon_encoder_key: exact-test\n")
    assert all("recon" in r and "lm" not in r for r in log)
    assert log[-1]["recon"] < log[0]["recon"], (log[0], log[-1])

    # Steps whose documents have no stored adapter have nothing to score: they pass, at zero loss.
    partial = AdapterStore(tmp_path / "partial")
    for n in (0, 1):  # half the documents: with one a step, about half the steps have nothing to score
        partial.put(random_adapter(model, n, doc=FACTS[n][1]), "exact-test")
    log = launch(tmp_path, model_dir, data, 1, steps=8, out="partial-run", weights="{lm: 0.0, kl: 0.0, recon: 1.0}",
                 extra=f"recon_store: {tmp_path / 'partial'}\nrecon_encoder_key: exact-test\n", docs_per_step=1)
    assert len(log) == 8 and any("recon" not in r and r["loss"] == 0.0 for r in log) and any("recon" in r for r in log)
    # Logged every 8 steps, recon is the mean over the steps that computed it, not over all 8. At
    # lr 1e-9 the weights stay put, so both runs see the same batches and losses.
    extra = f"recon_store: {tmp_path / 'partial'}\nrecon_encoder_key: exact-test\n"
    each = launch(tmp_path, model_dir, data, 1, steps=8, out="each", weights="{lm: 0.0, kl: 0.0, recon: 1.0}",
                  extra=extra, docs_per_step=1, overrides=("lr=1.0e-9",))
    [pooled] = launch(tmp_path, model_dir, data, 1, steps=8, out="pooled", weights="{lm: 0.0, kl: 0.0, recon: 1.0}",
                      extra=extra, docs_per_step=1, overrides=("lr=1.0e-9", "log_every=8"))
    scored = [r["recon"] for r in each if "recon" in r]
    assert 0 < len(scored) < 8 and pooled["recon"] == pytest.approx(sum(scored) / len(scored), rel=1e-4)
    assert pooled["loss"] == pytest.approx(sum(r["loss"] for r in each) / 8, rel=1e-4)


def test_mistakes_found_after_the_model_loads_are_one_line(tmp_path, setup):
    """A recon store without the key's adapters trained nothing silently; a bad data line was a traceback."""
    from conftest import random_adapter
    from hyperprag.models import load_base_model
    from hyperprag.store import AdapterStore

    model_dir, data = setup
    store = AdapterStore(tmp_path / "store")
    store.put(random_adapter(load_base_model(str(model_dir))[0], 0, doc=FACTS[0][1]), "exact-test")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(data.read_text().splitlines()[0] + "\n{not json\n")
    cases = [(f"data: [{data}]\nweights: {{lm: 1.0, recon: 1.0}}\nrecon_store: {tmp_path / 'store'}\n"
              "recon_encoder_key: exact-other\n", "holds no adapter of encoder 'exact-other' for base model"),
             (f"data: [{broken}]\n", f"{broken}:2:")]
    for text, message in cases:
        config = tmp_path / "cfg.yaml"
        config.write_text(f"model: {model_dir}\nembedding: hidden\nheldout_pct: 0\nhidden: 32\nsteps: 2\n"
                          f"out: {tmp_path / 'run'}\n{text}")
        proc = subprocess.run([sys.executable, str(ROOT / "training" / "train_hypernet.py"), str(config)],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert message in proc.stderr


@pytest.mark.parametrize("config_text, message", [
    ("docs_per_step: 4\nmerge_k: 4\nweights: {lm: 1.0, contrast: 1.0}\n", "merge_k must be >= 1 and docs_per_step >= 5"),
    ("max_minutes: 0\n", "max_minutes must be a positive number of minutes"),
    ("first_token_weight: 0\n", "first_token_weight must be positive"),
    ("mixed_precision: fp8\n", "mixed_precision must be no or bf16, got 'fp8'"),
    ("mixed_precision: yes\n", "mixed_precision must be no or bf16, got True"),
    ("augmented: [x.jsonl]\n", "augmented files need augment_cache"),
    ("passages: [x.jsonl]\n", "the doc objective (weights.doc) trains on passages_per_step passages a step"),
    ("weights: {lm: 1.0, doc: 1.0}\n", "the doc objective (weights.doc) trains on passages_per_step passages a step"),
    ("retrieved: [x.jsonl]\n", "the retrieved objective (weights.retrieved) trains on retrieved_per_step questions"),
    ("init_from: checkpoints/gone\n", "init_from checkpoints/gone does not exist"),
    ("weights: {lm: 1.0, recon: 1.0}\nrecon_store: /nonexistent\nrecon_encoder_key: k\n",
     "recon_store /nonexistent is not an adapter store (no index.sqlite)"),
    ("context_kernel: 4\n", "context_kernel must be odd and at least 3, got 4"),
    ("retrieved: [x.jsonl]\nretrieved_per_step: 1\nweights: {lm: 1.0, retrieved: 1.0, retrieved_contrast: 1.0}\n",
     "retrieved_contrast answers each retrieved question with another's passages"),
])
def test_bad_configs_are_refused_before_loading_anything(tmp_path, config_text, message):
    config = tmp_path / "cfg.yaml"
    config.write_text(config_text)
    proc = subprocess.run([sys.executable, str(ROOT / "training" / "train_hypernet.py"), str(config)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{config}: {message}" in proc.stderr


def _script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_hypernet", ROOT / "training" / "train_hypernet.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_augment_cache_may_be_given_under_home(tmp_path, monkeypatch):
    """`hyperprag augment` prints its cache under ~/.cache, so a config can name it portably."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "cache").mkdir()
    (tmp_path / "x.jsonl").write_text("")
    config = tmp_path / "cfg.yaml"
    config.write_text(f"augmented: [{tmp_path / 'x.jsonl'}]\naugment_cache: ~/cache\n")
    assert _script().load_config(str(config), [])["augment_cache"] == str(tmp_path / "cache")


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads lr: 3e-5 as a string, which crashed the cosine schedule with a TypeError."""
    config = tmp_path / "cfg.yaml"
    config.write_text("lr: 1e-4\nweights: {lm: 1.0, kl: 5e-2}\n")
    cfg = _script().load_config(str(config), ["warmup=2E+1"])
    assert cfg["lr"] == 1e-4 and cfg["weights"]["kl"] == 0.05 and cfg["warmup"] == 20.0
    assert _script().load_config(str(config), ["lr=3e-5", "out=runs/1e-5x"])["out"] == "runs/1e-5x"


def test_bad_yaml_names_file_and_line(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("lr: 1e-4\nweights: {lm: 1.0\n")
    proc = subprocess.run([sys.executable, str(ROOT / "training" / "train_hypernet.py"), str(config)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{config}:3: not valid YAML" in proc.stderr
    config.write_text("lr: 1e-4\nsteps: 10\nweights: {lm: 1.0, kl: 0.5, lm: 0.0}\n")
    with pytest.raises(SystemExit, match=r"cfg.yaml:3: not valid YAML \(key 'lm' given twice\)"):
        _script().load_config(str(config), [])
    config.write_text("lr: 1e-4\nsteps: 10\nlr: 3e-4\n")
    with pytest.raises(SystemExit, match=r"cfg.yaml:3: not valid YAML \(key 'lr' given twice\)"):
        _script().load_config(str(config), [])


@pytest.mark.parametrize("config_text, overrides, message", [
    ("steps: 0\n", [], "steps must be at least 1, got 0"),
    ("", ["steps=abc"], "cfg.yaml with steps=abc: steps must be an integer, got 'abc'"),
    ("", ["docs_per_step=true"], "docs_per_step must be an integer, got True"),
    ("", ["weights=3"], "weights must be a mapping, got 3"),
    ("", ["lr=0"], "lr must be positive"),
    ("weights: {lm: 1.0, kll: 1.0}\n", [], "unknown objective weights.kll"),
    ("weights: {lm: -1.0}\n", [], "weights.lm must be a finite number >= 0"),
    ("weights: {lm: .inf}\n", [], "weights.lm must be a finite number >= 0"),
    ("weights: {lm: 0.0, kl: 0}\n", [], "every objective's weight is 0 (or none is given): the run would train nothing"),
    ("weights: {}\n", [], "every objective's weight is 0"),
    ("", ["alpha=0"], "with alpha=0: alpha must be positive, got 0"),
    ("", ["lr=.inf"], "lr must be a finite number, got inf"),
    ("", ["alpha=.nan"], "alpha must be a finite number, got nan"),
    ("", ["seed=-1"], "seed must be from 0 to 2**32 - 1, got -1"),
    ("", ["weight_decay=-0.5"], "weight_decay must be at least 0, got -0.5"),
    ("", ["context_lr_scale=-1"], "context_lr_scale must be at least 0, got -1"),
    ("", ["rank_lr_scale=-0.5"], "rank_lr_scale must be at least 0, got -0.5"),
    ("", ["contrast_margin=-3"], "contrast_margin must be at least 0, got -3"),
    # a mistake on the command line is named there, not in the file
    ("steps: 5\n", ["stpes=10"], "override 'stpes=10': unknown config key 'stpes'"),
    ("", ["weights.lm=0.5"], "unknown config key 'weights.lm' (a mapping is given whole: weights={...})"),
    ("stpes: 10\n", [], "cfg.yaml: unknown config keys ['stpes']"),
    ("weights: {lm: 1.0, recon: 1.0}\n", [], "the recon objective reads exact adapters: give recon_store"),
    ("[1, 2]\n", [], "a config is a mapping of keys to values, got list"),
    ("weights: {lm: 1.0, spread: 1.0}\n", ["spread_target=0.8"], "at rank 2 that must be above 0 and at most 0.707, got 0.8"),
    ("weights: {lm: 1.0, spread: 1.0}\nspread_target: 0\n", [], "must be above 0"),
    ("weights: {lm: 1.0, spread: 1.0}\nrank: 1\n", [], "the spread objective parts an adapter's ranks; at rank 1 there is one"),
    # keys unset by default are typed and ranged when set, before a minute of model loading
    ("", ["max_minutes=abc"], "max_minutes must be a number, got 'abc'"),
    ("", ["snapshot_every=abc"], "snapshot_every must be an integer, got 'abc'"),
    ("", ["model=5"], "model must be a string, got 5"),
    ("", ["max_docs=-1"], "max_docs must be at least 1, got -1"),
    ("", ["read_rank=0"], "read_rank must be at least 1, got 0"),
    ("", ["retrieved_per_step=-1"], "retrieved_per_step must be at least 0, got -1"),
    ("", ["skip_first_questions=-1"], "skip_first_questions must be at least 0, got -1"),
    ("", ["heldout_pct=150"], "heldout_pct must be a percentage from 0 to 99, got 150"),
    ("", ["embedding=sentense"], "unknown embedding 'sentense'"),
    ("data: [/nonexistent/q.jsonl]\n", [], "data: /nonexistent/q.jsonl is not a file"),
    ("passages: [3]\npassages_per_step: 2\nweights: {lm: 1.0, doc: 1.0}\n", [], "passages is a list of file paths, got 3"),
])
def test_config_types_ranges_and_objective_names_are_checked(tmp_path, config_text, overrides, message):
    config = tmp_path / "cfg.yaml"
    config.write_text(config_text)
    with pytest.raises(SystemExit, match=re.escape(message)):
        _script().load_config(str(config), overrides)


def test_missing_config_and_bare_override_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="cannot read the config"):
        _script().load_config(str(tmp_path / "none.yaml"), [])
    (tmp_path / "latin1.yaml").write_bytes("note: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SystemExit, match=r"latin1.yaml: not UTF-8 text \(byte 9\)"):
        _script().load_config(str(tmp_path / "latin1.yaml"), [])
    (tmp_path / "cfg.yaml").write_text("lr: 1.0e-4\n")
    with pytest.raises(SystemExit, match="write key=value"):
        _script().load_config(str(tmp_path / "cfg.yaml"), ["steps"])
    assert _script().load_config(str(tmp_path / "cfg.yaml"), ["steps=3", "alpha=16"])["alpha"] == 16


@pytest.mark.parametrize("config", sorted((ROOT / "training" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid_and_say_when_their_start_is_retired(config):
    """Types, ranges and objective names of every recipe in training/configs (its data files and
    start checkpoint are checked when it runs: ../shared/data is not everywhere)."""
    script = _script()
    cfg = json.loads(json.dumps(script.DEFAULTS)) | script._yaml(config.read_text(), str(config))
    assert set(cfg) == set(script.DEFAULTS)
    script._check_types(cfg, str(config))
    if cfg["init_from"] and not (ROOT / cfg["init_from"]).is_dir():
        assert f"init_from below ({cfg['init_from']}) is retired" in config.read_text().splitlines()[0]


def test_answer_batch_starts_an_empty_prompt_from_a_start_token(tokenizer):
    """A tokenizer that adds no BOS (GPT-2) and an untitled passage give an empty prompt: the first
    answer token must be predicted from a real position, not from -1 (the row's last, padding)."""
    from hyperprag.hyper_objectives import answer_batch

    class NoSpecials:
        pad_token_id, bos_token_id, eos_token_id = tokenizer.pad_token_id, None, 7

        def __call__(self, text, **kwargs):
            return tokenizer(text, add_special_tokens=False)

        def decode(self, ids):
            return tokenizer.decode(ids)

    batch = answer_batch(NoSpecials(), ["", "Title:"], ["Pell Okonjo rowed", "x"])
    assert int(batch.input_ids[0, 0]) == 7 and int(batch.positions.min()) == 0
    assert batch.positions[batch.rows == 0].tolist() == list(range(int((batch.rows == 0).sum())))
    NoSpecials.eos_token_id = None
    with pytest.raises(ValueError, match="neither"):
        answer_batch(NoSpecials(), [""], ["x"])


def test_a_warm_start_adding_row_biases_and_b_gains_keeps_b_and_moves_a_by_the_row_biases(tmp_path, tokenizer):
    """A checkpoint without A's row biases and B's read gains starts a run that adds them with its
    B exactly as it was (gains of 1) and its A rows moved by row biases that sum to zero over the
    rows: the network starts where the checkpoint was, give or take the parted rows."""
    sys.path.insert(0, str(ROOT / "training"))
    from conftest import tiny_model
    from train_hypernet import warm_start

    from hyperprag.embeddings import build_source

    model = tiny_model("gemma3_text")
    src = build_source("token-seq", model, tokenizer)
    kw = {"hidden": 32, "tie_reads": True, "copy_tokens": True, "read_rank": 8}
    torch.manual_seed(0)
    old = HyperEncoder.create(model, src, **kw)
    with torch.no_grad():
        for p in old.hypernet.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    old.save_pretrained(tmp_path / "old")
    new = HyperEncoder.create(model, src, row_bias=True, b_gain=True, **kw)
    warm_start(new, str(tmp_path / "old"), model, tokenizer, src)
    assert all(torch.equal(g, torch.ones_like(g)) for g in new.hypernet.b_read_gain.values())
    emb = src.embed(["The Glass Regatta is rowed on Lake Ennisar.", "Kelmash is a barley stew."])
    with torch.no_grad():
        before, after = old.hypernet.eval()(emb), new.hypernet.eval()(emb)
    for role, (a, b) in after.items():
        bias = new.hypernet.a_row_bias[role]
        assert torch.allclose(bias.sum(1), torch.zeros(()), atol=1e-6) and bias.abs().max() > 0
        assert torch.allclose(b, before[role][1], atol=1e-6)
        assert torch.allclose(a, before[role][0] + bias, atol=1e-5)
