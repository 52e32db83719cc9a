import json
import re

import pytest
import torch

from conftest import ARCHS, tiny_model
from hyperprag.adapter import AdapterMismatchError
from hyperprag.data import Passage
from hyperprag.hyper_encoder import HyperEncoder
from hyperprag.inject import inject
from hyperprag.models import find_ffn_targets

DOCS = [Passage("A", "The Glass Regatta is rowed on Lake Ennisar."), Passage("B", "Kelmash is a barley stew."),
        Passage("C", "Brindlewood Library holds the Amberlin Codex.")]


class HashSource:
    """A deterministic fake embedding: fast, and different for every text."""
    id, dim = "fake:hash", 16

    def embed(self, texts):
        rows = []
        for t in texts:
            g = torch.Generator().manual_seed(sum(map(ord, t)))
            rows.append(torch.randn(self.dim, generator=g))
        return torch.stack(rows)


@pytest.mark.parametrize("arch", ARCHS)
def test_generated_adapters_have_every_target_at_exact_shapes(arch):
    model = tiny_model(arch)
    enc = HyperEncoder.create(model, HashSource(), rank=2, alpha=32, hidden=32)
    adapters = enc.encode(DOCS)
    assert len(adapters) == 3
    for ad in adapters:
        assert ad.rank == 2 and ad.scaling == 16.0 and ad.encoder == "hyper"
        for t in find_ffn_targets(model):
            a, b = ad.factors[t.name]
            assert a.shape == (2, t.in_features) and b.shape == (t.out_features, 2)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with inject(model, adapters[0]):
            assert not torch.equal(model(input_ids=ids).logits, base)


def test_different_documents_get_different_adapters():
    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=32)
    a, b, _ = enc.encode(DOCS)
    name = next(iter(a.factors))
    assert not torch.allclose(a.delta(name), b.delta(name))


def test_head_multiplier_scales_only_the_document_dependent_part():
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    targets = find_ffn_targets(tiny_model())
    emb = HashSource().embed(["one", "two"])
    nets = {}
    for m in (1.0, 0.25, 0.0):
        torch.manual_seed(0)
        nets[m] = HyperNetwork(HyperNetConfig.from_targets(targets, 16, hidden=32, head_multiplier=m))
    with torch.no_grad():
        out = {m: net(emb) for m, net in nets.items()}
        for role, (a1, b1) in out[1.0].items():
            a0, b0 = out[0.0][role]
            assert torch.equal(a0[0], a0[1]) and torch.equal(b0[0], b0[1])  # only the bias is left
            aq, bq = out[0.25][role]
            assert torch.allclose(aq - a0, (a1 - a0) * 0.25, atol=1e-6)
            assert torch.allclose(bq - b0, (b1 - b0) * 0.25, atol=1e-6)


def test_centred_hypernet_removes_the_common_part(tmp_path):
    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=32, center=True)
    net = enc.hypernet
    emb = HashSource().embed([d.text for d in DOCS])
    net.train()
    for _, b in net(emb).values():  # training: the batch's mean B is subtracted
        assert torch.allclose(b.mean(0), torch.zeros_like(b[0]), atol=1e-6)
    with pytest.raises(ValueError, match="at least two documents"):
        net(emb[:1])
    net.eval()
    net.set_center([emb[:2], emb[2:]])  # in batches, as the recipe gives a corpus
    for _, b in net(emb).values():  # inference: the stored mean over the "training" documents
        assert torch.allclose(b.mean(0), torch.zeros_like(b[0]), atol=1e-6)
    x, y, _ = enc.encode(DOCS)
    name = next(iter(x.factors))
    assert x.delta(name).abs().sum() > 0 and not torch.allclose(x.delta(name), y.delta(name))
    enc.save_pretrained(tmp_path / "c")
    assert sorted(f.name for f in (tmp_path / "c").iterdir()) == ["config.json", "model.safetensors"]  # no .tmp left
    loaded = HyperEncoder.from_pretrained(tmp_path / "c", tiny_model(), source=HashSource())
    assert torch.allclose(loaded.encode(DOCS[:1])[0].factors[name][1], x.factors[name][1], atol=1e-6)
    net.train()  # left in training mode by a caller: encode still gives each document its own adapter
    assert torch.allclose(enc.encode(DOCS[:1])[0].factors[name][1], x.factors[name][1], atol=1e-6) and net.training


def test_batched_encode_equals_one_by_one():
    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=32)
    batched = enc.encode(DOCS)
    single = [enc.encode([d])[0] for d in DOCS]
    for x, y in zip(batched, single):
        for name in x.factors:
            assert torch.allclose(x.factors[name][0], y.factors[name][0], atol=1e-6)
            assert torch.allclose(x.factors[name][1], y.factors[name][1], atol=1e-6)


def test_an_adapter_from_a_batch_holds_its_own_documents_factors_only():
    """Views into the batch's tensors would keep every document's factors alive for as long as any
    one adapter is kept (a result cache, a merged top-k): 32x an adapter's memory at 32 documents."""
    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=32)
    for adapter in enc.encode(DOCS):
        factors = [t for pair in adapter.factors.values() for t in pair]
        held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in factors}
        assert sum(held.values()) == sum(t.numel() * t.element_size() for t in factors)
        assert all(t.is_contiguous() for t in factors)


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    enc = HyperEncoder.create(model, HashSource(), hidden=32)
    enc.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = HyperEncoder.from_pretrained(tmp_path, model, source=HashSource())
    assert back.key == enc.key
    for x, y in zip(enc.encode(DOCS), back.encode(DOCS)):
        name = next(iter(x.factors))
        assert torch.equal(x.factors[name][1], y.factors[name][1])


def test_a_loaded_hypernetwork_sits_on_its_models_device(tmp_path):
    HyperEncoder.create(tiny_model(), HashSource(), hidden=32).save_pretrained(tmp_path)
    with torch.device("meta"):  # a device other than the CPU the checkpoint loads onto
        model = tiny_model()
    back = HyperEncoder.from_pretrained(tmp_path, model, source=HashSource())
    assert {p.device.type for p in back.hypernet.parameters()} == {"meta"}


def test_loading_on_another_model_names_both(tmp_path):
    HyperEncoder.create(tiny_model("llama"), HashSource(), hidden=32).save_pretrained(tmp_path)
    with pytest.raises(AdapterMismatchError, match="'tiny-llama', not 'tiny-qwen2'"):
        HyperEncoder.from_pretrained(tmp_path, tiny_model("qwen2"), source=HashSource())


def test_loading_with_another_embedder_names_both(tmp_path):
    class Other(HashSource):
        id = "sentence:other"

    HyperEncoder.create(tiny_model(), HashSource(), hidden=32).save_pretrained(tmp_path)
    with pytest.raises(AdapterMismatchError, match="'fake:hash', not 'sentence:other'"):
        HyperEncoder.from_pretrained(tmp_path, tiny_model(), source=Other())


def test_loading_on_other_shapes_is_refused(tmp_path):
    from transformers import LlamaConfig, AutoModelForCausalLM

    HyperEncoder.create(tiny_model(), HashSource(), hidden=32).save_pretrained(tmp_path)
    wider = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                                                         num_attention_heads=4, num_key_value_heads=2,
                                                         vocab_size=100))
    wider.hyperprag_model_id = "tiny-llama"
    with pytest.raises(AdapterMismatchError, match=r"other FFN modules than 'tiny-llama' has: checkpoint .* model .*96"):
        HyperEncoder.from_pretrained(tmp_path, wider, source=HashSource())


