"""Real text for chapter 7: the English Wikipedia excerpt shipped inside gensim, topics by LDA.

The corpus is gensim's test file of 206 Wikipedia pages (106 articles), read with gensim's own
Wikipedia parser (``filter_wiki`` then lowercase alphabetic tokens of 2-15 letters, the
``make_wiki`` defaults) and cut into pseudo-documents of a fixed length. LDA (gensim
``LdaModel``) gives each word a topic; a small BERT-style encoder (`lib.transformer`) is trained
on the same pseudo-documents by masked language modelling, through a wrapper that lets
`lib.masked_lm.train` drive it. Nothing is downloaded: the text is in the installed package.

Introduced in chapter 7.
"""
from __future__ import annotations

import bz2
from collections import Counter

import numpy as np
import torch
from torch import nn

from lib import masking
from lib.transformer import Transformer
from lib.validate import check_int, check_real

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_ARTICLE_TOKENS = 50        # gensim's ARTICLE_MIN_WORDS: shorter pages are stubs


def load_wikipedia() -> list[tuple[str, list[str]]]:
    """Articles of gensim's bundled Wikipedia excerpt as ``(title, tokens)``, in file order.

    Keeps main-namespace pages that are not redirects and have at least 50 tokens.
    """
    from gensim.corpora import wikicorpus
    from gensim.test.utils import datapath

    articles = []
    with bz2.open(datapath(WIKI_FILE), "rb") as f:
        for title, text, pageid in wikicorpus.extract_pages(f, filter_namespaces=("0",)):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            tokens, _, _ = wikicorpus.process_article((text, title, pageid))
            if len(tokens) >= MIN_ARTICLE_TOKENS:
                articles.append((title, tokens))
    return articles


def chunk(articles, length: int) -> tuple[list[list[str]], np.ndarray]:
    """Cut each article into consecutive pseudo-documents of exactly ``length`` tokens.

    Returns
    -------
    docs : list of list of str
    article : numpy.ndarray, shape (n_docs,), int64
        Index of the article each pseudo-document comes from (for splits by article).
    """
    length = check_int("length", length, 1)
    docs, article = [], []
    for a, (_, tokens) in enumerate(articles):
        for start in range(0, len(tokens) - length + 1, length):
            docs.append(tokens[start:start + length])
            article.append(a)
    return docs, np.asarray(article, dtype=np.int64)


def fit_lda(docs, n_topics: int, seed: int = 0, passes: int = 5, no_below: int = 10,
            no_above: float = 0.1):
    """Fit gensim's LDA to bag-of-words counts of ``docs``, without stop words.

    Words in fewer than ``no_below`` documents or more than a fraction ``no_above`` of them are
    dropped (the second rule removes function words), as are gensim's English stop words.

    Returns
    -------
    dictionary : gensim.corpora.Dictionary
    lda : gensim.models.LdaModel
    """
    from gensim.corpora import Dictionary
    from gensim.models import LdaModel
    from gensim.parsing.preprocessing import STOPWORDS

    n_topics = check_int("n_topics", n_topics, 2)
    dictionary = Dictionary(docs)
    no_above = check_real("no_above", no_above, 0.0)
    if not 0.0 < no_above <= 1.0:
        raise ValueError(f"no_above must be a fraction in (0, 1], got {no_above}")
    dictionary.filter_extremes(no_below=check_int("no_below", no_below, 1), no_above=no_above,
                               keep_n=None)
    dictionary.filter_tokens(bad_ids=[dictionary.token2id[w] for w in STOPWORDS
                                      if w in dictionary.token2id])
    dictionary.compactify()
    bow = [dictionary.doc2bow(d) for d in docs]
    if not bow or not len(dictionary):
        raise ValueError("docs leave no words after filtering: lower no_below or raise no_above")
    lda = LdaModel(bow, id2word=dictionary, num_topics=n_topics,
                   passes=check_int("passes", passes, 1), random_state=check_int("seed", seed, 0),
                   chunksize=len(bow), eval_every=None)
    return dictionary, lda


