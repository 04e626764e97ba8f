"""Widening a trained UNet keeps its logits and gives training room to move the copies apart."""

import pytest
import torch

from wmrepair.config import TrainConfig, UNetConfig
from wmrepair.model import UNet
from wmrepair.widen import widen


def _trained_like(seed: int = 0) -> UNet:
    """A small UNet with non-trivial BatchNorm statistics (as after training), in eval mode."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(base_channels=4, depth=2))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_widened_model_computes_the_same_logits(mode):
    model = _trained_like()
    wide = widen(model, 7)
    assert wide.config.base_channels == 7 and wide.config.depth == 2
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in model.parameters())
    x = torch.rand(3, 3, 48, 40)
    getattr(model, mode)(), getattr(wide, mode)()
    with torch.no_grad():
        assert torch.allclose(model(x), wide(x), atol=1e-4)


def test_copies_get_different_gradients():
    """Equal shares would keep a channel and its copy identical for ever; random shares do not."""
    model = _trained_like().train()
    wide = widen(model, 8)
    assert wide.training and model.training  # both keep the mode the model was in
    wide(torch.rand(2, 3, 32, 32)).square().mean().backward()
    g = wide.stem.body[0].weight.grad  # 8 output channels: 0-3 the originals, 4-7 copies of them
    w = wide.stem.body[0].weight.detach()
    for j in range(4, 8):
        src = next(i for i in range(4) if torch.equal(w[i], w[j]))
        assert not torch.allclose(g[j], g[src])


def test_widening_refuses_what_it_cannot_keep():
    with pytest.raises(ValueError, match="cannot narrow"):
        widen(_trained_like(), 3)
    classic = UNet(UNetConfig(base_channels=4, depth=2, skip="concat", residual=False, decoder_convs=2,
                              upsample="transposed"))
    with pytest.raises(ValueError, match="default architecture"):
        widen(classic, 8)


def test_training_widens_the_shipped_weights_when_train_model_is_wider():
    from wmrepair.checkpoints import load_model
    from wmrepair.shipped import shipped_model
    from wmrepair.train import initial_model

    ref, _ = load_model(shipped_model())
    wider = ref.config.base_channels + 4
    cfg = TrainConfig(init="pretrained", model={**TrainConfig().model, "base_channels": wider})
    model, sha = initial_model(cfg)
    assert sha and model.config.base_channels == wider
    x = torch.rand(1, 3, 64, 64)
    ref.eval(), model.eval()
    with torch.no_grad():
        assert torch.allclose(ref(x), model(x), atol=1e-3)
