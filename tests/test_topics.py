"""Tests of the chapter 7 library (lib.lda, masking, one_layer, masked_lm, topic_stats):
the LDA corpus, the paper's masking, the Bayes-optimal loss, the one-layer model and the topic
measurements."""
import math

import numpy as np
import pytest
import torch
from scipy.special import digamma

from lib import lda, masked_lm, masking, one_layer, topic_stats

T, V_PER, ALPHA = 10, 10, 0.1


@pytest.fixture(scope="module")
def corpus():
    return lda.sample_corpus(4000, T, V_PER, ALPHA, seed=0)


# ----------------------------------------------------------------------------- corpus
def test_corpus_layout(corpus):
    tokens, theta = corpus
    assert tokens.shape == (4000, 152) and tokens.dtype == np.int64 and theta.shape == (4000, T)
    N = (tokens >= lda.N_SPECIAL).sum(1)
    assert N.min() == 100 and N.max() == 150
    assert np.all(tokens[:, 0] == lda.START)
    assert np.all(tokens[np.arange(len(N)), N + 1] == lda.END)
    pos = np.arange(tokens.shape[1])
    assert np.all((tokens >= lda.N_SPECIAL) == ((pos >= 1) & (pos <= N[:, None])))
    assert np.all((tokens == lda.PAD) == (pos > N[:, None] + 1))
    assert np.allclose(theta.sum(1), 1.0)


def test_document_length_is_uniform(corpus):
    N = (corpus[0] >= lda.N_SPECIAL).sum(1)
    counts = np.bincount(N - 100, minlength=51)
    expected = len(N) / 51
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 50 + 5 * math.sqrt(2 * 50)                 # 50 degrees of freedom


