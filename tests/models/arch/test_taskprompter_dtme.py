"""DTME on TaskPrompter's encoder: a fork at identity modulation keeps the function, task tokens join the
attention but not the task maps' scores, task t's loss stays in stream t, calibration measures the prompted
blocks, Recon is refused."""

from __future__ import annotations

import pytest
import torch

from mtlkit.dtme import analyze_token_space, apply_dtme, apply_recon
from mtlkit.dtme._calibrate import token_gradients
from mtlkit.errors import MtlkitError
from mtlkit.models.arch import TaskPrompter

from ._support import make_batch, make_tasks, mtlkit_vit

CHANNELS = {"semseg": 5, "depth": 1, "normals": 3}
SIZE = 32  # micro ViT, 8x8 patches: a 4x4 grid, 2x2 channel windows


def _model(use_ctr: bool = False) -> TaskPrompter:
    torch.manual_seed(0)
    return TaskPrompter(mtlkit_vit(SIZE), CHANNELS, embed_dim=16, final_embed_dim=16, chan_nheads=4,
                        use_ctr=use_ctr)


def _expand(model: TaskPrompter, tm: list[int], te: list[int], tokens: int = 2) -> TaskPrompter:
    apply_dtme(model, {"tasks": list(CHANNELS), "tm_layers": tm, "te_layers": te, "tokens": tokens, "version": 2})
    return model


@pytest.mark.parametrize("use_ctr", [False, True])
def test_identity_modulation_fork_keeps_the_function(use_ctr: bool) -> None:
    """TM at identity (w=1, b=0), no TE: forking the patches and prompts per task changes no output."""
    x = torch.randn(2, 3, SIZE, SIZE)
    plain = _model(use_ctr).eval()
    with torch.no_grad():
        ref = plain(x)
        expanded = _expand(plain, [0, 2], [])
        assert expanded.backbone.fork_layer == 1
        got = expanded(x)
        sub = expanded(x, tasks=["depth"])  # only depth's stream runs
    for t in CHANNELS:
        assert (got[t] - ref[t]).abs().max() < 1e-6
    assert set(sub) == {"depth"} and (sub["depth"] - ref["depth"]).abs().max() < 1e-6
    # a non-identity modulator of depth's stream changes depth's output only (without CTR-like mixing too)
    with torch.no_grad():
        expanded.backbone.modulators["0"].bias["depth"].fill_(0.5)
        moved = expanded(x)
    assert (moved["depth"] - ref["depth"]).abs().max() > 1e-3
    for t in ("semseg", "normals"):
        assert (moved[t] - ref[t]).abs().max() < 1e-6


def test_task_tokens_join_the_attention_not_the_task_scores() -> None:
    """A block on (prompts, patches, task tokens): patches and prompts are the ViT block on the whole sequence
    (token_trans1 zeroed), the spatial scores are those of prompts and patches only, the channel scores ignore
    the task tokens."""
    model = _model().eval()
    blk = model.backbone.blocks[1]
    torch.nn.init.zeros_(model.token_trans1[1].weight)
    torch.nn.init.zeros_(model.token_trans1[1].bias)
    p, x, e = torch.randn(2, 3, 128), torch.randn(2, 16, 128), torch.randn(2, 2, 128)
    with torch.no_grad():
        ref = blk(torch.cat([p, x, e], 1))
        nx, np_, (spa, chan) = model._block(1, blk, torch.cat([x, e], 1), p)
        _, _, (spa0, chan0) = model._block(1, blk, x, p)
    torch.testing.assert_close(nx, ref[:, 3:])
    torch.testing.assert_close(np_, ref[:, :3])
    assert spa.shape == spa0.shape == (2, model.num_heads, 19, 19)
    torch.testing.assert_close(spa, spa0)  # raw scores: the task tokens are only extra keys of the softmax
    torch.testing.assert_close(chan, chan0)


