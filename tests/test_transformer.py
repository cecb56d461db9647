"""Tests of lib.transformer: shapes, attention capture, and equality with PyTorch's own encoder."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from lib import attention, probe, train
from lib.transformer import ModelConfig, Transformer, sinusoidal_positions, token_ids

ROOT = ModelConfig(vocab=4, seq_len=16, n_classes=4, task="root", d_model=32, n_layers=3,
                   n_heads=4, d_ff=64, dropout=0.1)
MLM = replace(ROOT, vocab=5, task="mlm")


def reference_encoder(cfg):
    """PyTorch's post-LN encoder stack with the same sizes (an independent implementation)."""
    layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout,
                                       batch_first=True)
    return nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)


@pytest.mark.parametrize("cfg", [ROOT, MLM, replace(ROOT, n_heads=1, d_ff=2048)])
def test_forward_equals_pytorch_encoder_in_eval_mode(cfg):
    torch.manual_seed(0)
    model, ref = Transformer(cfg).eval(), reference_encoder(cfg).eval()
    for mine, theirs in zip(model.layers, ref.layers):
        theirs.load_state_dict(mine.state_dict())          # same parameter names, strict load
    x = torch.randint(cfg.vocab, (9, cfg.seq_len))
    with torch.no_grad():
        h = ref(model.embed(x) + sinusoidal_positions(cfg.seq_len, cfg.d_model))
        expected = model.readout(h.flatten(1) if cfg.task == "root" else h)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)


def test_attention_pattern_equals_pytorch_weights():
    torch.manual_seed(1)
    model = Transformer(ROOT).eval()
    x = torch.randint(4, (5, 16))
    mha = nn.MultiheadAttention(ROOT.d_model, ROOT.n_heads, batch_first=True).eval()
    mha.load_state_dict(model.layers[0].self_attn.state_dict())
    with torch.no_grad():
        _, patterns = model(x, return_attention=True)
        h = model.embed(x) + model.pe
        _, weights = mha(h, h, h, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(patterns[0], weights, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfg, shape", [(ROOT, (7, 4)), (MLM, (7, 16, 4))])
def test_shapes_and_attention_rows_sum_to_one(cfg, shape):
    model = Transformer(cfg).eval()
    x = torch.randint(cfg.vocab, (7, cfg.seq_len))
    logits, patterns = model(x, return_attention=True)
    assert logits.shape == shape
    assert len(patterns) == cfg.n_layers
    for p in patterns:
        assert p.shape == (7, cfg.n_heads, cfg.seq_len, cfg.seq_len)
        torch.testing.assert_close(p.sum(-1), torch.ones(7, cfg.n_heads, cfg.seq_len))
    torch.testing.assert_close(model(x), logits, rtol=0, atol=0)   # capture leaves the output as is


def test_dropout_acts_only_in_train_mode():
    model = Transformer(ROOT)
    x = torch.randint(4, (8, 16))
    assert not torch.equal(model.train()(x), model(x))
    assert torch.equal(model.eval()(x), model(x))


def test_sinusoidal_positions_formula():
    pe = sinusoidal_positions(16, 32)
    pos, i = 5, 3
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 32)), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 32)), abs=1e-6)


def test_paper_sizes_have_the_papers_parameter_count():
    """593,024 parameters per encoder layer at d 128, ff 2048 (the reference code's count)."""
    cfg = ModelConfig(vocab=4, seq_len=16, n_classes=4)
    layer_params = sum(p.numel() for p in Transformer(cfg).layers[0].parameters())
    assert layer_params == 593_024


@pytest.mark.parametrize("fields, match", [
    ({"d_model": 30, "n_heads": 4}, "divisible by n_heads"),
    ({"task": "causal"}, "task must be one of"),
    ({"vocab": 5}, "vocab must be n_classes"),
    ({"dropout": 1.0}, "dropout"),
    ({"n_layers": 0}, "n_layers"),
])
def test_bad_config_raises(fields, match):
    with pytest.raises(ValueError, match=match):
        replace(ROOT, **fields)


def test_mlm_vocabulary_includes_the_mask():
    with pytest.raises(ValueError, match=r"n_classes \+ 1"):
        replace(MLM, vocab=4)
    assert MLM.mask_id == 4


@pytest.mark.parametrize("x, match", [
    (np.zeros((2, 7), dtype=int), r"shape \(n >= 1, 8\)"),
    (np.zeros((0, 8), dtype=int), r"shape \(n >= 1, 8\)"),
    (np.full((2, 8), 5), r"token ids in 0..4"),
    (np.full((2, 8), -1), r"token ids in 0..4"),
])
def test_token_ids_rejects_bad_inputs_for_every_caller(x, match):
    cfg = ModelConfig(vocab=5, seq_len=8, n_classes=4, task="mlm", d_model=8, n_layers=1, n_heads=2, d_ff=8)
    model = Transformer(cfg)
    for call in (lambda: token_ids(cfg, x), lambda: probe.residual_stream(model, x),
                 lambda: attention.average_patterns(model, x), lambda: train.log_probs(model, x)):
        with pytest.raises(ValueError, match=match):
            call()
    assert token_ids(cfg, np.ones((3, 8))).dtype == torch.long