def test_words_follow_theta_and_are_uniform_within_topics(corpus):
    tokens, theta = corpus
    words = np.where(tokens >= lda.N_SPECIAL, tokens - lda.N_SPECIAL, -1)
    topic_counts = np.stack([(words // V_PER == t).sum(1) for t in range(T)], 1)       # (n, T)
    N = topic_counts.sum(1, keepdims=True)
    expected = N * theta
    # Multinomial given theta: the pooled standardised residual is N(0, 1) per topic.
    z = (topic_counts - expected).sum(0) / np.sqrt((expected * (1 - theta)).sum(0))
    assert np.all(np.abs(z) < 5)
    within = np.bincount(words[words >= 0] % V_PER, minlength=V_PER)
    e = within.sum() / V_PER
    assert ((within - e) ** 2 / e).sum() < 9 + 5 * math.sqrt(18)


def test_dirichlet_moments(corpus):
    theta = corpus[1]
    assert abs(theta.mean() - 1 / T) < 0.005
    # E[sum_t theta_t^2] = (alpha + 1) / (T alpha + 1): the share of same-topic word pairs.
    s2 = (theta ** 2).sum(1)
    assert abs(s2.mean() - (ALPHA + 1) / (T * ALPHA + 1)) < 5 * s2.std() / math.sqrt(len(s2))


def test_sampler_is_seeded():
    a, _ = lda.sample_corpus(20, seed=3)
    b, _ = lda.sample_corpus(20, seed=3)
    c, _ = lda.sample_corpus(20, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_topic_of_id():
    topic = lda.topic_of_id(3, 2)
    assert topic.tolist() == [-1, -1, -1, -1, 0, 0, 1, 1, 2, 2]


# ----------------------------------------------------------------------------- masking
def test_masking_rules(corpus):
    tokens = corpus[0]
    data = lda.mask_corpus(tokens, T, V_PER, seed=1)
    inputs, visible = data.inputs.numpy(), data.key_visible.numpy()
    valid = (data.query_labels != masking.IGNORE).numpy()
    rows = np.nonzero(valid)[0]
    pos = data.query_pos.numpy()[valid]
    selected = np.zeros(tokens.shape, bool)
    selected[rows, pos] = True
    # Selected positions are words, carry their true label, and are never visible keys.
    assert np.all(tokens[selected] >= lda.N_SPECIAL)
    assert np.array_equal(data.query_labels.numpy()[valid], tokens[rows, pos])
    assert not np.any(visible & selected)
    assert np.array_equal(visible, (tokens != lda.PAD) & ~selected)
    assert np.all(selected.sum(1) >= 1)
    # Unselected positions are unchanged.
    assert np.array_equal(inputs[~selected], tokens[~selected])
    # Selection rate among words, and the 80/10/10 split (random ids uniform over all 104 ids).
    n_words, n_sel = (tokens >= lda.N_SPECIAL).sum(), selected.sum()
    assert abs(n_sel / n_words - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n_words)
    n_ids = T * V_PER + lda.N_SPECIAL
    for observed, p in ((inputs[selected] == lda.MASK, 0.8 + 0.1 / n_ids),
                        (inputs[selected] == tokens[selected], 0.1 + 0.1 / n_ids)):
        assert abs(observed.mean() - p) < 5 * math.sqrt(p * (1 - p) / n_sel)
    replaced = selected & (inputs != lda.MASK) & (inputs != tokens)
    assert inputs[replaced].min() >= 0 and inputs[replaced].max() < n_ids


def test_masked_keys_get_zero_attention(corpus):
    data = lda.mask_corpus(corpus[0][:50], T, V_PER, seed=2)
    model = one_layer.OneLayerModel(one_layer.TopicModelConfig(), seed=0)
    _, A = model(data, return_attention=True)
    assert torch.all(A.masked_select(~data.key_visible[:, None, :].expand_as(A)) == 0)
    assert torch.allclose(A.sum(-1), torch.ones(A.shape[:2]), atol=1e-5)


def test_at_least_one_selection_per_row():
    tokens = np.full((500, 4), 7)
    _, labels, selected = masking.mask_tokens(tokens, tokens > 0, mask_id=1, n_ids=10, p_select=0.01,
                                         seed=0)
    assert np.all(selected.sum(1) >= 1) and np.all(labels[selected] == 7)


def test_no_unchanged_tokens_when_p_keep_is_zero(corpus):
    tokens = corpus[0][:1000]
    data = lda.mask_corpus(tokens, T, V_PER, p_keep=0.0, seed=3)
    valid = data.query_labels != masking.IGNORE
    q = data.inputs.gather(1, data.query_pos)[valid]
    same = (q == data.query_labels[valid]).float().mean()
    assert same < 0.1 / (T * V_PER + lda.N_SPECIAL) * 3                       # only random hits


# ----------------------------------------------------------------------------- Bayes
def test_bayes_limit_value_and_monte_carlo():
    assert lda.bayes_loss_limit(10, 10, 0.1) == pytest.approx(3.149124, abs=1e-6)
    # Monte Carlo of the N -> infinity predictor: -log(theta_z / v), z ~ theta, theta ~ Dir.
    rng = np.random.default_rng(0)
    for T_, v_, a in ((10, 10, 0.1), (5, 3, 1.0)):
        theta = rng.dirichlet(np.full(T_, a), size=200_000)
        z = (rng.random(len(theta))[:, None] >= np.cumsum(theta, 1)[:, :-1]).sum(1)
        ce = -np.log(theta[np.arange(len(z)), z] / v_)
        assert abs(ce.mean() - lda.bayes_loss_limit(T_, v_, a)) < 5 * ce.std() / math.sqrt(len(ce))
        assert lda.bayes_loss_limit(T_, v_, a) == pytest.approx(
            digamma(T_ * a + 1) - digamma(a + 1) + math.log(v_))


def test_context_predictive_against_frequencies():
    # Documents of 6 words; the topic of word 6 given the topic counts of words 1-5.
    tokens, _ = lda.sample_corpus(100_000, T=3, v=2, alpha=0.5, min_len=6, max_len=6, seed=5)
    topic = lda.topic_of_id(3, 2)[tokens[:, 1:7]]
    counts = np.stack([(topic[:, :5] == t).sum(1) for t in range(3)], 1)
    keys, inverse = np.unique(counts, axis=0, return_inverse=True)
    for k in np.argsort(-np.bincount(inverse))[:6]:
        rows = inverse == k
        freq = np.bincount(topic[rows, 5], minlength=3) / rows.sum()
        p = lda.context_predictive(keys[k], 0.5)
        assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / rows.sum()))


def test_bayes_loss_long_documents_and_query_identity():
    tokens, _ = lda.sample_corpus(300, min_len=2000, max_len=2000, seed=6)
    data = lda.mask_corpus(tokens, T, V_PER, seed=7)
    ctx = lda.bayes_loss(data, T, V_PER, ALPHA, use_query=False)
    assert ctx == pytest.approx(lda.bayes_loss_limit(), abs=0.03)
    assert lda.bayes_loss(data, T, V_PER, ALPHA) < ctx - 0.1     # unchanged queries reveal words
    # With every selected token replaced by MASK the query carries nothing: identical losses.
    all_mask = lda.mask_corpus(tokens[:50], T, V_PER, p_random=0.0, p_keep=0.0, seed=8)
    assert lda.bayes_loss(all_mask, T, V_PER, ALPHA, p_random=0.0, p_keep=0.0) == pytest.approx(
        lda.bayes_loss(all_mask, T, V_PER, ALPHA, use_query=False), rel=1e-12)


# ----------------------------------------------------------------------------- model
def _positional_forward(model, data):
    """Independent reference: attention over the L positions, written the textbook way."""
    Qt, Kt, Vt = model.tables()
    h_q = Qt[data.inputs.gather(1, data.query_pos)]
    scores = h_q @ Kt[data.inputs].transpose(1, 2) / math.sqrt(model.cfg.d)
    A = torch.softmax(scores.masked_fill(~data.key_visible[:, None, :], -math.inf), -1)
    return A @ Vt[data.inputs], A


@pytest.mark.parametrize("cfg", [one_layer.TopicModelConfig(),
                                 one_layer.TopicModelConfig(embedding="trained", value="identity"),
                                 one_layer.TopicModelConfig(value="block", init_scale=0.1)])
def test_forward_matches_positional_attention(corpus, cfg):
    data = lda.mask_corpus(corpus[0][:30], T, V_PER, seed=9)
    model = one_layer.OneLayerModel(cfg, seed=1)
    with torch.no_grad():
        logits, A = model(data, return_attention=True)
        ref_logits, ref_A = _positional_forward(model, data)
    assert torch.allclose(logits, ref_logits, atol=1e-4) and torch.allclose(A, ref_A, atol=1e-6)


def test_uniform_attention_and_frozen_parts(corpus):
    data = lda.unmasked(corpus[0][:20])
    model = one_layer.OneLayerModel(one_layer.TopicModelConfig(attention="uniform", value="block"), seed=0)
    assert not any(p.requires_grad for p in model.parameters())
    logits, A = model(data, return_attention=True)
    assert torch.allclose(A, torch.full_like(A, 1 / 100))
    W = model.W_V
    topic = torch.as_tensor(lda.topic_of_id(T, V_PER))
    assert torch.equal(W, ((topic[:, None] == topic[None, :]) & (topic[:, None] >= 0)).float())
    assert logits.min() >= 0 and logits.max() <= 1 + 1e-6
    trainable = {n for n, p in one_layer.OneLayerModel(one_layer.TopicModelConfig(value="block")).named_parameters()}
    assert trainable == {"W_Q", "b_Q", "W_K", "b_K"}


def test_init_is_seeded_and_small_init_is_nonnegative():
    a = one_layer.OneLayerModel(one_layer.TopicModelConfig(), seed=3).W_Q
    b = one_layer.OneLayerModel(one_layer.TopicModelConfig(), seed=3).W_Q
    assert torch.equal(a, b) and a.abs().max() <= 1 / math.sqrt(104)
    small = one_layer.OneLayerModel(one_layer.TopicModelConfig(init_scale=0.1), seed=3)
    assert small.W_V.min() >= 0 and small.W_V.max() < 0.1 and torch.all(small.b_V == 0)


def test_training_lowers_the_loss_and_records(corpus):
    data = lda.mask_corpus(corpus[0][:400], T, V_PER, seed=10)
    model = one_layer.OneLayerModel(one_layer.TopicModelConfig(attention="uniform"), seed=0)
    before = masked_lm.evaluate(model, data)
    hist = masked_lm.train(model, data, 60, lr=1e-2, record=lambda m: {"gap": topic_stats.value_gap(m)},
                    record_every=20, progress=False)
    assert hist["step"].tolist() == [0, 20, 40, 60]
    assert masked_lm.evaluate(model, data) < before - 0.3
    assert hist["gap"].iloc[-1] > hist["gap"].iloc[0] + 0.1


# ----------------------------------------------------------------------------- measurements
def test_pair_means_on_a_block_matrix():
    topic = lda.topic_of_id(3, 2)
    same = (topic[:, None] == topic[None, :])
    G = np.where(same, 2.0, -1.0) + np.eye(len(topic))
    out = topic_stats.pair_means(G, topic)
    assert out == pytest.approx({"same_token": 3.0, "same_topic": 2.0, "different_topic": -1.0,
                                 "gap": 3.0})
    assert topic_stats.permuted_gaps(G, topic, n_perm=5).shape == (5,)
    # Shuffling only within each topic (strata = topic) keeps every label: the gap is unchanged.
    assert np.allclose(topic_stats.permuted_gaps(G, topic, n_perm=3, strata=topic), 3.0)
    with pytest.raises(ValueError, match="strata"):
        topic_stats.permuted_gaps(G, topic, strata=[0, 1])
    assert torch.allclose(topic_stats.cosine_gram(np.random.default_rng(0).normal(size=(5, 3))).diagonal(),
                          torch.ones(5, dtype=torch.float64))


def test_attention_by_topic_uniform_reads_one_over_ref_len():
    ids = torch.tensor([[2, 4, 5, 6, 4]])             # START, two topic-0 words, one topic-1 word
    A = torch.full((1, 5, 5), 1 / 5)
    out = topic_stats.attention_by_topic(A, ids, lda.topic_of_id(2, 2), ref_len=100)
    assert out["same_token"] == pytest.approx(0.01) and out["ratio"] == pytest.approx(1.0)
    assert (out["n_same_token"], out["n_same_topic"], out["n_different_topic"]) == (6, 4, 6)


def test_stage_time():
    assert topic_stats.stage_time([0, 10, 20, 30], [1.0, 1.1, 2.0, 3.0]) == 20
    assert topic_stats.stage_time([0, 10, 20, 30], [1.0, 1.1, 2.0, 3.0], fraction=1.0) == 30


def test_late_rise_share():
    steps = [0, 25, 50, 75, 100]
    assert topic_stats.late_rise_share(steps, [0, 1, 2, 3, 4]) == pytest.approx(0.2)
    assert topic_stats.late_rise_share(steps, [0, 4, 4, 4, 4]) == pytest.approx(0.0)
    assert topic_stats.late_rise_share(steps, [0, 0, 0, 0, 4]) == pytest.approx(0.8)
    assert topic_stats.late_rise_share(steps, [0, 5, 5, 5, 4]) == pytest.approx(-0.2)
    assert topic_stats.late_rise_share(steps, [0, 1, 2, 3, 4], tail=0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must rise"):
        topic_stats.late_rise_share(steps, [1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="tail"):
        topic_stats.late_rise_share(steps, [0, 1, 2, 3, 4], tail=1.0)


@pytest.mark.parametrize("values, match", [
    ([1.0, 1.0, 1.0, 1.0], "must rise"),                 # flat: used to return step 0
    ([3.0, 2.0, 1.5, 1.0], "must rise"),                 # falling: used to return step 0
    ([1.0, 2.0, 3.0, 1.0], "must rise"),                 # ends where it started
    ([1.0, np.nan, 2.0, 3.0], "finite"), ([1.0, 2.0, 3.0, np.nan], "finite")])
def test_stage_time_rejects_curves_without_a_rise(values, match):
    with pytest.raises(ValueError, match=match):
        topic_stats.stage_time([0, 10, 20, 30], values)


# ----------------------------------------------------------------------------- bad input
def test_helpers_raise_instead_of_returning_nan_or_negative_probabilities(corpus):
    with pytest.raises(ValueError, match="counts must be"):
        lda.context_predictive([3, -1, 0], 0.1)           # used to give a negative probability
    with pytest.raises(ValueError, match="counts must be"):
        lda.context_predictive([3, np.nan, 0], 0.1)
    data = lda.mask_corpus(corpus[0][:20], T, V_PER, seed=4)
    with pytest.raises(ValueError, match="no masked positions"):   # used to return NaN
        lda.bayes_loss(lda.unmasked(corpus[0][:3]), T, V_PER, ALPHA)
    with pytest.raises(ValueError, match="same T and v"):
        lda.bayes_loss(data, 5, V_PER, ALPHA)
    contradicted = lda.mask_corpus(corpus[0][:200], T, V_PER, p_random=0.5, seed=4)
    with pytest.raises(ValueError, match="contradicts p_random=0.0"):  # used to return NaN / inf
        lda.bayes_loss(contradicted, T, V_PER, ALPHA, p_random=0.0)
    one_topic = np.array([-1, 0, 0, 0])
    with pytest.raises(ValueError, match="no different-topic pair"):
        topic_stats.pair_means(np.eye(4), one_topic)
    with pytest.raises(ValueError, match="no same-topic pair"):
        topic_stats.pair_means(np.eye(4), np.array([-1, 0, 1, 2]))
    with pytest.raises(ValueError, match="G must be finite"):
        topic_stats.pair_means(np.full((4, 4), np.nan), np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="topic must be a 1-D"):
        topic_stats.pair_means(np.eye(4), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="X must be a finite matrix"):
        topic_stats.cosine_gram(np.ones(3))
    ids = torch.tensor([[2, 4, 5, 6, 4]])
    uniform = torch.full((1, 5, 5), 1 / 5)
    with pytest.raises(ValueError, match="finite and non-negative"):
        topic_stats.attention_by_topic(uniform - 0.3, ids, lda.topic_of_id(2, 2))
    with pytest.raises(ValueError, match="no different-topic pair"):   # ratio used to be NaN
        topic_stats.attention_by_topic(uniform, torch.tensor([[2, 4, 5, 4, 5]]),
                                       lda.topic_of_id(2, 2))


def test_training_rejects_documents_without_a_masked_position(corpus):
    model = one_layer.OneLayerModel(one_layer.TopicModelConfig())
    with pytest.raises(ValueError, match="every document needs a masked position"):
        masked_lm.train(model, lda.unmasked(corpus[0][:5]), 1, lr=0.1, batch_size=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_docs": 0}, "n_docs"), ({"n_docs": 5, "T": 1}, "T must"), ({"n_docs": 5, "alpha": 0.0}, "alpha"),
    ({"n_docs": 5, "v": 0}, "v must"), ({"n_docs": 5, "min_len": 10, "max_len": 5}, "max_len"),
    ({"n_docs": 5, "seed": -1}, "seed")])
def test_sample_corpus_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lda.sample_corpus(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"p_select": 0.0}, "p_select"), ({"p_select": 1.5}, "p_select"),
    ({"p_random": 0.6, "p_keep": 0.6}, "p_random \\+ p_keep"), ({"p_keep": -0.1}, "p_keep")])