def test_task_tokens_extend_the_output_of_their_layer() -> None:
    """TE of layer 1: X_1 is unchanged, block 2 reads the m task tokens after the patches (its output holds
    them, T streams), X_2's prompts and patches change, and the tokens are dropped after block 2."""
    x = torch.randn(2, 3, SIZE, SIZE)
    model = _model().eval()
    seen: dict[int, torch.Tensor] = {}
    for i, tap in enumerate(model.token_taps):
        tap.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
    with torch.no_grad():
        model(x)
        ref = dict(seen)
        _expand(model, [], [1], tokens=2)
        for e in model.backbone.expanders["1"].tokens.values():
            e.normal_()
        model(x)
    assert [tuple(seen[i].shape) for i in range(4)] == [(2, 19, 128), (2, 19, 128), (6, 21, 128), (6, 19, 128)]
    torch.testing.assert_close(seen[1], ref[1])
    for s in range(3):  # every stream's prompts and patches moved
        assert (seen[2][2 * s : 2 * s + 2, :19] - ref[2]).abs().max() > 1e-2


@pytest.mark.parametrize("use_ctr", [False, True])
def test_a_task_loss_reaches_only_its_own_stream(use_ctr: bool) -> None:
    """Task t's maps come from stream t (with CTR: every task's decoder on stream t's tokens and prompts), so
    task t's loss gives no gradient to another stream's modulators / task tokens; they are task t's
    parameters in the split."""
    model = _expand(_model(use_ctr).train(), [0, 1], [1])
    batch = make_batch(CHANNELS, size=SIZE)
    tasks = make_tasks(CHANNELS)
    bb = model.backbone
    for t in CHANNELS:
        model.zero_grad(set_to_none=True)
        model.task_losses(model(batch["image"]), batch, tasks)[t].backward()
        for u in CHANNELS:
            grads = [p.grad for p in bb.task_specific_parameters(u)]
            if u == t:
                assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
            else:
                assert all(g is None or float(g.abs().sum()) == 0 for g in grads)
    own = {id(p) for p in bb.task_specific_parameters("depth")}
    assert own <= {id(p) for p in model.task_parameters("depth")}
    assert not own & {id(p) for p in model.shared_parameters()}


def test_calibration_measures_prompts_and_patches() -> None:
    """X_l of TaskPrompter: the T prompts and N patches leaving block l (task tokens cut); after the fork the
    streams are pooled (T per token) for the covariance."""
    batches = [make_batch(CHANNELS, size=SIZE, seed=s) for s in range(2)]
    tasks = make_tasks(CHANNELS)
    model = _model().eval()
    plain = analyze_token_space(model, tasks, batches, num_batches=2)
    assert len(plain.layers) == 4 and plain.streams is None
    assert plain.covariance_tokens == 2 * 2 * (3 + 16)  # batches x images x (prompts + patches)
    assert all(0 <= layer.range_rate <= 1 for layer in plain.layers)
    _expand(model, [0], [1])
    exp = analyze_token_space(model, tasks, batches, num_batches=2)
    assert exp.streams == list(CHANNELS) and len(exp.layers) == 4
    assert exp.covariance_tokens == 2 * 2 * (3 + 16)  # layer 0 is before the fork: one stream
    assert exp.layers[2].dim == 128
    # the gradients are taken at the prompted blocks' outputs: the prompts leaving the last block are read by
    # nothing (zero gradient), those of block 1 feed block 2 (non-zero), per own stream after the fork
    grads, _ = token_gradients(model, tasks, batches[0])
    assert [tuple(g.shape) for g in grads] == [(3, 2 * 19, 128)] * 4
    last, first = grads[3].reshape(3, 2, 19, 128), grads[1].reshape(3, 2, 19, 128)
    assert float(last[:, :, :3].abs().max()) == 0 and float(last[:, :, 3:].abs().max()) > 0
    assert all(float(first[t, :, :3].abs().max()) > 0 for t in range(3))


def test_recon_is_refused() -> None:
    model = _model()
    apply_recon(model, {"tasks": list(CHANNELS), "layers": [3]})
    with pytest.raises(MtlkitError, match="Recon"):
        model(torch.randn(2, 3, SIZE, SIZE))
