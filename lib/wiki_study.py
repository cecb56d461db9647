"""Chapter 7's real-text test: do topics show in the embeddings and attention of a small encoder?

The design gives attention a reason to learn topics if the mechanism of the synthetic sections
carries over: masked positions are hidden from the keys of every layer (as in the authors'
one-layer model, so an unchanged token cannot be copied and the context must be read), the
encoder has two layers and positional encodings, and it is trained from scratch by masked
language modelling on the Wikipedia excerpt of `lib.text`, several seeds. Topics come from LDA.
Effects are judged against nulls that keep what could fake them: topic labels shuffled among
words of the same frequency decile, and attention compared at equal query-key distance
(`lib.topic_stats.attention_at_equal_distance`), since nearby words share topics more often.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lib import masked_lm, masking, text, topic_stats
from lib.transformer import ModelConfig, Transformer
from lib.validate import check_int


@dataclass(frozen=True)
class TextConfig:
    """The real-text experiment; every value is our choice (the paper used pretrained BERT)."""

    length: int = 64              # tokens per pseudo-document
    n_topics: int = 20            # LDA topics
    lda_passes: int = 3
    vocab: int = 2_000            # most frequent words; the rest share one UNK id
    held_out: int = 10            # articles never trained on
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int = 128
    steps: int = 2_500
    lr: float = 3e-3
    batch_size: int = 32
    copies: int = 10              # independently masked copies of the training documents
    p_select: float = 0.15
    n_perm: int = 20              # label shufflings per null
    lda_seed: int = 0             # LDA and the held-out split
    seeds: tuple = (0, 1, 2)      # replicas: initialisation, masks, batch order


def prepare(cfg: TextConfig) -> dict:
    """Corpus, LDA word topics and frequency strata shared by every replica.

    Returns
    -------
    dict
        ``ids`` (n_docs, length) word ids (UNK = ``vocab``), ``held_out`` (n_docs,) bool,
        ``n_classes`` (vocab + UNK), ``topic`` (n_classes + 1,) LDA topic per id (``-1``: UNK,
        mask, or no topic), ``freq`` (n_classes,) training counts, ``freq_bin`` (n_classes,)
        frequency decile, and ``summary`` (corpus sizes and the top words of every topic).
    """
    articles = text.load_wikipedia()
    docs, article = text.chunk(articles, cfg.length)
    order = np.random.default_rng(cfg.lda_seed).permutation(len(articles))
    held_out = np.isin(article, order[:cfg.held_out])
    train_docs = [d for d, h in zip(docs, held_out) if not h]
    dictionary, lda = text.fit_lda(train_docs, cfg.n_topics, seed=cfg.lda_seed,
                                   passes=cfg.lda_passes)
    vocab = text.build_vocab(train_docs, cfg.vocab)
    ids = text.encode(docs, vocab)
    n_classes = len(vocab) + 1
    topic = np.concatenate([text.word_topics(lda, dictionary, vocab, min_prob=0.0), [-1, -1]])
    freq = np.bincount(ids[~held_out].ravel(), minlength=n_classes)
    log_freq = np.log(freq + 1)
    freq_bin = np.digitize(log_freq, np.quantile(log_freq, np.linspace(0, 1, 11)[1:-1]))
    summary = {"articles": len(articles), "tokens": sum(len(a) for _, a in articles),
               "documents": len(docs), "held_out_documents": int(held_out.sum()),
               "topic_words": int((topic >= 0).sum()),
               "top_words": [[w for w, _ in lda.show_topic(k, 8)] for k in range(cfg.n_topics)]}
    return {"ids": ids, "held_out": held_out, "n_classes": n_classes, "topic": topic,
            "freq": freq, "freq_bin": freq_bin, "summary": summary}


def train(cfg: TextConfig, prep: dict, seed: int) -> tuple[Transformer, list[float]]:
    """Train one replica; returns the network and its held-out loss before and after.

    Seeds: initialisation and batch order ``seed``, training masks ``1000 + seed``, held-out
    masks ``2000 + seed``.
    """
    seed = check_int("seed", seed, 0)
    ids, held_out, n_classes = prep["ids"], prep["held_out"], prep["n_classes"]
    train_data = text.mask_text(ids[~held_out], n_classes, p_select=cfg.p_select,
                                seed=1000 + seed, copies=cfg.copies)
    dev = text.mask_text(ids[held_out], n_classes, p_select=cfg.p_select, seed=2000 + seed)
    torch.manual_seed(seed)
    net = Transformer(ModelConfig(vocab=n_classes + 1, seq_len=cfg.length, n_classes=n_classes,
                                  task="mlm", d_model=cfg.d_model, n_layers=cfg.n_layers,
                                  n_heads=cfg.n_heads, d_ff=cfg.d_ff, dropout=0.0))
    with torch.no_grad():                  # BERT's embedding initialisation, N(0, 0.02^2)
        net.embed.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
    mlm = text.MaskedLM(net)
    before = masked_lm.evaluate(mlm, dev)
    masked_lm.train(mlm, train_data, cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                    order_seed=seed, progress=False)
    return net, [before, masked_lm.evaluate(mlm, dev), _unigram_loss(prep, dev)]


def _unigram_loss(prep: dict, dev: masking.MaskedCorpus) -> float:
    """Loss of predicting every masked word by its training frequency: no context at all."""
    targets = dev.query_labels[dev.query_labels != masking.IGNORE].numpy()
    return float(-np.log(prep["freq"][targets] / prep["freq"].sum()).mean())


@torch.no_grad()
def measure(cfg: TextConfig, prep: dict, net: Transformer, seed: int) -> dict:
    """Embedding and attention topic effects of a trained replica, each with its null.

    Returns
    -------
    dict
        ``embedding``: per matrix (input embedding, centred readout rows) the cosine of
        same- and different-topic word pairs, their gap, and the mean and sd of the gap with
        labels shuffled within frequency deciles. ``attention``: per layer and head, on the
        unmasked held-out documents, the pooled ratio (`attention_by_topic`), the
        distance-matched ratio and the mean and sd of the latter under shuffled labels.
    """
    topic, strata = prep["topic"], prep["freq_bin"]
    R = net.readout.weight
    matrices = {"input embedding": net.embed.weight[:prep["n_classes"]],
                "output rows, centred": R - R.mean(0)}
    embedding = []
    for name, X in matrices.items():
        cos = topic_stats.cosine_gram(X)
        seen = topic_stats.pair_means(cos, topic[:prep["n_classes"]])
        null = topic_stats.permuted_gaps(cos, topic[:prep["n_classes"]], cfg.n_perm,
                                         seed=seed, strata=strata)
        embedding.append({"matrix": name, "cos_same_topic": seen["same_topic"],
                          "cos_different_topic": seen["different_topic"], "gap": seen["gap"],
                          "null_mean": float(null.mean()), "null_sd": float(null.std())})
    x = torch.as_tensor(prep["ids"][prep["held_out"]])
    _, patterns = net(x, return_attention=True)
    rng = np.random.default_rng(seed)
    shuffled = [topic_stats.shuffle_labels(topic[:-1], rng, strata) for _ in range(cfg.n_perm)]
    attention = []
    for layer, P in enumerate(patterns):
        for head in range(P.shape[1]):
            pooled = topic_stats.attention_by_topic(P[:, head], x, topic)
            matched = topic_stats.attention_at_equal_distance(P[:, head], x, topic)
            null = [topic_stats.attention_at_equal_distance(P[:, head], x,
                                                            np.append(t, -1))["ratio"]
                    for t in shuffled]
            attention.append({"layer": layer, "head": head, "ratio": pooled["ratio"],
                              "matched_same_topic": matched["same_topic"],
                              "matched_different_topic": matched["different_topic"],
                              "matched_ratio": matched["ratio"],
                              "null_mean": float(np.mean(null)), "null_sd": float(np.std(null))})
    return {"embedding": embedding, "attention": attention}


def run(cfg: TextConfig, prep: dict, seed: int) -> dict:
    """`train` then `measure` one replica: ``{"loss": {...}, "embedding": [...],
    "attention": [...]}``."""
    net, (before, after, unigram) = train(cfg, prep, seed)
    losses = {"held_out_before": before, "held_out_after": after, "unigram": unigram}
    return {"seed": seed, "loss": losses, **measure(cfg, prep, net, seed)}