def test_mask_tokens_rejects_bad_parameters(kwargs, match):
    tokens = np.full((2, 3), 5)
    with pytest.raises(ValueError, match=match):
        masking.mask_tokens(tokens, tokens > 0, mask_id=1, n_ids=8, **kwargs)
    with pytest.raises(ValueError, match="same shape"):
        masking.mask_tokens(tokens, np.ones((2, 4), bool), mask_id=1, n_ids=8)


@pytest.mark.parametrize("kwargs, match", [
    ({"embedding": "learned"}, "embedding must"), ({"attention": "frozen"}, "attention must"),
    ({"value": "random"}, "value must"), ({"init_scale": 0.0}, "init_scale"), ({"T": 1}, "T must")])
def test_model_config_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        one_layer.TopicModelConfig(**kwargs)


def test_other_functions_reject_bad_parameters(corpus):
    data = lda.mask_corpus(corpus[0][:10], T, V_PER)
    model = one_layer.OneLayerModel(one_layer.TopicModelConfig())
    with pytest.raises(ValueError, match="optimizer"):
        masked_lm.train(model, data, 1, lr=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size"):
        masked_lm.train(model, data, 1, lr=0.1, batch_size=11)
    with pytest.raises(ValueError, match="G must"):
        topic_stats.pair_means(np.zeros((3, 3)), lda.topic_of_id(2, 2))
    with pytest.raises(ValueError, match="A must"):
        topic_stats.attention_by_topic(torch.zeros(1, 3, 3), torch.zeros(1, 4, dtype=torch.long), [0])
    with pytest.raises(ValueError, match="fraction"):
        topic_stats.stage_time([0, 1], [0, 1], fraction=0.0)
    with pytest.raises(ValueError, match="alpha"):
        lda.bayes_loss_limit(10, 10, -1.0)
    with pytest.raises(ValueError, match=r"p_random \+ p_keep"):
        lda.bayes_loss(data, T, V_PER, ALPHA, p_random=0.6, p_keep=0.6)
    with pytest.raises(ValueError, match="p_keep"):
        lda.bayes_loss(data, T, V_PER, ALPHA, p_keep=-0.1)
    with pytest.raises(ValueError, match="batch_size"):
        masked_lm.evaluate(model, data, batch_size=0)
    with pytest.raises(ValueError, match="no masked positions"):
        masked_lm.evaluate(model, lda.unmasked(corpus[0][:3]))
    with pytest.raises(ValueError, match="ids must"):
        topic_stats.attention_by_topic(torch.zeros(1, 2, 2), torch.tensor([[0, 9]]), lda.topic_of_id(2, 2))


# ----------------------------------------------------------------------------- authors' input block
def test_input_norm_is_layernorm_of_one_hot_plus_token_type(corpus):
    cfg = one_layer.TopicModelConfig(attention="uniform", input_norm=True)
    model = one_layer.OneLayerModel(cfg, seed=2)
    x = torch.eye(cfg.d) + model.t_0                                   # one-hot + t_0, (d, d)
    expected = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False,
                                                                keepdim=True) + 1e-12)
    assert torch.allclose(model.inputs(), expected, atol=1e-5)
    trainable = {n for n, p in model.named_parameters()}
    assert trainable == {"W_V", "b_V", "t_0", "norm.weight", "norm.bias"}
    # the rest of the initialisation is unchanged by the switch
    plain = one_layer.OneLayerModel(one_layer.TopicModelConfig(attention="uniform"), seed=2)
    assert torch.equal(plain.W_V, model.W_V)
    data = lda.mask_corpus(corpus[0][:20], T, V_PER, seed=11)
    with torch.no_grad():
        logits, A = model(data, return_attention=True)
        ref_logits, ref_A = _positional_forward(model, data)
    assert torch.allclose(logits, ref_logits, atol=1e-4) and torch.allclose(A, ref_A, atol=1e-6)
    with pytest.raises(ValueError, match="input_norm"):
        one_layer.TopicModelConfig(input_norm=1)


