"""Tests of lib.text: the bundled Wikipedia excerpt, chunking, LDA word topics, the MLM wrapper."""
import re

import numpy as np
import pytest
import torch

from lib import masking, text
from lib.transformer import ModelConfig, Transformer


@pytest.fixture(scope="module")
def articles():
    return text.load_wikipedia()


def test_wikipedia_excerpt(articles):
    assert len(articles) == 106                       # 206 pages, of which 106 are articles
    assert articles[0][0] == "Anarchism"
    tokens = [w for _, a in articles for w in a]
    assert 400_000 < len(tokens) < 500_000
    # gensim's tokenizer: lowercased runs of word characters without digits, 2-15 long.
    assert all(re.fullmatch(r"[^\W\d]{2,15}", w) and w == w.lower() for w in tokens)
    assert min(len(a) for _, a in articles) >= text.MIN_ARTICLE_TOKENS


def test_chunk_is_exact_and_in_order(articles):
    docs, article = text.chunk(articles[:3], 64)
    assert all(len(d) == 64 for d in docs) and len(docs) == len(article)
    for a in range(3):
        mine = [w for d, k in zip(docs, article) if k == a for w in d]
        n = len(articles[a][1]) // 64 * 64
        assert mine == articles[a][1][:n]


def test_vocab_and_encode():
    docs = [["b", "a", "b"], ["c", "b", "a"]]
    vocab = text.build_vocab(docs, 2)
    assert vocab == ["b", "a"]
    assert text.encode(docs, vocab).tolist() == [[0, 1, 0], [2, 0, 1]]


def test_word_topics_recovers_disjoint_word_groups():
    rng = np.random.default_rng(0)
    groups = [[f"w{i}" for i in range(8)], [f"u{i}" for i in range(8)]]
    docs = [list(rng.choice(groups[k % 2], size=40)) for k in range(200)]
    dictionary, lda = text.fit_lda(docs, 2, seed=0, passes=10, no_below=1, no_above=1.0)
    topic = text.word_topics(lda, dictionary, groups[0] + groups[1] + ["unseen"])
    assert len(set(topic[:8])) == 1 and len(set(topic[8:16])) == 1 and topic[0] != topic[8]
    assert topic[-1] == -1
    strict = text.word_topics(lda, dictionary, groups[0], min_prob=1.01)
    assert np.all(strict == -1)


def test_mask_text_uses_the_transformer_mask_id():
    ids = np.random.default_rng(1).integers(0, 50, size=(40, 32))
    data = text.mask_text(ids, 50, seed=0, copies=3)
    assert data.inputs.shape == (120, 32)
    valid = data.query_labels != masking.IGNORE
    q = data.inputs.gather(1, data.query_pos)[valid]
    assert q.max() <= 50 and (q == 50).float().mean() > 0.7
    # every position that is not a query keeps its token (copies are stacked: ids, ids, ids)
    queried = torch.zeros(120, 32, dtype=torch.long).scatter_add_(1, data.query_pos,
                                                                  valid.long()) > 0
    assert torch.equal(data.key_visible, ~queried)             # queries are hidden as keys
    context = ~queried
    assert context.float().mean() > 0.5                         # the check sees most tokens
    assert torch.equal(data.inputs[context], torch.as_tensor(ids).repeat(3, 1)[context])


def _net():
    cfg = ModelConfig(vocab=31, seq_len=16, n_classes=30, task="mlm", d_model=16, n_layers=2,
                      n_heads=2, d_ff=32, dropout=0.0)
    torch.manual_seed(0)
    return Transformer(cfg).eval()


def test_masked_lm_matches_the_full_forward_when_every_key_is_visible():
    net = _net()
    data = text.mask_text(np.random.default_rng(2).integers(0, 30, size=(5, 16)), 30, seed=1)
    data = masking.MaskedCorpus(data.inputs, torch.ones_like(data.key_visible), data.query_pos,
                                data.query_labels)
    full = net(data.inputs)
    expected = full.gather(1, data.query_pos[..., None].expand(-1, -1, 30))
    assert torch.allclose(text.MaskedLM(net)(data), expected, atol=1e-5)