def test_a_directory_that_is_no_checkpoint_is_refused_in_one_line(tmp_path):
    from hyperprag.errors import HyperpragError

    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 32}')  # a model's config
    with pytest.raises(HyperpragError, match="not a hypernetwork checkpoint .*lacks base_model"):
        HyperEncoder.from_pretrained(tmp_path, tiny_model(), source=HashSource())
    HyperEncoder.create(tiny_model(), HashSource(), hidden=32).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(HyperpragError, match="has a config.json but no model.safetensors"):
        HyperEncoder.from_pretrained(tmp_path, tiny_model(), source=HashSource())
    # damaged weights, or weights of another config, are named in one line, not a traceback
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors" * 10)
    with pytest.raises(HyperpragError, match="model.safetensors does not hold the weights its config.json"):
        HyperEncoder.from_pretrained(tmp_path, tiny_model(), source=HashSource())
    from safetensors.torch import save_file
    save_file(HyperEncoder.create(tiny_model(), HashSource(), hidden=48).hypernet.state_dict(),
              str(tmp_path / "model.safetensors"))
    with pytest.raises(HyperpragError, match="does not hold the weights .*size mismatch"):
        HyperEncoder.from_pretrained(tmp_path, tiny_model(), source=HashSource())
    # a hand-edited config.json of the wrong shape
    good = json.loads((tmp_path / "config.json").read_text())
    for key, value, message in [("hypernet", "oops", "'hypernet' must be a dict, got 'oops'"),
                                ("targets", None, "'targets' must be a list, got None"),
                                ("hypernet", {"hidden": 32}, "'hypernet' has no 'roles' mapping")]:
        (tmp_path / "config.json").write_text(json.dumps({**good, key: value}))
        with pytest.raises(HyperpragError, match=re.escape(f"{tmp_path}/config.json: {message}")):
            HyperEncoder.from_pretrained(tmp_path, tiny_model(), source=HashSource())


def test_embedding_sources_real_minilm_and_hidden_states(tokenizer):
    from hyperprag.embeddings import HiddenStateEmbedding, SentenceEmbedding

    st = SentenceEmbedding()
    assert st.dim == 384 and st.embed(["a", "b"]).shape == (2, 384)
    hidden = HiddenStateEmbedding(tiny_model(), tokenizer)
    e = hidden.embed(["short", "a longer text here"])
    assert e.shape == (2, 64) and torch.allclose(e.norm(dim=-1), torch.ones(2))


def test_token_embedding_is_the_mean_of_each_documents_input_embeddings(tokenizer):
    from hyperprag.embeddings import TokenEmbedding, build_source

    model = tiny_model()
    src = build_source("tokens", model, tokenizer)
    assert isinstance(src, TokenEmbedding) and src.id == "tokens:tiny-llama" and src.dim == model.config.hidden_size
    texts = ["short", "a longer text here", "short"]
    e = src.embed(texts)
    ids = tokenizer("a longer text here", add_special_tokens=False)["input_ids"]
    expected = torch.nn.functional.normalize(model.get_input_embeddings().weight[ids].mean(0), dim=0)
    assert torch.allclose(e[1], expected, atol=1e-6)
    # Batched lookup keeps documents apart, and the hypernetwork is pinned to this source.
    assert torch.equal(e[0], e[2]) and not torch.allclose(e[0], e[1])
    assert torch.allclose(src.embed(["a longer text here"])[0], e[1], atol=1e-6)


def test_stacked_factors_give_the_merged_sum_of_each_sets_adapters():
    from hyperprag.hyper_objectives import stacked_factors
    from hyperprag.merge import merge_adapters

    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=32)
    adapters = enc.encode(DOCS)
    with torch.no_grad():
        generated = enc.hypernet(HashSource().embed([d.text for d in DOCS]))
    sets = torch.tensor([[0, 2], [1, 0], [2, 1]])
    factors = stacked_factors(generated, enc.targets, sets)
    s = enc.hypernet.config.scaling
    for row, members in enumerate(sets.tolist()):
        merged = merge_adapters([adapters[i] for i in members])
        for t in enc.targets:
            a, b = factors[t.name]
            assert torch.allclose(s * b[row] @ a[row], merged.delta(t.name), atol=1e-6)
    # Retrieved sets of different sizes share a batch: -1 pads a set, adds nothing to the sum and
    # does not count in the mean (the hypernetwork's own merge at inference).
    ragged = torch.tensor([[0, 2, -1], [1, 0, 2]])
    for method in ("sum", "mean"):
        factors = stacked_factors(generated, enc.targets, ragged, method)
        for row, members in enumerate(ragged.tolist()):
            merged = merge_adapters([adapters[i] for i in members if i >= 0], method)
            for t in enc.targets:
                a, b = factors[t.name]
                assert torch.allclose(s * b[row] @ a[row], merged.delta(t.name), atol=1e-6)


def test_a_retrieved_set_of_only_padding_merges_to_the_zero_adapter_under_the_mean():
    """A question whose retrieval found nothing has a set of -1 only: under the mean it must get the
    zero delta (no document, nothing to average), not 0/0 factors that turn the batch's loss to nan."""
    from hyperprag.hyper_objectives import stacked_factors
    from hyperprag.models import FFNTarget

    g = torch.Generator().manual_seed(0)
    generated = {"up": (torch.randn(2, 1, 2, 6, generator=g), torch.randn(2, 1, 5, 2, generator=g))}
    targets = [FFNTarget("layers.0.up", 0, "up", 6, 5)]
    sets = torch.tensor([[1, -1], [-1, -1]])
    a, b = stacked_factors(generated, targets, sets, "mean")["layers.0.up"]
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert torch.equal(b[1] @ a[1], torch.zeros(5, 6))
    ga, gb = generated["up"]
    assert torch.allclose(b[0] @ a[0], gb[1, 0] @ ga[1, 0], atol=1e-6)  # one document: its own delta


def test_answer_losses_are_each_answers_own_mean(tokenizer):
    from hyperprag.hyper_objectives import answer_batch, answer_losses, lm_loss

    batch = answer_batch(tokenizer, ["Q: one?", "Q: two, longer?", "Q: three?"], ["a", "bb cc dd", "e f"])
    logits = torch.randn(len(batch.targets), len(tokenizer), generator=torch.Generator().manual_seed(0))
    ce = torch.nn.functional.cross_entropy(logits, batch.targets, reduction="none")
    per = answer_losses(logits, batch)
    assert per.shape == (3,)
    for i in range(3):
        assert torch.allclose(per[i], ce[batch.rows == i].mean())
    counts = torch.bincount(batch.rows).float()
    assert torch.allclose((per * counts).sum() / counts.sum(), lm_loss(logits, batch))  # the batch mean, re-weighted