# ----------------------------------------------------------------------------- evaluation, stopping
def test_evaluate_batch_average_is_the_mean_of_batch_means(corpus):
    data = lda.mask_corpus(corpus[0][:30], T, V_PER, seed=12)
    model = one_layer.OneLayerModel(one_layer.TopicModelConfig(), seed=0)
    with torch.no_grad():
        means = [float(masked_lm.loss(model, data.batch(slice(s, s + 8))))
                 for s in range(0, 30, 8)]
        per_token = masked_lm.loss(model, data).item()
    assert masked_lm.evaluate(model, data, batch_size=8, average="batch") == pytest.approx(
        np.mean(means), rel=1e-6)
    assert masked_lm.evaluate(model, data, batch_size=8) == pytest.approx(per_token, rel=1e-5)
    with pytest.raises(ValueError, match="average"):
        masked_lm.evaluate(model, data, average="document")


def test_train_stops_when_told(corpus):
    data = lda.mask_corpus(corpus[0][:80], T, V_PER, seed=13)
    model = one_layer.OneLayerModel(one_layer.TopicModelConfig(attention="uniform"), seed=0)
    hist = masked_lm.train(model, data, 100, lr=1e-2, record_every=10, progress=False,
                           stop=lambda rows: rows[-1]["step"] >= 30)
    assert hist["step"].tolist() == [0, 10, 20, 30]


