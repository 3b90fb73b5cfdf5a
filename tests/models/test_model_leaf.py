"""LEAF's models: the FEMNIST CNN and the Shakespeare character LSTM; their inspect rows."""

from __future__ import annotations

import torch
from torch import nn

from fedsim.data.text import ALPHABET, VOCAB_SIZE, decode, encode
from fedsim.models import build_model, format_report, inspect_model, takes_tokens, token_models
from fedsim.schema.sections import ModelConfig


def test_femnist_cnn_is_leafs_layout():
    model = build_model(ModelConfig(name="femnist-cnn"), (1, 28, 28), 62)
    enc = model.encoder
    assert (enc.conv1.in_channels, enc.conv1.out_channels, enc.conv1.kernel_size, enc.conv1.padding) == (
        1,
        32,
        (5, 5),
        (2, 2),
    )
    assert (enc.conv2.in_channels, enc.conv2.out_channels, enc.conv2.kernel_size, enc.conv2.padding) == (
        32,
        64,
        (5, 5),
        (2, 2),
    )
    assert (enc.fc.in_features, enc.fc.out_features) == (7 * 7 * 64, 2048)
    assert (model.classifier.in_features, model.classifier.out_features) == (2048, 62)
    # LEAF's FEMNIST CNN: 6,603,710 weights (conv 832 + 51,264, fc 6,424,576, out 127,038)
    assert sum(p.numel() for p in model.parameters()) == 832 + 51_264 + 6_424_576 + 127_038 == 6_603_710
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 62)


def test_femnist_cnn_flops_by_hand():
    report = inspect_model(build_model(ModelConfig(name="femnist-cnn"), (1, 28, 28), 62), (1, 28, 28))
    conv1 = 2 * 32 * 28 * 28 * 1 * 25
    conv2 = 2 * 64 * 14 * 14 * 32 * 25
    fc = 2 * 3136 * 2048
    out = 2 * 2048 * 62
    assert report.total_flops == conv1 + conv2 + fc + out == 34_423_808


def test_char_lstm_is_mcmahans_layout():
    model = build_model(ModelConfig(name="char-lstm"), (80,), VOCAB_SIZE)
    enc = model.encoder
    assert (enc.embedding.num_embeddings, enc.embedding.embedding_dim) == (80, 8)
    assert (enc.lstm.input_size, enc.lstm.hidden_size, enc.lstm.num_layers, enc.lstm.batch_first) == (8, 256, 2, True)
    assert (model.classifier.in_features, model.classifier.out_features) == (256, 80)
    assert model.input_dtype == torch.int64 and takes_tokens("char-lstm") and token_models() == ["char-lstm"]
    tokens = torch.randint(0, 80, (4, 80))
    h, z, logits = model.forward_all(tokens)
    assert h.shape == (4, 256) and z is h and logits.shape == (4, 80)
    # the representation is the second LSTM layer's output at the last position
    out, _ = enc.lstm(enc.embedding(tokens))
    torch.testing.assert_close(h, out[:, -1, :])


def test_char_lstm_with_projection_head():
    model = build_model(ModelConfig(name="char-lstm", projection_head=True, proj_dim=64), (80,), 80)
    h, z, logits = model.forward_all(torch.randint(0, 80, (2, 80)))
    assert (h.shape, z.shape, logits.shape) == ((2, 256), (2, 64), (2, 80))


def test_char_lstm_dropout_between_lstm_layers():
    model = build_model(ModelConfig(name="char-lstm", dropout=0.25), (80,), 80)
    assert model.encoder.lstm.dropout == 0.25
    assert isinstance(model.dropout, nn.Dropout)


def test_char_lstm_inspect_counts_the_lstm_by_formula():
    report = inspect_model(build_model(ModelConfig(name="char-lstm"), (80,), 80), (80,))
    # 2 * 4 gates * H * (I + H) per step and layer: layer 1 I = 8, layer 2 I = 256; 80 steps
    lstm = 80 * (2 * 4 * 256 * (8 + 256) + 2 * 4 * 256 * (256 + 256))
    assert lstm == 127_139_840
    assert report.total_flops == lstm + 2 * 256 * 80 == sum(r.flops for r in report.rows)
    assert (
        report.total_params == 80 * 8 + 4 * 256 * (8 + 256 + 2) + 4 * 256 * (256 + 256 + 2) + 256 * 80 + 80 == 819_920
    )
    text = format_report(report)
    assert "127.18 MFLOPs" in text and "LSTM" in text


def test_alphabet_is_leafs_and_encodes_exactly():
    assert VOCAB_SIZE == 80 and ALPHABET[0] == "\n" and ALPHABET[1] == " " and ALPHABET[-1] == "}"
    tokens = encode(["To be", "or no"])
    assert tokens.dtype.name == "int64" and tokens.shape == (2, 5)
    assert tokens[0].tolist() == [ALPHABET.index(c) for c in "To be"]
    assert decode(tokens[1]) == "or no"
