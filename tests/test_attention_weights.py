"""Attention weights read from a model (``attention_inputs`` + ``Attention.probs``) against transformers'
``output_attentions`` of the same weights (eager attention), as notebooks 08, 10 and 11 read them."""

from __future__ import annotations

import torch
from test_model_whole import hf_model, make_args, random_model

from simplellama.attention import attention_inputs


def test_recorded_weights_match_transformers_output_attentions():
    args = make_args(n_kv_heads=2, factor=8.0)  # GQA, G = 2, Llama 3.1 RoPE scaling
    model = random_model(args)
    ref = hf_model(args, model.state_dict())
    tokens = torch.randint(0, args.vocab_size, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), attention_inputs(model) as inputs:
        model(tokens)
        expected = ref(tokens, output_attentions=True).attentions  # n_layers x (B, H, T, T)
    assert sorted(inputs) == list(range(args.n_layers))
    for i, layer in enumerate(model.layers):
        with torch.no_grad():
            weights = layer.attention.probs(*inputs[i])
        assert weights.shape == (2, args.n_heads, 40, 40)
        assert (weights - expected[i]).abs().max().item() <= 1e-5, f"layer {i}"


def test_hooks_are_removed_and_the_last_call_wins():
    args = make_args()
    model = random_model(args)
    tokens = torch.randint(0, args.vocab_size, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), attention_inputs(model) as inputs:
        model(tokens)
        model(tokens[:, :5])
    assert all(args_[0].shape[1] == 5 for args_ in inputs.values())
    assert all(not layer.attention._forward_pre_hooks for layer in model.layers)
    with torch.no_grad():
        model(tokens)  # outside the block: nothing is recorded any more
    assert all(args_[0].shape[1] == 5 for args_ in inputs.values())