def test_authors_early_stopping_rule():
    from lib import authors_demo
    stop = authors_demo.early_stop(authors_demo.DemoConfig())         # 250 steps per epoch
    rows = [{"step": 0, "dev_loss": 4.8}, {"step": 1000, "dev_loss": 3.395}]
    assert not stop(rows)                                           # an improvement
    rows.append({"step": 2000, "dev_loss": 3.40})                    # best 4 epochs back
    assert not stop(rows)
    rows.append({"step": 3000, "dev_loss": 3.40})                    # best 8 epochs back
    assert stop(rows)
    rows.append({"step": 4000, "dev_loss": 3.39})                    # a new best never stops
    assert not stop(rows)


def test_authors_demo_run_on_a_tiny_corpus():
    from lib import authors_demo
    cfg = authors_demo.DemoConfig(n_train=80, n_dev=40, max_epochs=6, eval_every=4)
    out = authors_demo.run(cfg, seed=1, input_norm=True)
    hist = out["history"]
    assert out["dev_loss"] == pytest.approx(min(hist["dev_loss"]))
    assert out["best_step"] == hist["step"][int(np.argmin(hist["dev_loss"]))]
    assert out["steps"] <= 6 * 2 and out["seeds"] == authors_demo.seeds(1)
    assert out["dev_loss"] < hist["dev_loss"][0]
    named = authors_demo.seeds(0)                                    # corpora and masks differ
    assert len({named[k] for k in ("train_data", "dev_data", "train_mask", "dev_mask")}) == 4
    with pytest.raises(ValueError, match="seed"):
        authors_demo.seeds(-1)
    for bad in (1, None, "yes"):                                   # not a bool: refused
        with pytest.raises(ValueError, match="input_norm"):
            authors_demo.run(cfg, seed=1, input_norm=bad)


