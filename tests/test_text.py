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
    assert data.inputs.shape == (120, 32) and bool(data.key_visible.all())
    valid = data.query_labels != masking.IGNORE
    q = data.inputs.gather(1, data.query_pos)[valid]
    assert q.max() <= 50 and (q == 50).float().mean() > 0.7
    # every position that is not a query keeps its token (copies are stacked: ids, ids, ids)
    queried = torch.zeros(120, 32, dtype=torch.long).scatter_add_(1, data.query_pos,
                                                                  valid.long()) > 0
    context = ~queried
    assert context.float().mean() > 0.5                         # the check sees most tokens
    assert torch.equal(data.inputs[context], torch.as_tensor(ids).repeat(3, 1)[context])


def test_masked_lm_matches_the_full_forward():
    cfg = ModelConfig(vocab=31, seq_len=16, n_classes=30, task="mlm", d_model=16, n_layers=2,
                      n_heads=2, d_ff=32, dropout=0.0)
    torch.manual_seed(0)
    net = Transformer(cfg).eval()
    data = text.mask_text(np.random.default_rng(2).integers(0, 30, size=(5, 16)), 30, seed=1)
    full = net(data.inputs)
    expected = full.gather(1, data.query_pos[..., None].expand(-1, -1, 30))
    assert torch.allclose(text.MaskedLM(net)(data), expected, atol=1e-5)


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