def test_answer_margin_is_a_hinge_per_answer_not_on_the_batch_mean(tokenizer):
    from hyperprag.hyper_objectives import answer_batch, answer_margin

    batch = answer_batch(tokenizer, ["Q: one?", "Q: two?"], ["a", "b"])
    assert batch.rows.tolist() == [0, 1]
    uniform = torch.zeros(2, len(tokenizer))            # every answer at log V nats
    own = uniform.clone()
    own[0, batch.targets[0]] = 50.0                      # the first answered surely, the second not at all
    # Together the own adapters win by half of log V nats, over the 0.5 margin: a batch-mean hinge is 0.
    # Per answer the second gains nothing and owes the whole margin.
    assert torch.allclose(answer_margin(own, uniform, batch, 0.5), torch.tensor(0.25), atol=1e-4)
    assert answer_margin(uniform, own, batch, 0.5) > 1.0   # the wrong adapters answering better costs more


def test_sibling_margin_compares_first_tokens_of_answers_of_the_same_document(tokenizer):
    import random

    from hyperprag.hyper_objectives import answer_batch, sibling_first_tokens, sibling_margin

    answers = ["Tamsin Orle", "green", "1911"]
    siblings = [["green", "Tamsin Orle"], ["green"], ["Tamsin Orle"]]  # the second has no other answer
    sib = sibling_first_tokens(tokenizer, answers, siblings, random.Random(0))
    first = [tokenizer(f" {a}\n", add_special_tokens=False)["input_ids"][0] for a in answers]
    assert sib.tolist() == [first[1], -1, first[0]]
    batch = answer_batch(tokenizer, ["Q: who?", "Q: colour?", "Q: year?"], answers)
    logits = torch.randn(len(batch.targets), len(tokenizer), generator=torch.Generator().manual_seed(0))
    starts = [int((batch.rows == i).nonzero()[0]) for i in range(3)]
    logp = torch.log_softmax(logits[starts], -1)
    by_hand = [torch.relu(0.5 - (logp[i, first[i]] - logp[i, sib[i]])) for i in (0, 2)]
    assert torch.allclose(sibling_margin(logits, batch, sib, 0.5), torch.stack(by_hand).mean())
    # The right answer far ahead of its sibling meets the margin: nothing left to push.
    for i in (0, 2):
        logits[starts[i], first[i]] += 100.0
    assert sibling_margin(logits, batch, sib, 0.5) == 0
    assert sibling_margin(logits, batch, torch.full((3,), -1), 0.5) == 0  # no siblings at all


def test_generated_adapters_are_averaged_by_default_and_trained_ones_summed(tmp_path):
    from hyperprag.evaluate import merged_adapters
    from hyperprag.exact import ExactEncoder
    from hyperprag.store import AdapterStore

    assert ExactEncoder.merge == "sum" and HyperEncoder.merge == "mean"
    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=32)
    store = AdapterStore(tmp_path)
    [mean] = merged_adapters([DOCS[:2]], store, enc, progress=False)
    [total] = merged_adapters([DOCS[:2]], store, enc, "sum", progress=False)
    assert mean.extra["method"] == "mean" and total.extra["method"] == "sum"
    name = next(iter(mean.factors))
    assert torch.allclose(mean.delta(name) * 2, total.delta(name), atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2"])
def test_token_sequence_source_gets_the_attention_reader_at_exact_shapes(arch, tokenizer):
    from hyperprag.embeddings import build_source

    model = tiny_model(arch)
    src = build_source("token-seq", model, tokenizer)
    emb = src.embed(["short", "a longer text here"])
    ids = tokenizer("a longer text here", add_special_tokens=False)["input_ids"]
    assert emb.shape == (2, len(ids), model.config.hidden_size)
    # What the model itself feeds its first layer (Gemma's embedding module scales the table).
    assert torch.equal(emb[1], model.get_input_embeddings()(torch.tensor(ids)).detach())
    short = len(tokenizer("short", add_special_tokens=False)["input_ids"])
    assert emb[0, short:].abs().sum() == 0  # padding rows are zeros
    enc = HyperEncoder.create(model, src, rank=2, alpha=32, hidden=32)
    assert enc.hypernet.config.reader == "attention"
    for ad in enc.encode(DOCS):
        for t in find_ffn_targets(model):
            a, b = ad.factors[t.name]
            assert a.shape == (2, t.in_features) and b.shape == (t.out_features, 2)
    with pytest.raises(ValueError, match="the attention reader takes 3-d embeddings"):
        enc.hypernet(torch.randn(2, model.config.hidden_size))


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_hidden_sequence_source_gives_each_tokens_hidden_state_after_its_layer(arch, tokenizer):
    """Rows are the model's own hidden states after ``layer`` layers (the run stops there), lined
    up with the document's tokens (the BOS token read, not returned); padding rows are zeros, a
    batch equals one by one, and the id names the layer, so a checkpoint refuses another."""
    from hyperprag.embeddings import build_source

    import copy

    model = tiny_model(arch)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.bos_token = "[CLS]"  # as Gemma's tokenizer has one (MiniLM's has none)
    src = build_source("hidden-seq:x:1", model, tokenizer)
    assert src.id.endswith(":1") and src.per_token and src.dim == model.config.hidden_size
    texts = ["short", "a longer text here"]
    emb = src.embed(texts)
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        full = torch.tensor([[tokenizer.bos_token_id] + ids])
        with torch.no_grad():
            want = model(input_ids=full, output_hidden_states=True).hidden_states[1][0, 1:]
        assert torch.allclose(emb[i, : len(ids)], want, atol=1e-5)
        assert emb[i, len(ids):].abs().sum() == 0
        assert torch.allclose(src.embed([text])[0], want, atol=1e-5)
    deeper = build_source("hidden-seq:x:2", model, tokenizer).embed(texts)
    assert not torch.allclose(deeper, emb)
    # hidden-seq+words: the same hidden states joined to the words' own embeddings, each at unit RMS.
    both = build_source("hidden-seq+words:x:1", model, tokenizer)
    assert both.dim == 2 * src.dim and both.id.startswith("hidden-seq+words:")
    joined, words = both.embed(texts), build_source("token-seq", model, tokenizer).embed(texts)
    for part, plain in ((joined[..., : src.dim], emb), (joined[..., src.dim:], words)):
        rms = plain.square().mean(-1, keepdim=True).sqrt()
        assert torch.allclose(part, torch.where(rms > 0, plain / rms.clamp_min(1e-12), 0.0), atol=1e-5)
    with pytest.raises(ValueError, match="layer must be between 1 and"):
        build_source(f"hidden-seq:x:{model.config.num_hidden_layers + 1}", model, tokenizer)


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    rms = x.square().mean(-1, keepdim=True).sqrt()
    return torch.where(rms > 0, x / rms.clamp_min(1e-12), 0.0)


@pytest.mark.parametrize("bos", [True, False])
def test_key_value_sources_pair_each_word_with_what_comes_before_it(tokenizer, bos):
    """``hidden-kv``: a word's key is the hidden state of the position before it (BOS for the first
    word; zeros without a BOS); ``token-kv``: the mean embedding of the ``window`` words before it.
    Each part at unit RMS, the word itself second; padding rows zeros; a batch equals one by one."""
    from hyperprag.embeddings import build_source

    import copy

    model = tiny_model("gemma3_text")
    tokenizer = copy.deepcopy(tokenizer)
    if bos:
        tokenizer.bos_token = "[CLS]"
    d = model.config.hidden_size
    hidden, tokens = build_source("hidden-kv:x:1", model, tokenizer), build_source("token-kv:x:2", model, tokenizer)
    assert hidden.id.startswith("hidden-kv:") and tokens.id.endswith(":2") and hidden.dim == tokens.dim == 2 * d
    texts = ["short", "a longer text here"]
    got_h, got_t = hidden.embed(texts), tokens.embed(texts)
    words = build_source("token-seq", model, tokenizer).embed(texts)
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        n = len(ids)
        with torch.no_grad():
            states = model(input_ids=torch.tensor([[tokenizer.bos_token_id] * bos + ids]),
                           output_hidden_states=True).hidden_states[1][0]
        key_h = states[:n] if bos else torch.cat([torch.zeros(1, d), states[: n - 1]])
        key_t = torch.stack([words[i, max(0, j - 2): j].mean(0) if j else torch.zeros(d) for j in range(n)])
        for got, key in ((got_h, key_h), (got_t, key_t)):
            assert torch.allclose(got[i, :n, :d], _unit_rms(key), atol=1e-5)
            assert torch.allclose(got[i, :n, d:], _unit_rms(words[i, :n]), atol=1e-5)
            assert got[i, n:].abs().sum() == 0
        assert torch.allclose(hidden.embed([text])[0], got_h[i, :n], atol=1e-5)
        assert torch.allclose(tokens.embed([text])[0], got_t[i, :n], atol=1e-5)


def test_tied_state_starts_each_query_as_the_mean_of_the_six_it_replaces(tokenizer):
    """Tying an untied reader's weights keeps everything but the queries, and each (layer, rank)'s
    query is the mean of its (factor x role) queries: slot + layer + role embeddings."""
    from hyperprag.embeddings import build_source
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    model = tiny_model("gemma3_text")
    src = build_source("token-seq", model, tokenizer)
    cfg = HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, hidden=32, reader="attention", copy_tokens=True)
    untied = HyperNetwork(cfg)
    with torch.no_grad():
        for p in untied.parameters():
            p.add_(torch.randn_like(p))
    tied = HyperNetwork(HyperNetConfig(**{**cfg.to_dict(), "tie_reads": True}))
    tied.load_state_dict(HyperNetwork.tied_state(untied.state_dict(), cfg.rank))
    slots = untied.slot_embed.view(2, cfg.rank, -1)
    for layer in range(cfg.num_layers):
        for rank in range(cfg.rank):
            six = [slots[f, rank] + untied.layer_embed.weight[layer] + untied.role_embed[r] for f in range(2) for r in cfg.roles]
            assert torch.allclose(tied.slot_embed[rank] + tied.layer_embed.weight[layer], torch.stack(six).mean(0), atol=1e-6)
    assert torch.equal(tied.read_b["down"].weight, untied.read_b["down"].weight)
    assert torch.equal(tied.copy_gain["down_b"], untied.copy_gain["down_b"])


