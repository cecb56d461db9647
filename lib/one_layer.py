"""The simplified one-layer transformer of Li, Li & Risteski (ICML 2023, arXiv 2303.04245).

One layer, one head, no positions, residual or feed-forward block; the decoder is the identity,
so ``logits_i = sum_j A_ij W^V h_j``. Its switches (frozen uniform attention, value matrix frozen
to the identity or to the topic blocks, one-hot or trained embeddings, small initialisation) give
the paper's experiments. Masked positions are removed as keys, as in the authors' code, so no
query ever sees a masked token. ``input_norm`` adds the one part of the authors' code that the
idealised model drops: their BERT embedding block applies a token-type embedding and a LayerNorm
to every input, so ``h = LN(E[x] + t_0)`` instead of ``E[x]``. It reads a
`lib.masking.MaskedCorpus` of LDA documents (`lib.lda`) and trains with `lib.masked_lm`.

Introduced in chapter 7.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lib.lda import N_SPECIAL, check_topics, topic_of_id
from lib.masking import MaskedCorpus
from lib.validate import check_int, check_real

EMBEDDINGS, ATTENTIONS, VALUES = ("one_hot", "trained"), ("trained", "uniform"), \
    ("trained", "identity", "block")


@dataclass(frozen=True)
class TopicModelConfig:
    """The simplified one-layer model and its switches.

    Attributes
    ----------
    T, v : int
        Topics and words per topic; the width is ``d = T*v + 4`` (one-hot inputs need it).
    embedding : str
        ``"one_hot"`` (E = I, frozen) or ``"trained"`` (E ~ N(0, 1), trained).
    attention : str
        ``"trained"`` (W^Q, W^K, biases) or ``"uniform"`` (all zero and frozen: uniform over keys).
    value : str
        ``"trained"`` (W^V, b^V), ``"identity"`` (W^V = I) or ``"block"`` (W^V frozen to the 0/1
        topic-block matrix on words, zero on specials).
    init_scale : float or None
        None: PyTorch's default ``U(+-1/sqrt(d))`` for trained W and b; a number ``s``: weights
        ``s * U[0, 1)`` and zero biases (the authors' small initialisation).
    input_norm : bool
        False: inputs ``h = E[x]`` (the idealised model). True: ``h = LN(E[x] + t_0)`` as the
        authors' code computes them, with a trained token-type vector ``t_0 ~ N(0, 1)`` and a
        trained LayerNorm (gain 1, shift 0 at initialisation, eps 1e-12).
    """

    T: int = 10
    v: int = 10
    embedding: str = "one_hot"
    attention: str = "trained"
    value: str = "trained"
    init_scale: float | None = None
    input_norm: bool = False

    def __post_init__(self):
        check_topics(self.T, self.v, 1.0)
        for name, allowed in (("embedding", EMBEDDINGS), ("attention", ATTENTIONS),
                              ("value", VALUES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not isinstance(self.input_norm, bool):
            raise ValueError(f"input_norm must be True or False, got {self.input_norm!r}")
        if self.init_scale is not None and check_real("init_scale", self.init_scale, 0.0) == 0.0:
            raise ValueError("init_scale must be > 0 (zero W^Q = W^K is a saddle) or None")

    @property
    def d(self) -> int:
        """Vocabulary size and width, ``T*v + 4``."""
        return self.T * self.v + N_SPECIAL


class OneLayerModel(nn.Module):
    """One attention layer, no positions: ``logits_i = sum_j A_ij (E W^V + b^V)[x_j]``.

    Scores are ``(E W^Q + b^Q)[x_i] . (E W^K + b^K)[x_j] / sqrt(d)`` over visible keys (masked and
    padding keys excluded). Weights act on row vectors (``h W``), so ``W[a]`` is the image of
    token ``a``. Without positions a key's score depends only on its token, so attention over the
    ``L`` keys equals attention over the ``d`` token types weighted by their visible counts
    ``c_a``: the layer is computed that way, with no (L, L) matrix.

    Parameters
    ----------
    cfg : TopicModelConfig
    seed : int
        Initialisation seed.
    """

    def __init__(self, cfg: TopicModelConfig, seed: int = 0):
        super().__init__()
        self.cfg, d = cfg, cfg.d
        gen = torch.Generator().manual_seed(check_int("seed", seed, 0))
        if cfg.embedding == "trained":
            self.E = nn.Parameter(torch.randn(d, d, generator=gen))
        else:
            self.register_buffer("E", torch.eye(d))
        for name in ("Q", "K", "V"):
            trained = (cfg.attention if name != "V" else cfg.value) == "trained"
            if trained:
                self._init_trainable(name, gen)
            else:
                self.register_buffer(f"W_{name}", self._frozen_weight(name))
                self.register_buffer(f"b_{name}", torch.zeros(d))
        if cfg.input_norm:                    # drawn last: the other parameters do not change
            self.t_0 = nn.Parameter(torch.randn(d, generator=gen))
            self.norm = nn.LayerNorm(d, eps=1e-12)

    def _init_trainable(self, name: str, gen: torch.Generator) -> None:
        d, s = self.cfg.d, self.cfg.init_scale
        if s is None:
            W = (2 * torch.rand(d, d, generator=gen) - 1) / math.sqrt(d)
            b = (2 * torch.rand(d, generator=gen) - 1) / math.sqrt(d)
        else:
            W, b = s * torch.rand(d, d, generator=gen), torch.zeros(d)
        setattr(self, f"W_{name}", nn.Parameter(W))
        setattr(self, f"b_{name}", nn.Parameter(b))

    def _frozen_weight(self, name: str) -> torch.Tensor:
        d = self.cfg.d
        if name != "V":
            return torch.zeros(d, d)                                  # uniform attention
        if self.cfg.value == "identity":
            return torch.eye(d)
        topic = torch.as_tensor(topic_of_id(self.cfg.T, self.cfg.v))
        return ((topic[:, None] == topic[None, :]) & (topic[:, None] >= 0)).float()

    def inputs(self) -> torch.Tensor:
        """Input vector of every token id, (d, d): ``E``, or ``LN(E + t_0)`` with ``input_norm``."""
        return self.norm(self.E + self.t_0) if self.cfg.input_norm else self.E

    def tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value of every token id, each (d, d): ``h W + b`` with ``h = inputs()``."""
        H = self.inputs()
        return tuple(H @ getattr(self, f"W_{n}") + getattr(self, f"b_{n}") for n in "QKV")

    def forward(self, data: MaskedCorpus, return_attention: bool = False):
        """Logits (B, m, d) at ``data.query_pos``; with ``return_attention`` also A (B, m, L).

        ``A_i(a) = c_a exp(s_ia) / sum_b c_b exp(s_ib)`` is the attention mass on token type ``a``;
        a position ``j`` holding ``a`` receives ``A_i(a) / c_a``.
        """
        Qt, Kt, Vt = self.tables()
        B, d = data.inputs.shape[0], self.cfg.d
        counts = torch.zeros(B, d).scatter_add_(1, data.inputs, data.key_visible.float())  # (B, d)
        q = Qt[data.inputs.gather(1, data.query_pos)]                             # (B, m, d)
        scores = q @ Kt.T / math.sqrt(d) + counts.log()[:, None, :]               # (B, m, d)
        A_type = torch.softmax(scores, dim=-1)
        logits = A_type @ Vt                                                      # (B, m, d)
        if not return_attention:
            return logits
        per_key = (A_type / counts.clamp_min(1)[:, None, :]).gather(
            2, data.inputs[:, None, :].expand(-1, q.shape[1], -1))               # (B, m, L)
        return logits, per_key * data.key_visible[:, None, :]