def word_topics(lda, dictionary, words, min_prob: float = 0.5) -> np.ndarray:
    """Topic of each word: ``argmax_t p(t | w)`` if that probability is at least ``min_prob``.

    ``p(t | w)`` is proportional to ``p(w | t)`` (a uniform prior over topics). Words outside the
    LDA dictionary or below the threshold get ``-1``.

    Returns
    -------
    numpy.ndarray, shape (len(words),), int64
    """
    min_prob = check_real("min_prob", min_prob, 0.0)
    phi = lda.get_topics()                                        # (n_topics, n_words) p(w | t)
    p_topic = phi / phi.sum(0, keepdims=True)
    out = np.full(len(words), -1, dtype=np.int64)
    for i, w in enumerate(words):
        j = dictionary.token2id.get(w)
        if j is not None and p_topic[:, j].max() >= min_prob:
            out[i] = int(p_topic[:, j].argmax())
    return out


def build_vocab(docs, size: int) -> list[str]:
    """The ``size`` most frequent words of ``docs`` (ties broken alphabetically)."""
    counts = Counter(w for d in docs for w in d)
    return sorted(counts, key=lambda w: (-counts[w], w))[:check_int("size", size, 1)]


def encode(docs, vocab) -> np.ndarray:
    """Word ids (n_docs, length): ``vocab.index(w)``, or ``len(vocab)`` (UNK) for other words."""
    index = {w: i for i, w in enumerate(vocab)}
    return np.array([[index.get(w, len(vocab)) for w in d] for d in docs], dtype=np.int64)


def mask_text(ids, n_classes: int, p_select: float = 0.15, seed: int = 0,
              copies: int = 1) -> masking.MaskedCorpus:
    """BERT's 80/10/10 masking of ``copies`` independently masked copies of ``ids`` (n, L).

    Every position may be selected; the mask id is ``n_classes`` (`lib.transformer`'s
    convention) and random replacements are uniform over the ``n_classes`` word ids. As in the
    authors' synthetic model, and unlike BERT, every selected position is hidden from the keys
    (``key_visible`` is False there), so no query can copy a selected token's content.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"ids must have shape (n, L), got {ids.shape}")
    n_classes = check_int("n_classes", n_classes, 1)
    ids = np.tile(ids, (check_int("copies", copies, 1), 1))
    everywhere = np.ones(ids.shape, bool)
    inputs, labels, selected = masking.mask_tokens(ids, everywhere, mask_id=n_classes,
                                                   n_ids=n_classes, p_select=p_select,
                                                   seed=seed)
    return masking.masked_corpus(inputs, labels, ~selected)


class MaskedLM(nn.Module):
    """`lib.transformer.Transformer` (task ``"mlm"``) seen through the `lib.masked_lm` interface.

    ``forward(data)`` returns the logits (B, m, n_classes) at ``data.query_pos`` only, so
    `lib.masked_lm.train` and `lib.masked_lm.evaluate` drive it unchanged. It runs the network's
    own modules, every layer attending only to ``data.key_visible``, and applies the readout to
    the masked positions alone: over a vocabulary of thousands of words the readout at every
    position would dominate the cost of a step.
    """

    def __init__(self, net: Transformer):
        super().__init__()
        if net.cfg.task != "mlm":
            raise ValueError(f"net must be built with task='mlm', got {net.cfg.task!r}")
        self.net = net

    def forward(self, data: masking.MaskedCorpus) -> torch.Tensor:
        h = self.net.hidden(data.inputs, data.key_visible)[0]                    # (B, L, d)
        h = h.gather(1, data.query_pos[..., None].expand(-1, -1, h.shape[-1]))   # (B, m, d)
        return self.net.readout(h)                                                # (B, m, C)
