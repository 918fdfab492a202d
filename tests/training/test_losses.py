"""Every trainer's loss module learns: on one fixed batch a few optimizer steps lower the loss."""
from __future__ import annotations

import pytest
import torch

from amplify.config import ForwardDynamicsConfig, InverseDynamicsConfig, MotionTokenizerConfig
from amplify.models.forward_dynamics import ForwardDynamics
from amplify.models.inverse_dynamics import InverseDynamics
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.tracks import points_to_velocities
from training.trainers.common import frozen
from training.trainers.fd import FDLoss
from training.trainers.id import IDLoss
from training.trainers.mt import MTLoss

B, V, H, N, P = 4, 2, 8, 6, 4


def tiny_mt() -> MotionTokenizer:
    torch.manual_seed(0)
    return MotionTokenizer(MotionTokenizerConfig(num_tracks=N, true_horizon=H, track_pred_horizon=H, hidden_dim=32,
                                                 num_heads=2, codebook_size=64, decoder_mlp_hidden_dim=16,
                                                 rel_cls_img_size=[9, 9], dropout=0.0))


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    start = torch.rand(B, V, 1, N, 2, generator=g) * 1.6 - 0.8
    steps = torch.randint(-3, 4, (B, V, H - 1, N, 2), generator=g).float() / 64
    tracks = torch.cat([start, start + steps.cumsum(2)], dim=2)  # (b, v, H, n, 2)
    return {"tracks": tracks, "img_tokens": torch.randn(B, V, P, 512, generator=g),
            "text_emb": torch.randn(B, 512, generator=g), "proprio": torch.randn(B, 9, generator=g),
            "actions": torch.rand(B, H, 7, generator=g) * 1.6 - 0.8}


def descend(module: torch.nn.Module, data: dict, steps: int = 25, lr: float = 2e-3) -> tuple[float, float]:
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    torch.manual_seed(0)
    first = None
    for _ in range(steps):
        loss, _ = module(data)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        return first, float(module(data)[0])


def test_mt_loss_goes_down():
    mt = tiny_mt().train()
    first, last = descend(MTLoss(mt), batch(), steps=40, lr=3e-3)
    assert last < 0.8 * first, (first, last)


def test_fast_decoder_matches_reference_gradients():
    mt = tiny_mt().train()
    data = batch()
    losses, grads = [], []
    for fast in (False, True):
        mt.zero_grad()
        loss, _ = MTLoss(mt, fast_decoder=fast)(data)
        loss.backward()
        losses.append(loss.detach())
        grads.append(mt.decoder.decoder_mlp[0].weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_fd_loss_goes_down():
    mt = frozen(tiny_mt())
    cfg = ForwardDynamicsConfig(hidden_dim=32, num_heads=2, num_layers=1, codebook_size=64, pred_seq_len=H - 1,
                                num_views=V, img_tokens_per_view=P, dropout=0.0, mask_unused_logits=True)
    fd = ForwardDynamics(cfg, quantize=mt.quantize)
    first, last = descend(FDLoss(fd, mt), batch(), steps=60)
    assert last < 0.5 * first, (first, last)
    assert not any(p.requires_grad for p in mt.parameters())


def test_fd_keeps_the_tokenizers_quantizer():
    """FD shares the trained tokenizer's quantizer: building FD must not re-initialize it (the FD trainer
    once did, so FD learned and was scored on the codes of a random projection, not the tokenizer's)."""
    mt = frozen(tiny_mt())
    with torch.no_grad():
        for p in mt.quantize.parameters():
            p.add_(torch.randn_like(p))  # as after training: not what a fresh init gives
    before = {k: v.clone() for k, v in mt.quantize.state_dict().items()}
    assert before  # the quantizer has projections to lose
    vel = points_to_velocities(batch()["tracks"], time_dim=2)
    idx = mt.tokenize(vel)[1]
    cfg = ForwardDynamicsConfig(hidden_dim=32, num_heads=2, num_layers=1, codebook_size=64, pred_seq_len=H - 1,
                                num_views=V, img_tokens_per_view=P, dropout=0.0)
    ForwardDynamics(cfg, quantize=mt.quantize)
    assert all(torch.equal(v, before[k]) for k, v in mt.quantize.state_dict().items())
    assert torch.equal(mt.tokenize(vel)[1], idx)


@pytest.mark.parametrize("head", ["gaussian", "diffusion", "flow"])
def test_id_loss_goes_down_each_head(head):
    mt = frozen(tiny_mt())
    cfg = InverseDynamicsConfig(head=head, hidden_dim=32, num_heads=2, num_layers=1, action_horizon=H,
                                num_img_tokens=P, img_embed_dim=V * 512, num_code_tokens=H - 1, dropout=0.0,
                                diffusion_steps=20, diffusion_sample_steps=5, flow_matching_steps=5)
    torch.manual_seed(0)
    loss_module = IDLoss(InverseDynamics(cfg), mt, None)
    first, last = descend(loss_module, batch(), steps=30)
    assert last < 0.7 * first, (head, first, last)


@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_sampling_heads_are_deterministic_unless_random(head):
    base = dict(head=head, hidden_dim=32, num_heads=2, num_layers=1, action_horizon=H, num_img_tokens=P,
                img_embed_dim=V * 512, num_code_tokens=H - 1, diffusion_steps=20, diffusion_sample_steps=4,
                flow_matching_steps=4)
    data = batch()
    codes = torch.randn(B, H - 1, 32)
    outs = {}
    for noise in ("zero", "seeded", "random"):
        torch.manual_seed(0)
        idm = InverseDynamics(InverseDynamicsConfig(**base, sample_noise=noise)).eval()
        inputs = dict(img_tokens=data["img_tokens"].flatten(2, 3).reshape(B, P, V * 512), proprio=data["proprio"], codes=codes)
        with torch.no_grad():
            outs[noise] = (idm(**inputs), idm(**inputs))
        assert outs[noise][0].shape == (B, H, 7) and outs[noise][0].abs().max() <= 1.0
    assert torch.equal(*outs["zero"]) and torch.equal(*outs["seeded"])
    assert not torch.equal(*outs["random"])
    assert not torch.equal(outs["zero"][0], outs["seeded"][0])


@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_bundle_acts_with_sampling_head(head):
    from amplify import AMPLIFY
    from amplify.config import apply_overrides
    from amplify.presets import small

    cfg = apply_overrides(small(), [f"inverse_dynamics.head={head}", "inverse_dynamics.diffusion_sample_steps=3",
                                    "inverse_dynamics.flow_matching_steps=3", "vision.image_size=64"])
    cfg.forward_dynamics.img_tokens_per_view = 4
    cfg.inverse_dynamics.num_img_tokens = 4
    torch.manual_seed(0)
    model = AMPLIFY(cfg).eval()
    images = torch.rand(1, 2, 128, 128, 3)
    a = model.act(images, torch.zeros(1, 9), text_emb=torch.zeros(1, 512))
    assert a.shape == (1, 16, 7) and torch.equal(a, model.act(images, torch.zeros(1, 9), text_emb=torch.zeros(1, 512)))
