"""The vanilla encoder-only transformer of Garnier-Brun et al. (arXiv 2408.15138), written out.

Token embedding (vocabulary ``q`` for root classification, ``q + 1`` for masked language
modelling, where the id ``q`` is the mask, the same symbol `lib.bp` treats as unobserved), fixed
sinusoidal positions, ``n_layers`` post-LayerNorm encoder layers, and one of two linear readouts:
flatten-then-linear for the root class, per-token linear for the masked symbol.

The encoder layer is written out (attention included) rather than taken from
``torch.nn.TransformerEncoderLayer`` so that every layer's attention pattern can be returned by
the same forward pass; its parameter names and arithmetic match PyTorch's post-LN layer, which the
tests check by loading one state dict into both. Introduced in chapter 4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.validate import check_int, check_real

TASKS = ("root", "mlm")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the encoder; the defaults are the paper's (d 128, 4 layers, 1 head, ff 2048, dropout 0.1).

    Attributes
    ----------
    vocab : int
        Number of input token ids: ``q`` for ``task="root"``, ``q + 1`` for ``task="mlm"``.
    seq_len : int
        Sequence length ``2**depth``.
    n_classes : int
        Output classes ``q`` (root symbol, or masked leaf symbol).
    task : str
        ``"root"`` (flatten + linear readout) or ``"mlm"`` (per-token linear readout).
    """

    vocab: int
    seq_len: int
    n_classes: int
    task: str = "root"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 1
    d_ff: int = 2048
    dropout: float = 0.1

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        check_int("n_classes", self.n_classes, 2)
        check_int("seq_len", self.seq_len, 1)
        expected = self.n_classes + (self.task == "mlm")
        if check_int("vocab", self.vocab, 2) != expected:
            raise ValueError(f"vocab must be n_classes{' + 1 (mask id)' if self.task == 'mlm' else ''} "
                             f"= {expected} for task {self.task!r}, got {self.vocab}")
        check_int("n_heads", self.n_heads, 1)
        if check_int("d_model", self.d_model, 1) % self.n_heads:
            raise ValueError(f"d_model must be divisible by n_heads, got d_model={self.d_model}, "
                             f"n_heads={self.n_heads}")
        check_int("n_layers", self.n_layers, 1)
        check_int("d_ff", self.d_ff, 1)
        if check_real("dropout", self.dropout, 0.0) >= 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def mask_id(self) -> int:
        """Input id of the mask token (``q``); only meaningful for ``task="mlm"``."""
        return self.n_classes


def sinusoidal_positions(seq_len: int, d_model: int) -> torch.Tensor:
    """Fixed positional encoding (seq_len, d_model): ``pe[p, 2i] = sin(p / 10000**(2i/d))``, ``pe[p, 2i+1] = cos(...)``."""
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
    return pe


def token_ids(cfg: ModelConfig, x) -> torch.Tensor:
    """``x`` as a long tensor (n, seq_len), after checking its shape (``n >= 1``) and ids in ``0..vocab-1``."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.long)
    if x.ndim != 2 or len(x) == 0 or x.shape[1] != cfg.seq_len:
        raise ValueError(f"x must have shape (n >= 1, {cfg.seq_len}), got {tuple(x.shape)}")
    if x.min() < 0 or x.max() >= cfg.vocab:
        raise ValueError(f"x must hold token ids in 0..{cfg.vocab - 1}")
    return x


class SelfAttention(nn.Module):
    """Multi-head self-attention with PyTorch's parameter layout (``in_proj_weight`` stacks Q, K, V)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, key_visible: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the attention output (B, L, d) and the pattern (B, H, L, L), rows summing to one.

        ``key_visible`` (B, L), optional: keys a query may attend to (None: all of them).
        """
        B, L, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)              # (B, L, 3d)
        qkv = qkv.view(B, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        Q, K, V = qkv[0], qkv[1], qkv[2]                                       # (B, H, L, d_h)
        scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])              # (B, H, L, L)
        if key_visible is not None:
            scores = scores.masked_fill(~key_visible[:, None, None, :], -math.inf)
        pattern = torch.softmax(scores, dim=-1)
        out = (self.dropout(pattern) @ V).transpose(1, 2).reshape(B, L, d)    # (B, L, d)
        return self.out_proj(out), pattern


class EncoderLayer(nn.Module):
    """Post-LN encoder layer: ``x = LN1(x + attn(x))``, ``x = LN2(x + W2 relu(W1 x))``, as PyTorch's default."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.linear1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.linear2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.dropout = nn.Dropout(cfg.dropout)     # inside the feed-forward block
        self.dropout1 = nn.Dropout(cfg.dropout)    # on the attention branch
        self.dropout2 = nn.Dropout(cfg.dropout)    # on the feed-forward branch

    def forward(self, x: torch.Tensor, key_visible: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map (B, L, d) to (B, L, d); also return the attention pattern (B, H, L, L).

        ``key_visible`` (B, L), optional: keys a query may attend to (None: all of them).
        """
        a, pattern = self.self_attn(x, key_visible)
        x = self.norm1(x + self.dropout1(a))
        x = self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        return x, pattern


class Transformer(nn.Module):
    """Encoder-only transformer with a root (B, q) or a masked-token (B, L, q) readout.

    Parameters
    ----------
    cfg : ModelConfig
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.register_buffer("pe", sinusoidal_positions(cfg.seq_len, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        d_in = cfg.seq_len * cfg.d_model if cfg.task == "root" else cfg.d_model
        self.readout = nn.Linear(d_in, cfg.n_classes)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """Logits for token ids ``x`` (B, L) in ``0..vocab-1``.

        Returns
        -------
        logits : torch.Tensor
            (B, q) for ``task="root"``, (B, L, q) for ``task="mlm"``.
        patterns : list of torch.Tensor, only if ``return_attention``
            One (B, H, L, L) attention pattern per layer, queries on axis 2 and keys on axis 3.
        """
        h, patterns = self.hidden(x)
        logits = self.readout(h.flatten(1) if self.cfg.task == "root" else h)
        return (logits, patterns) if return_attention else logits

    def hidden(self, x: torch.Tensor, key_visible: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The last layer's token representations (B, L, d) and every layer's pattern (B, H, L, L).

        ``key_visible`` (B, L), optional: keys every layer may attend to (None: all of them);
        chapter 7 hides masked positions this way.
        """
        h = self.dropout(self.embed(x) + self.pe)                              # (B, L, d)
        patterns = []
        for layer in self.layers:
            h, pattern = layer(h, key_visible)
            patterns.append(pattern)
        return h, patterns