@pytest.mark.parametrize("kw", [{}, {"copy_tokens": True, "read_rank": 4}, {"copy_tokens": True, "context_kernel": 5},
                                {"copy_tokens": True, "tie_reads": True}])
def test_attention_reader_ignores_padding_and_reads_every_token(tmp_path, tokenizer, kw):
    """Batched encode equals one-by-one although shorter documents are padded, the stored mean B is
    subtracted exactly, and changing one word changes the adapter."""
    from hyperprag.embeddings import build_source

    model = tiny_model()
    enc = HyperEncoder.create(model, build_source("token-seq", model, tokenizer), hidden=32, center=True, **kw)
    net = enc.hypernet
    with torch.no_grad():  # a trained net, not the near-uniform init, so that attention matters
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        emb = enc.source.embed([d.text for d in DOCS])
        uncentred = net(emb)  # the stored means are still zero
        net.set_center([emb])
        for role, (a, b) in net(emb).items():
            assert torch.equal(a, uncentred[role][0])
            assert torch.allclose(b, uncentred[role][1] - getattr(net, f"b_mean_{role}"), atol=1e-6)
    batched = enc.encode(DOCS)
    for x, d in zip(batched, DOCS):
        y = enc.encode([d])[0]
        for name in x.factors:
            assert torch.allclose(x.factors[name][0], y.factors[name][0], atol=1e-5)
            assert torch.allclose(x.factors[name][1], y.factors[name][1], atol=1e-5)
    changed = enc.encode([Passage("A", DOCS[0].text.replace("Ennisar", "Orrun"))])[0]
    name = next(iter(changed.factors))
    assert not torch.allclose(changed.delta(name), batched[0].delta(name), atol=1e-6)
    enc.save_pretrained(tmp_path)
    back = HyperEncoder.from_pretrained(tmp_path, model, tokenizer)
    assert back.hypernet.config.reader == "attention" and back.source.id == "token-seq:tiny-llama"
    assert torch.equal(back.encode(DOCS[:1])[0].factors[name][1], batched[0].factors[name][1])


def test_copy_path_writes_the_attended_words_themselves(tokenizer):
    """With copy_tokens, a factor in the token vectors' space gets their unit mix times a gain that
    starts at 0: the same adapters as without it at init, and exactly the words (scaled to entries
    of order 1) when set."""
    from hyperprag.embeddings import build_source
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    model = tiny_model("gemma3_text")
    src = build_source("token-seq", model, tokenizer)
    targets = find_ffn_targets(model)
    torch.manual_seed(0)
    plain = HyperNetwork(HyperNetConfig.from_targets(targets, src.dim, hidden=32, reader="attention"))
    torch.manual_seed(0)
    net = HyperNetwork(HyperNetConfig.from_targets(targets, src.dim, hidden=32, reader="attention", copy_tokens=True))
    assert sorted(net.copy_gain) == ["down_b", "gate_a", "up_a"]  # the factors of the residual's size
    emb = src.embed([d.text for d in DOCS])
    with torch.no_grad():
        for (a0, b0), (a1, b1) in zip(plain(emb).values(), net(emb).values()):
            assert torch.equal(a0, a1) and torch.equal(b0, b1)
        net.copy_gain["down_b"].fill_(1.0)
        for p in (net.read_b["down"].weight, net.read_b["down"].bias, net.key.weight, net.key.bias):
            p.zero_()  # uniform attention, no learned part: B is the mean of the unit token vectors
        _, b = net(emb[:1])["down"]
        n = len(tokenizer(DOCS[0].text, add_special_tokens=False)["input_ids"])
        words = torch.nn.functional.normalize(emb[0, :n], dim=-1).mean(0) * src.dim ** 0.5
        assert torch.allclose(b[0, 0, :, 0], words, atol=1e-6)
    with pytest.raises(ValueError, match="copy_tokens needs the attention reader"):
        HyperNetwork(HyperNetConfig.from_targets(targets, src.dim, copy_tokens=True))