def test_corpus_sizes_reads_the_five_corpus_fields():
    from lib import authors_demo, two_stage
    demo = authors_demo.DemoConfig(T=4, v=3, alpha=0.5, min_len=7, max_len=9)
    assert lda.corpus_sizes(demo) == dict(T=4, v=3, alpha=0.5, min_len=7, max_len=9)
    assert lda.corpus_sizes(two_stage.StageConfig())["max_len"] == 150
    with pytest.raises(ValueError, match="min_len"):
        lda.corpus_sizes(type("Partial", (), {"T": 2, "v": 2, "alpha": 1.0, "max_len": 5})())


def test_two_stage_budget_and_run():
    from lib import two_stage
    cfg = two_stage.StageConfig(n_train=80, n_eval=5, reference=(("adam", (1e-2, 20)),
                                                                  ("sgd", (40.0, 20))),
                                n_records=4)
    assert cfg.budget("adam", 5e-3) == 40 and cfg.budget("sgd", 80.0) == 10
    assert len(cfg.runs()) == 6 * len(cfg.seeds) and two_stage.key("sgd", 40.0, 2) == "sgd_lr40_s2"
    hist = two_stage.run(cfg, "sgd", 40.0, seed=0)
    assert hist["step"].tolist() == [0, 5, 10, 15, 20]
    assert hist["value gap"].iloc[-1] > hist["value gap"].iloc[0]
    with pytest.raises(ValueError, match="optimizer"):
        two_stage.run(cfg, "rmsprop", 1.0, seed=0)
    with pytest.raises(ValueError, match="lr"):
        cfg.budget("adam", -1.0)


