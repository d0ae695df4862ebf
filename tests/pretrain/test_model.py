import torch

from kiln.components.common.config import ModelConfig
from kiln.components.pretrain.model import Llama, sample_next


def small(**kw) -> Llama:
    cfg = ModelConfig(
        vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64, **kw
    )
    model = Llama(cfg)
    model.init_weights(seed=0)
    return model


def test_shapes_and_param_count():
    model = small()
    logits = model(torch.randint(0, 97, (3, 17)))
    assert logits.shape == (3, 17, 97)
    tied = small(tie_embeddings=True)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert model.num_params() - tied.num_params() == 97 * 32


def test_causal_mask_future_tokens_do_not_leak():
    model = small()
    x = torch.randint(0, 97, (2, 20))
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % 97
    assert torch.equal(model(x)[:, :12], model(y)[:, :12])
    assert not torch.allclose(model(x)[:, 12:], model(y)[:, 12:])


def test_residual_projections_are_scaled_at_init():
    model = small()
    q = model.layers[0].self_attn.qkv_proj.weight.std()
    o = model.layers[0].self_attn.o_proj.weight.std()
    assert 1.7 < float(q / o) < 2.3  # 1/sqrt(2·n_layers) = 1/2


def test_kv_cache_generation_matches_full_recompute():
    model = small().eval()
    prompt = torch.randint(0, 97, (2, 5))
    cached = model.generate(prompt, 12, temperature=0)
    seq = prompt
    for _ in range(12):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 5.0, 2.0]])
    gen = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=1, generator=gen)) for _ in range(20)}
    assert picks == {2}
    picks = {int(sample_next(logits, 1.0, top_p=0.5, generator=gen)) for _ in range(20)}
    assert picks == {2}
    picks = {int(sample_next(logits, 5.0, top_k=2, generator=gen)) for _ in range(200)}
    assert picks == {2, 3}


def test_generation_is_seeded_and_stops_at_eos():
    model = small().eval()
    prompt = torch.randint(0, 97, (1, 4))
    a = model.generate(prompt, 10, top_k=20, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 10, top_k=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (1, 14)
    eos = int(a[0, 5])
    stopped = model.generate(
        prompt, 10, top_k=20, eos_id=eos, generator=torch.Generator().manual_seed(1)
    )
    assert stopped.shape[1] == 6 and int(stopped[0, -1]) == eos