def test_read_bottleneck_starts_as_the_truncated_svd_of_a_full_network(tokenizer):
    """``load_factored`` puts a full network's read maps through a bottleneck: exact when the maps
    have at most that rank, and the closest map of that rank otherwise."""
    from hyperprag.embeddings import build_source
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    model = tiny_model("gemma3_text")
    src = build_source("token-seq", model, tokenizer)
    targets = find_ffn_targets(model)
    kw = dict(hidden=32, reader="attention", copy_tokens=True, center=True)
    full = HyperNetwork(HyperNetConfig.from_targets(targets, src.dim, **kw))
    with torch.no_grad():
        for p in full.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        for maps in (full.read_a, full.read_b):  # maps of rank 8, as a trained map is close to low-rank
            for lin in maps.values():
                lin.weight.copy_(torch.randn(lin.weight.shape[0], 8) @ torch.randn(8, lin.weight.shape[1]))
    emb = src.embed([d.text for d in DOCS])
    full.set_center([emb])
    fast = HyperNetwork(HyperNetConfig.from_targets(targets, src.dim, read_rank=8, **kw))
    assert fast.num_parameters() < full.num_parameters()
    fast.load_factored(full.state_dict())
    with torch.no_grad():
        for (a0, b0), (a1, b1) in zip(full.eval()(emb).values(), fast.eval()(emb).values()):
            assert a1.shape == a0.shape and b1.shape == b0.shape
            assert torch.allclose(a0, a1, atol=1e-4) and torch.allclose(b0, b1, atol=1e-4)
        lossy = HyperNetwork(HyperNetConfig.from_targets(targets, src.dim, read_rank=4, **kw))
        lossy.load_factored(full.state_dict())
        a0, a1 = full(emb)["down"][0], lossy.eval()(emb)["down"][0]
        assert not torch.allclose(a0, a1, atol=1e-4)
    with pytest.raises(ValueError, match="read_rank must be between 1 and the embedding size"):
        HyperNetwork(HyperNetConfig.from_targets(targets, src.dim, read_rank=src.dim, **kw))
    with pytest.raises(ValueError, match="load_factored loads into a network with read_rank set"):
        full.load_factored(full.state_dict())


def test_attention_readers_kept_queries_follow_every_weight_change(tokenizer):
    """The token-space queries are kept between calls without autograd: a load or an optimiser
    step must still change the output, and training must still reach the query weights."""
    from hyperprag.embeddings import build_source
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    model = tiny_model("gemma3_text")
    src = build_source("token-seq", model, tokenizer)
    cfg = HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, hidden=32, reader="attention",
                                      copy_tokens=True, read_rank=4)
    emb = src.embed([d.text for d in DOCS])
    net, other = HyperNetwork(cfg), HyperNetwork(cfg)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    with torch.inference_mode():
        net(emb)  # keeps the queries
        net.load_state_dict(other.state_dict())
        for (a0, b0), (a1, b1) in zip(other(emb).values(), net(emb).values()):
            assert torch.equal(a0, a1) and torch.equal(b0, b1)
    before = net(emb)["down"][1].detach()
    loss = sum(b.square().sum() for _, b in net(emb).values())
    loss.backward()
    assert net.slot_embed.grad.abs().sum() > 0 and net.key.weight.grad.abs().sum() > 0
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    with torch.no_grad():
        assert not torch.allclose(net(emb)["down"][1], before)


@pytest.mark.parametrize("centred,context,source,tied,keys,row_bias,b_gain", [
    (False, None, "token-seq", False, False, False, False), (True, None, "token-seq", False, False, True, True),
    (True, 3, "token-seq", False, False, False, False), (True, None, "hidden-seq+words:x:1", False, False, False, True),
    (True, None, "token-kv:x:2", True, False, False, False), (False, 3, "token-seq", True, False, True, True),
    (True, None, "hidden-kv:x:1", True, True, False, False), (False, None, "token-kv:x:2", False, True, False, False)])
def test_attention_reader_computes_its_definition(tokenizer, centred, context, source, tied, keys, row_bias, b_gain):
    """Each generated row against the reader written out plainly for one (role, factor, layer,
    rank): the normalised tokens get their neighbours' context (a per-channel weight for each
    offset in the window, nothing beyond the document's ends), then
    a query (slot + layer + role embeddings; tied reads: rank + layer, the same for every role and
    factor) attends over the keys of those tokens,
    the mix goes through the read map (times head_multiplier), the copy path adds the gain times
    the attended unit tokens, A rows get their own bias (row_bias), B columns read the bottleneck
    through their own gains (b_gain), and at inference the stored mean B is taken off. The forward pass
    folds all of this (queries split into parts, multiplier and mean in the maps' weights)."""
    from hyperprag.embeddings import build_source
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    model = tiny_model("gemma3_text")
    src = build_source(source, model, tokenizer)
    copy_dim = model.config.hidden_size if src.dim != model.config.hidden_size else None  # the words' part
    net = HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, hidden=32, reader="attention",
                                                   copy_tokens=True, read_rank=4, center=True, head_multiplier=0.5,
                                                   context_kernel=context, copy_dim=copy_dim, tie_reads=tied,
                                                   copy_keys=keys, row_bias=row_bias, b_gain=b_gain))
    emb = src.embed([d.text for d in DOCS])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        for buf in net.buffers():
            buf.normal_()
        net.train(not centred)
        out = net._generate(emb, centred)  # rows, before any batch centring
        slots = net.slot_embed.view(1 if tied else 2, net.config.rank, -1)
        for role, (fan_in, fan_out) in net.config.roles.items():
            for f, factor in enumerate("ab"):
                for layer, rank in [(0, 0), (1, 1)]:
                    if tied:
                        q = slots[0, rank] + net.layer_embed.weight[layer]
                    else:
                        q = slots[f, rank] + net.layer_embed.weight[layer] + net.role_embed[role]
                    for i, d in enumerate(DOCS):
                        n = len(tokenizer(d.text, add_special_tokens=False)["input_ids"])
                        toks = emb[i, :n]
                        x = net.token_norm(toks)
                        if context:
                            near = torch.zeros_like(x)
                            for j in range(n):
                                for o in range(context):
                                    if 0 <= j + o - context // 2 < n:
                                        near[j] += net.context.weight[:, 0, o] * x[j + o - context // 2]
                            x = x + near
                        w = ((net.key(x) @ q) / net.config.hidden ** 0.5).softmax(0)
                        read = getattr(net, f"read_{factor}")[role]
                        z = read[0].weight @ (w @ x)
                        if b_gain and factor == "b":
                            z = z * net.b_read_gain[role][layer, rank]
                        want = read[1].weight @ z * 0.5 + read[1].bias
                        if f"{role}_{factor}" in net.copy_gain:
                            words = toks[:, src.dim - copy_dim:] if copy_dim else toks
                            if keys and factor == "a":  # A rows copy the key, the part before the word
                                words = toks[:, : src.dim - copy_dim]
                            units = words / words.norm(dim=-1, keepdim=True).clamp_min(1e-12) * words.shape[-1] ** 0.5
                            want = want + net.copy_gain[f"{role}_{factor}"][layer, rank] * (w @ units)
                        if centred and factor == "b":
                            want = want - getattr(net, f"b_mean_{role}")[layer, :, rank]
                        if row_bias and factor == "a":
                            want = want + net.a_row_bias[role][layer, rank]
                        got = out[role][f][i, layer, rank]
                        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (role, factor, layer, rank, i)
    if context:
        with pytest.raises(ValueError, match="context_kernel must be odd"):
            HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, reader="attention",
                                                     context_kernel=4))
        with pytest.raises(ValueError, match="context_kernel needs the attention reader"):
            HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, context_kernel=3))
    if tied:
        with pytest.raises(ValueError, match="tie_reads needs the attention reader"):
            HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, tie_reads=True))
    if keys:
        assert {"gate_a", "up_a", "down_b"} == set(net.copy_gain)
        with pytest.raises(ValueError, match="it needs copy_dim"):
            HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, reader="attention",
                                                     copy_tokens=True, copy_keys=True))
    if copy_dim:
        with pytest.raises(ValueError, match="it needs copy_tokens"):
            HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, reader="attention",
                                                     copy_dim=copy_dim))