# ----------------------------------------------------------------------------- attention by distance
def test_attention_at_equal_distance_removes_locality():
    # Topics in runs of 4 positions; attention weights depend on distance only: the pooled
    # ratio exceeds 1 because same-topic pairs are nearer, the distance-matched ratio is 1.
    L = 16
    ids = torch.arange(L)[None, :] + lda.N_SPECIAL                     # 16 distinct words
    topic = lda.topic_of_id(4, 4)
    dist = (torch.arange(L)[:, None] - torch.arange(L)[None, :]).abs().double()
    local = torch.exp(-dist)[None]                                    # (1, L, L)
    assert topic_stats.attention_by_topic(local, ids, topic)["ratio"] > 2
    assert topic_stats.attention_at_equal_distance(local, ids, topic)["ratio"] == pytest.approx(1)
    # Doubling every same-topic weight doubles the matched ratio.
    same = torch.as_tensor(topic[ids[0]][:, None] == topic[ids[0]][None, :])
    boosted = local * torch.where(same, 2.0, 1.0)
    out = topic_stats.attention_at_equal_distance(boosted, ids, topic)
    assert out["ratio"] == pytest.approx(2.0)
    uniform = torch.full((1, L, L), 1 / L, dtype=torch.float64)
    assert topic_stats.attention_at_equal_distance(uniform, ids, topic)["same_topic"] == \
        pytest.approx(1.0)
    with pytest.raises(ValueError, match="A must"):
        topic_stats.attention_at_equal_distance(uniform[:, :3], ids, topic)


def test_shuffle_labels_permutes_within_strata_only():
    topic = np.array([-1, 0, 0, 1, 1, 2, 2, -1])
    strata = np.array([0, 0, 1, 0, 1, 0, 1, 1])
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = topic_stats.shuffle_labels(topic, rng, strata)
        assert np.array_equal(out[topic < 0], topic[topic < 0])
        for s in (0, 1):
            idx = (strata == s) & (topic >= 0)
            assert sorted(out[idx]) == sorted(topic[idx])
    with pytest.raises(ValueError, match="strata"):
        topic_stats.shuffle_labels(topic, rng, strata[:3])