def test_hidden_keys_get_no_attention_and_leak_nothing():
    net = _net()
    data = text.mask_text(np.random.default_rng(3).integers(0, 30, size=(6, 16)), 30,
                          p_select=0.3, seed=2)
    with torch.no_grad():
        _, patterns = net.hidden(data.inputs, data.key_visible)
        for P in patterns:                                        # (B, H, L, L)
            assert torch.all(P.masked_select(~data.key_visible[:, None, None, :]
                                             .expand_as(P)) == 0)
            assert torch.allclose(P.sum(-1), torch.ones(P.shape[:-1]))
        # Changing the token at one hidden position changes no other position's logits.
        row = int(torch.nonzero(~data.key_visible.all(1))[0])
        j = int(torch.nonzero(~data.key_visible[row])[0])
        changed = data.inputs.clone()
        changed[row, j] = (changed[row, j] + 1) % 30
        h0 = net.hidden(data.inputs, data.key_visible)[0]
        h1 = net.hidden(changed, data.key_visible)[0]
    others = torch.arange(16) != j
    assert torch.allclose(h0[row, others], h1[row, others], atol=1e-6)
    assert not torch.allclose(h0[row, j], h1[row, j])


def test_wiki_study_on_a_synthetic_corpus():
    from lib import wiki_study
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 30, size=(40, 16))
    topic = np.concatenate([np.arange(30) % 3, [-1, -1]])            # 30 words, UNK, mask
    freq = np.bincount(ids[10:].ravel(), minlength=31)
    prep = {"ids": ids, "held_out": np.arange(40) < 10, "n_classes": 31, "topic": topic,
            "freq": freq + 1, "freq_bin": np.arange(31) % 2}
    cfg = wiki_study.TextConfig(length=16, d_model=8, n_heads=2, d_ff=8, steps=3,
                                batch_size=4, copies=1, n_perm=3)
    out = wiki_study.run(cfg, prep, seed=0)
    assert [(r["layer"], r["head"]) for r in out["attention"]] == [(0, 0), (0, 1), (1, 0),
                                                                  (1, 1)]
    assert all(r["null_sd"] > 0 and r["matched_ratio"] > 0 for r in out["attention"])
    assert [r["matrix"] for r in out["embedding"]] == [
        "input embedding", "output rows, centred"]
    assert set(out["loss"]) == {"held_out_before", "held_out_after", "unigram"}


def test_bad_parameters():
    with pytest.raises(ValueError, match="length"):
        text.chunk([("a", ["x"] * 10)], 0)
    with pytest.raises(ValueError, match="size"):
        text.build_vocab([["a"]], 0)
    with pytest.raises(ValueError, match="task='mlm'"):
        text.MaskedLM(Transformer(ModelConfig(vocab=4, seq_len=8, n_classes=4, d_model=8,
                                              n_layers=1, d_ff=8)))
    with pytest.raises(ValueError, match="n_topics"):
        text.fit_lda([["a", "b"]], 1)
    for no_above in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"no_above must be a fraction in \(0, 1\]"):
            text.fit_lda([["a", "b"]], 2, no_above=no_above)
    with pytest.raises(ValueError, match="no words after filtering"):
        text.fit_lda([["a", "b"]], 2, no_below=5)
    with pytest.raises(ValueError, match="min_prob"):
        text.word_topics(None, None, ["a"], min_prob=-0.1)
    with pytest.raises(ValueError, match="n_classes"):
        text.mask_text(np.zeros((2, 8), dtype=int), 0)
    with pytest.raises(ValueError, match="ids must"):
        text.mask_text(np.zeros(8, dtype=int), 5)