def test_a_missing_or_incomplete_checkpoint_says_which_and_where_retired_ones_went(tmp_path):
    from hyperprag.errors import HyperpragError

    with pytest.raises(HyperpragError, match="does not exist .*checkpoints/README.md"):
        HyperEncoder.from_pretrained(tmp_path / "gone", tiny_model(), source=HashSource())
    with pytest.raises(HyperpragError, match="not a hypernetwork checkpoint"):
        HyperEncoder.from_pretrained(tmp_path, tiny_model(), source=HashSource())


def test_a_missing_shipped_checkpoint_says_where_it_lives(tmp_path, monkeypatch):
    import hyperprag.hyper_encoder as he
    from hyperprag.errors import HyperpragError

    monkeypatch.setattr(he, "DEFAULT_CHECKPOINT", tmp_path / "gone")
    with pytest.raises(HyperpragError, match="only an editable install .* sees; pass --checkpoint"):
        HyperEncoder.from_pretrained(None, tiny_model(), source=HashSource())
    with pytest.raises(HyperpragError, match="does not exist"):
        HyperEncoder.from_pretrained(tmp_path / "other", tiny_model(), source=HashSource())


@pytest.mark.parametrize("source, kw", [("hash", {}), ("token-seq", {}), ("token-seq", {"center": True}),
                                        ("token-seq", {"copy_tokens": True, "read_rank": 4, "context_kernel": 5}),
                                        ("token-seq", {"copy_tokens": True, "tie_reads": True, "row_bias": True,
                                                       "b_gain": True})])
def test_every_trained_parameter_gets_a_gradient(tokenizer, source, kw):
    """Several training processes wrap the network in DistributedDataParallel, which fails on the
    second step if a parameter it is to train gets no gradient."""
    from hyperprag.embeddings import build_source

    model = tiny_model()
    src = HashSource() if source == "hash" else build_source(source, model, tokenizer)
    net = HyperEncoder.create(model, src, hidden=32, **kw).hypernet
    out = net(src.embed([d.text for d in DOCS]))
    sum((a ** 2).sum() + (b ** 2).sum() for a, b in out.values()).backward()
    idle = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert idle == []


def test_sibling_margin_reads_numbers_at_their_first_digit_not_the_space_before_them(tokenizer):
    import random

    from conftest import SpaceFirst
    from hyperprag.hyper_objectives import answer_batch, sibling_first_tokens, sibling_margin

    answers = ["1872 census", "1911 map"]
    tok = SpaceFirst(tokenizer, answers)  # both answers' first tokens decode as a space, as Gemma's " 1872"
    sib = sibling_first_tokens(tok, answers, [[answers[1]], [answers[0]]], random.Random(0))
    second = [tokenizer(f" {a}\n", add_special_tokens=False)["input_ids"][1] for a in answers]
    assert sib.tolist() == [second[1], second[0]]  # each other's first word, not -1 for a shared space
    batch = answer_batch(tok, ["Q: when?", "Q: when?"], answers)
    logits = torch.randn(len(batch.targets), len(tokenizer), generator=torch.Generator().manual_seed(0))
    at = [int((batch.rows == i).nonzero()[1]) for i in range(2)]  # the token after the space
    logp = torch.log_softmax(logits[at], -1)
    by_hand = [torch.relu(0.5 - (logp[i, second[i]] - logp[i, sib[i]])) for i in range(2)]
    assert torch.allclose(sibling_margin(logits, batch, sib, 0.5), torch.stack(by_hand).mean())


def test_attention_readers_kept_queries_follow_autocast(tokenizer):
    """Queries kept from a bf16 autocast call must not be reused by a full-precision one."""
    from hyperprag.embeddings import build_source
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    model = tiny_model("gemma3_text")
    src = build_source("token-seq", model, tokenizer)
    net = HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, hidden=32,
                                                   reader="attention")).eval()
    emb = src.embed([d.text for d in DOCS])
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(emb)
        after = net(emb)
    fresh = HyperNetwork(net.config)
    fresh.load_state_dict(net.state_dict())
    with torch.no_grad():
        for (a0, b0), (a1, b1) in zip(fresh.eval()(emb).values(), after.values()):
            assert a1.dtype == torch.float32 and torch.equal(a0, a1) and torch.equal(b0, b1)


def test_encoder_key_follows_weight_changes_and_the_config(tmp_path):
    """The key names what the store and the result caches hold: adapters of changed weights, or of
    the same weights at another alpha, must never be served under the old one."""
    import json

    from hyperprag.store import AdapterStore

    model = tiny_model()
    enc = HyperEncoder.create(model, HashSource(), hidden=32)
    store = AdapterStore(tmp_path / "store")
    first = enc.key
    old = store.get_or_encode(DOCS[:1], enc)[0]
    with torch.no_grad():
        for p in enc.hypernet.parameters():
            p.add_(1.0)
    assert enc.key != first
    new = store.get_or_encode(DOCS[:1], enc)[0]
    name = next(iter(new.factors))
    assert not torch.equal(old.factors[name][1], new.factors[name][1])
    assert torch.equal(new.factors[name][1], enc.encode(DOCS[:1])[0].factors[name][1])

    enc.save_pretrained(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    config["hypernet"]["alpha"] /= 8
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    (tmp_path / "b" / "model.safetensors").write_bytes((tmp_path / "a" / "model.safetensors").read_bytes())
    a = HyperEncoder.from_pretrained(tmp_path / "a", model, source=HashSource())
    b = HyperEncoder.from_pretrained(tmp_path / "b", model, source=HashSource())
    assert a.key == enc.key and b.key != a.key


def test_copy_dim_beyond_the_embedding_is_refused_when_built():
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    targets = find_ffn_targets(tiny_model("gemma3_text"))
    with pytest.raises(ValueError, match="copy_dim must be between 1 and the embedding's 32 channels"):
        HyperNetwork(HyperNetConfig.from_targets(targets, 32, hidden=32, reader="attention",
                                                 copy_tokens=True, copy_dim=64))
    with pytest.raises(ValueError, match="less one"):
        HyperNetwork(HyperNetConfig.from_targets(targets, 32, hidden=32, reader="attention",
                                                 copy_tokens=True, copy_dim=32, copy_keys=True))


def test_a_key_value_window_of_zero_is_refused_not_read_as_the_default(tokenizer):
    from hyperprag.embeddings import TokenKeyValue

    with pytest.raises(ValueError, match="got 0"):
        TokenKeyValue(tiny_model("gemma3_text"), tokenizer, window=0)


def test_hidden_sequence_default_layer_exists_on_a_two_layer_model(tokenizer):
    """The default layer is a third of the way up, but at least the first: on a two-layer model
    a third rounds to 0, which was refused as if the user had asked for it."""
    from hyperprag.embeddings import build_source

    model = tiny_model("llama")
    assert model.config.num_hidden_layers < 3
    assert build_source("hidden-seq", model, tokenizer).id.endswith(":1")


@pytest.mark.parametrize("reader", ["pooled", "attention"])
def test_a_fresh_network_starts_as_a_lora_does_a_random_and_b_zero(reader):
    """Were A near zero too, B's gradient (proportional to A) would vanish and nothing would train."""
    from hyperprag.exact import LoraTrainConfig
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    targets = find_ffn_targets(tiny_model())
    cfg = HyperNetConfig.from_targets(targets, 16, reader=reader, hidden=32)
    assert (cfg.rank, cfg.alpha) == (LoraTrainConfig().rank, LoraTrainConfig().alpha)  # the exact path's
    net = HyperNetwork(cfg)
    for role, (fan_in, _) in cfg.roles.items():
        if reader == "pooled":
            bias = net.heads[role].bias.detach()
            a_bias, b_bias = bias[: cfg.rank * fan_in], bias[cfg.rank * fan_in:]
        else:
            a_bias, b_bias = (net._output_of(m[role]).bias.detach() for m in (net.read_a, net.read_b))
        assert a_bias.abs().max() <= fan_in ** -0.5 and a_bias.abs().max() > 0.5 * fan_in ** -0.5
        assert torch.count_nonzero(b_bias) == 0
    bad = [targets[0], targets[0].__class__(targets[0].name + "x", 1, targets[0].role, 7, 9)]
    with pytest.raises(ValueError, match="different shapes across layers"):
        HyperNetConfig.from_targets(bad, 16)


@pytest.mark.parametrize("reader, row_bias", [("pooled", False), ("attention", False), ("attention", True)])
def test_a_fresh_networks_a_rows_start_apart_unless_the_attention_reader_shares_one_bias(tokenizer, reader, row_bias):
    """A rank-r adapter is r independent rank-1 pieces only if its A rows start apart (a LoRA's A is
    random). The attention reader's one A bias for every row makes them start as the same vector,
    and trained from there they stayed so (v8: rank-1 deltas); ``row_bias`` draws a bias per row."""
    from hyperprag.embeddings import build_source
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    model = tiny_model("gemma3_text")
    src = HashSource() if reader == "pooled" else build_source("token-seq", model, tokenizer)
    torch.manual_seed(0)
    net = HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), src.dim, reader=reader, hidden=32,
                                                   rank=4, row_bias=row_bias))
    with torch.no_grad():
        out = net(src.embed([d.text for d in DOCS]))
    for role, (a, _) in out.items():
        rows = torch.nn.functional.normalize(a, dim=-1)                    # (docs, layers, r, in)
        cos = (rows @ rows.mT).abs()                                        # every pair of rows
        off = cos[..., ~torch.eye(4, dtype=torch.bool)]
        if reader == "attention" and not row_bias:
            assert off.min() > 0.99, role
        else:
            assert off.max() < 0.9, role
        if row_bias:  # the shared bias starts at 0, the rows' own ones in a LoRA's A range
            fan_in = net.config.roles[role][0]
            assert torch.count_nonzero(net._output_of(net.read_a[role]).bias) == 0
            assert fan_in ** -0.5 >= net.a_row_bias[role].abs().max() > 0.5 * fan_in ** -0.5
    if row_bias:
        with pytest.raises(ValueError, match="row_bias needs the attention reader"):
            HyperNetwork(HyperNetConfig.from_targets(find_ffn_targets(model), 16, row_bias=True))


def test_an_empty_document_is_refused_and_the_key_names_the_embedding_source(tmp_path):
    from hyperprag.errors import HyperpragError
    from hyperprag.hyper_encoder import provenance_file

    class OtherSource(HashSource):
        id = "fake:other"

    torch.manual_seed(0)
    enc = HyperEncoder.create(tiny_model(), HashSource(), hidden=32)
    with pytest.raises(HyperpragError, match="document 'Blank' is empty"):
        enc.encode([Passage("Blank", "   ")])
    enc.save_pretrained(tmp_path / "run" / "final")
    other = HyperEncoder(enc.hypernet, OtherSource(), enc.base_model, enc.targets)
    assert other.key != enc.key  # the same weights read other embeddings: other adapters
    # a checkpoint's own provenance file before its run directory's (runs before session 25)
    run, final = tmp_path / "run", tmp_path / "run" / "final"
    for d in (run, final):
        (d / "heldout_hashes.json").write_text("[]")
    assert provenance_file(final, "heldout_hashes.json") == final / "heldout_hashes.json"
    (final / "heldout_hashes.json").unlink()
    assert provenance_file(final, "heldout_hashes.json") == run / "heldout_hashes.json"


def test_delta_distance_is_the_dense_distance_even_under_bf16_autocast():
    """The reconstruction objective's distance, in low-rank form, against ||s1 B1A1 - s2 B2A2||^2
    / ||s2 B2A2||^2 computed densely in fp64. Its Gram terms cancel when the two deltas are close:
    under bf16 autocast (a supported training setting) it came out 0 where it was 2e-3."""
    from hyperprag.hyper_objectives import delta_distance

    torch.manual_seed(0)
    a2, b2 = torch.randn(3, 2, 48), torch.randn(3, 40, 2)
    for noise in (0.5, 0.05, 0.01):
        a1, b1 = a2 + noise * torch.randn_like(a2), b2 + noise * torch.randn_like(b2)
        dense = ((2.0 * b1.double() @ a1.double() - 3.0 * b2.double() @ a2.double()).square().sum((-1, -2))
                 / (3.0 * b2.double() @ a2.double()).square().sum((-1, -2)))
        assert torch.allclose(delta_distance(a1, b1, 2.0, a2, b2, 3.0).double(), dense, rtol=1e-3)
        a1, b1 = a2 + noise * torch.randn_like(a2), b2 + noise * torch.randn_like(b2)
        dense = ((b1.double() @ a1.double() - b2.double() @ a2.double()).square().sum((-1, -2))
                 / (b2.double() @ a2.double()).square().sum((-1, -2)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = delta_distance(a1, b1, 1.0, a2, b2, 1.0)
        assert got.dtype == torch.float32 and torch.allclose(got.double(), dense, rtol=1e-2), (noise, got, dense)


def test_delta_distance_of_bf16_factors_is_computed_in_fp32():
    """Exact adapters can be stored in bf16 and the hypernetwork's factors come out in bf16 under
    autocast: with both sides bf16 and no autocast to turn off, the Gram terms must still be formed
    in fp32, or close deltas cancel to a distance that is mostly rounding."""
    from hyperprag.hyper_objectives import delta_distance

    torch.manual_seed(0)
    a2, b2 = torch.randn(3, 2, 48).bfloat16(), torch.randn(3, 40, 2).bfloat16()
    a1, b1 = ((x.float() + 0.01 * torch.randn(x.shape)).bfloat16() for x in (a2, b2))
    d1, d2 = b1.double() @ a1.double(), b2.double() @ a2.double()
    dense = (d1 - d2).square().sum((-1, -2)) / d2.square().sum((-1, -2))
    got = delta_distance(a1, b1, 1.0, a2, b2, 1.0)
    assert got.dtype == torch.float32 and torch.allclose(got.double(), dense, rtol=1e-2), (got, dense)


def test_delta_distance_to_a_zero_adapter_is_finite():
    """An exact adapter whose B is all zeros (a LoRA that never moved from its init) must not turn
    the reconstruction loss into inf or nan: two zero deltas are at distance 0."""
    from hyperprag.hyper_objectives import delta_distance

    a, b = torch.randn(2, 2, 8), torch.randn(2, 6, 2)
    zero = torch.zeros_like(b)
    assert torch.equal(delta_distance(a, zero, 2.0, a, zero, 2.0), torch.zeros(2))
    assert torch.isfinite(delta_distance(a, b, 2.0, a, zero, 2.0)).all()


def test_distance_from_rank1_is_the_dense_deltas_under_autocast_and_zero_for_zero_deltas():
    from hyperprag.hyper_objectives import distance_from_rank1

    torch.manual_seed(0)
    a, b = torch.randn(4, 3, 2, 48), torch.randn(4, 3, 40, 2)
    s2 = torch.linalg.svdvals(b.double() @ a.double()).square()
    dense = (1 - s2[..., 0] / s2.sum(-1)).sqrt()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = distance_from_rank1(a, b)
    assert got.shape == (4, 3) and got.dtype == torch.float32
    assert torch.allclose(got.double(), dense, rtol=1e-4)
    eye = torch.eye(6)
    assert float(distance_from_rank1(eye[:2], 3 * eye[:, :2])) == pytest.approx(0.5 ** 0.5)  # two equal directions
    folded = torch.stack([a[0, 0, 0], -2 * a[0, 0, 0]])
    assert float(distance_from_rank1(folded, b[0, 0])) == pytest.approx(0.0, abs=1e-3)
    # a zero delta (a fresh network's B) reads 0 and passes no nan back to the other factor
    a.requires_grad_()
    zero_b = torch.cat([torch.zeros(1, 3, 40, 2), b[1:]])
    d = distance_from_rank1(a, zero_b)
    d.sum().backward()
    assert torch.equal(d[0], torch.zeros(3)) and torch.isfinite(a.grad).all() and torch.equal(a.grad[0], torch.zeros_like(a[0]))


def test_rank_spread_is_a_hinge_that_parts_folded_ranks_and_leaves_spread_ones():
    """Even from two exactly parallel B columns the hinge has a gradient (a penalty on the energy
    share would not: that share is quadratic in how far the columns part), and a step down it
    moves the delta away from rank 1; deltas beyond the target are left alone."""
    from hyperprag.hyper_objectives import distance_from_rank1, rank_spread

    torch.manual_seed(0)
    a = torch.randn(3, 2, 2, 48)
    column = torch.randn(3, 2, 40, 1)
    b = torch.cat([column, 0.5 * column], -1).requires_grad_()
    a.requires_grad_()
    before = distance_from_rank1(a, b).detach()
    assert before.max() < 1e-3
    loss = rank_spread({"up": (a, b)}, target=0.5)
    assert loss.item() == pytest.approx(0.5, abs=1e-3)
    loss.backward()
    assert b.grad.norm() > 1e-3
    with torch.no_grad():
        after = distance_from_rank1(a - 1.0 * a.grad, b - 1.0 * b.grad)
    assert (after > before + 1e-3).all(), (before, after)
    eye = torch.eye(6)
    spread = (eye[:2].expand(3, 2, 2, 6), eye[:, :2].expand(3, 2, 6, 2))
    assert float(rank_spread({"up": spread}, target=0.5)) == 0.0  # 0.707 from rank 1: nothing to ask


def test_distill_loss_is_the_teachers_kl_to_the_student_per_token():
    """KL(teacher || student), summed over the vocabulary and averaged over answer tokens, with both
    softened by the temperature and scaled by its square (so gradients keep their size): by hand.
    The direction matters: the reverse KL lets the student drop answers the teacher finds likely."""
    from hyperprag.hyper_objectives import distill_loss

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 11, generator=g), 3.0 * torch.randn(5, 11, generator=g)
    for temp in (1.0, 2.0):
        p_t = torch.softmax(teacher.double() / temp, -1)
        log_s = torch.log_softmax(student.double() / temp, -1)
        by_hand = (p_t * (p_t.log() - log_s)).sum(-1).mean() * temp ** 2
        assert torch.allclose(distill_loss(student, teacher, temp).double(), by_hand, rtol=1e-5), temp
    assert distill_loss(teacher, teacher) < 1e-6


def test_a_fused_optimiser_step_renews_the_kept_plan_and_the_key(tokenizer):
    """Fused optimisers update weights in kernels that leave a tensor's version counter alone; the
    reader's kept plan and the encoder's key must still follow (they did not: the adapters were a
    mix of old and new weights, under the old key)."""
    from hyperprag.embeddings import build_source

    model = tiny_model()
    enc = HyperEncoder.create(model, build_source("token-seq", model, tokenizer), hidden=32, copy_tokens=True)
    before, key = enc.encode(DOCS)[0], enc.key
    opt = torch.optim.AdamW(enc.hypernet.parameters(), lr=0.05, fused=True)
    versions = [p._version for p in enc.hypernet.parameters()]
    a, b = enc.factors(enc.source.embed([d.text for d in DOCS]))[0][enc.targets[0].name]
    (a.square().sum() + b.square().sum()).backward()
    opt.step()
    assert [p._version for p in enc.hypernet.parameters()] == versions  # what the stamp cannot rely on
    after = enc.encode(DOCS)[0]
    enc.hypernet._plan_cache = None
    fresh = enc.encode(DOCS)[0]
    name = enc.targets[0].name
    assert not torch.equal(before.factors[name][0], after.factors[name][0])
    assert torch.equal(after.factors[name][0], fresh.factors[name][0])
    assert after.extra["encoder_key"] != key


def test_copy_path_copies_nothing_from_a_zero_key_even_in_fp16():
    """A key-value source's first token has a key of zeros. Its unit vector was taken as the zeros
    times 1e12, which overflows fp16 to inf, and inf x 0 made every A row NaN."""
    from hyperprag.hypernet import HyperNetConfig, HyperNetwork

    torch.manual_seed(0)
    d = 16
    net = HyperNetwork(HyperNetConfig(embed_dim=2 * d, num_layers=2, roles={"gate": (16, 32), "down": (32, 16)},
                                      hidden=8, reader="attention", copy_tokens=True, copy_dim=d, copy_keys=True))
    with torch.no_grad():
        for g in net.copy_gain.values():
            g.fill_(1.0)
    net.eval()
    x = torch.randn(1, 6, 2 * d)
    x[0, 0, :d] = 0
    with torch.no_grad():
        full = net(x)
        with torch.autocast("cpu", dtype=torch.float16):
            half = net(x)
    for role in full:
        assert torch.isfinite(half[role][0]).all(), role
        assert torch.allclose(half[role][0].float(), full[role][0], atol=2e-2, rtol=2e-2), role


def test_a_model_reading_source_without_its_tokenizer_is_refused_at_load_and_no_documents_encode_to_none(tmp_path,
                                                                                                      tokenizer):
    from hyperprag.embeddings import build_source

    model = tiny_model()
    HyperEncoder.create(model, build_source("token-seq", model, tokenizer), hidden=32).save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="'token-seq:.*' reads the base model: it needs the model and its tokenizer"):
        HyperEncoder.from_pretrained(tmp_path / "c", model)
    with pytest.raises(ValueError, match="unknown embedding source 'tokenz'"):
        build_source("tokenz")
    assert HyperEncoder.from_pretrained(tmp_path / "c", model, tokenizer).encode([]) == []
