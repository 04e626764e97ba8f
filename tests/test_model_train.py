import copy

import pytest
import torch

from wmrepair.checkpoints import CheckpointManager, EarlyStopping, load, select_best
from wmrepair.losses import confusion, dice_loss, hard_negative_loss, iou_f1, segmentation_loss
from wmrepair.model import UNet, UNetConfig
from wmrepair.train import TrainConfig, lr_factor

CLASSIC = {"skip": "concat", "decoder_convs": 2, "residual": False, "upsample": "transposed"}


@pytest.mark.parametrize("arch", [{}, CLASSIC], ids=["light-decoder", "classic"])
def test_unet_shapes(arch):
    m = UNet(UNetConfig(base_channels=4, depth=3, **arch)).eval()  # s2d: half-res body, full-res logits
    assert m(torch.rand(2, 3, 64, 48)).shape == (2, 1, 64, 48)
    assert m.multiple == 16
    plain = UNet(UNetConfig(base_channels=4, depth=3, s2d=False, **arch)).eval()
    assert plain(torch.rand(2, 3, 64, 48)).shape == (2, 1, 64, 48)
    assert plain.multiple == 8


def test_light_decoder_is_cheaper_than_the_classic_one():
    """Adding skips and one decoder conv: fewer weights (and FLOPs) for the same encoder."""
    light, classic = UNet(UNetConfig()), UNet(UNetConfig(**CLASSIC))
    n = [sum(p.numel() for p in m.dec.parameters()) for m in (light, classic)]
    assert n[0] < n[1] / 2  # c x c instead of 2c x c + c x c per level
    assert isinstance(light.up[0][1], torch.nn.Upsample) and isinstance(classic.up[0], torch.nn.ConvTranspose2d)


@pytest.mark.parametrize("field,value", [("skip", "sum"), ("upsample", "bilinear")])
def test_unknown_architecture_names_are_refused(field, value):
    with pytest.raises(ValueError, match=f"model.{field} must be"):
        UNet(UNetConfig(**{field: value}))


def test_model_files_from_before_s2d_still_load(tmp_path):
    from wmrepair.checkpoints import atomic_save, load_model

    old = UNet(UNetConfig(base_channels=4, depth=2, s2d=False, **CLASSIC))
    atomic_save({"state_dict": old.state_dict(), "meta": {"model": {"base_channels": 4, "depth": 2, "in_channels": 3}}},
                tmp_path / "old.pt")
    m, _ = load_model(tmp_path / "old.pt")
    assert m.config.s2d is False and m.config.skip == "concat" and m.config.upsample == "transposed"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), old.eval()(x))


def test_model_files_from_before_the_light_decoder_still_load(tmp_path):
    from wmrepair.checkpoints import atomic_save, load_model

    old = UNet(UNetConfig(base_channels=4, depth=2, **CLASSIC))
    atomic_save({"state_dict": old.state_dict(),
                 "meta": {"model": {"base_channels": 4, "depth": 2, "in_channels": 3, "s2d": True}}}, tmp_path / "old.pt")
    m, _ = load_model(tmp_path / "old.pt")
    assert m.config == UNetConfig(base_channels=4, depth=2, **CLASSIC)


@pytest.mark.parametrize("arch", [{}, CLASSIC], ids=["light-decoder", "classic"])
def test_inference_folding_keeps_the_function(arch):
    from wmrepair.model import fold_batchnorm, fold_space_to_depth

    torch.manual_seed(0)
    m = UNet(UNetConfig(base_channels=4, depth=2, **arch))
    for _ in range(3):  # give BN non-trivial running statistics
        m(torch.rand(4, 3, 32, 32) * 3)
    m.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        folded = fold_batchnorm(copy.deepcopy(m))
        assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in folded.modules())
        assert torch.allclose(folded(x), ref, atol=1e-5)
        stem_conv = fold_space_to_depth(folded)
        first = stem_conv.stem.body[0] if m.config.residual else stem_conv.stem[0]
        assert stem_conv.s2d_in_stem and first.kernel_size == (6, 6)
        if m.config.residual:  # the shortcut's 1x1 conv on unshuffled input: a 2x2 stride-2 conv
            assert stem_conv.stem.proj[0].kernel_size == (2, 2) and stem_conv.stem.proj[0].stride == (2, 2)
        assert torch.allclose(stem_conv(x), ref, atol=1e-5)


def test_loss_and_metrics_on_known_tensors():
    t = torch.zeros(1, 1, 4, 4)
    t[..., :2, :] = 1  # 8 positives
    perfect = (t * 2 - 1) * 50  # confident and right
    assert dice_loss(perfect, t) < 1e-3
    assert segmentation_loss(perfect, t) < 1e-3
    assert segmentation_loss(-perfect, t) > 10  # confidently wrong
    pred = torch.zeros(4, 4, dtype=torch.bool)
    pred[:1, :] = True
    pred[3, 0] = True  # 4 tp, 1 fp, 4 fn
    counts = confusion(pred, t[0, 0] > 0)
    assert counts.tolist() == [4, 1, 4]
    iou, f1 = iou_f1(counts)
    assert iou == pytest.approx(4 / 9) and f1 == pytest.approx(8 / 13)
    assert iou_f1([0, 0, 0]) == (1.0, 1.0)


def test_dice_is_pooled_over_the_batch_like_the_reported_iou():
    """A large mark found and a 2-pixel mark missed: pooled Dice weighs them by pixels, per-image Dice 1:1."""
    t = torch.zeros(2, 1, 16, 16)
    t[0, 0, :8] = 1  # 128 mark pixels
    t[1, 0, 0, :2] = 1  # 2 mark pixels
    logits = torch.full_like(t, -50.0)
    logits[0] = (t[0] * 2 - 1) * 50  # the large mark exactly, the small one not at all
    eps = 1e-6
    pooled = 1 - 2 * 128 / (128 + 130)
    assert dice_loss(logits, t, eps=eps) == pytest.approx(pooled, abs=1e-4)
    assert dice_loss(logits, t, eps=eps, per_image=True) == pytest.approx(0.5, abs=1e-4)  # (0 + 1) / 2
    assert dice_loss(logits[:1], t[:1], eps=eps) == pytest.approx(dice_loss(logits[:1], t[:1], eps=eps, per_image=True))


def test_hard_negative_loss_sees_a_sure_false_alarm_the_mean_loss_averages_away():
    """A 16-pixel blob at logit +8 on an unmarked 64x64 image beside a marked one found exactly:
    the plain loss barely moves, this term does."""
    t = torch.zeros(2, 1, 64, 64)
    t[0, :, 20:40, 20:40] = 1
    clean = torch.where(t > 0, 8.0, -8.0)
    alarm = clean.clone()
    alarm[1, :, 10:14, 10:14] = 8.0
    plain = segmentation_loss(alarm, t) - segmentation_loss(clean, t)
    hard = hard_negative_loss(alarm, t) - hard_negative_loss(clean, t)
    assert plain < 0.05 and hard > 3  # 16 pixels of 8192; the second image's top 16 pixels are the blob
    weighted = segmentation_loss(alarm, t, hard_negative_weight=0.1) - segmentation_loss(alarm, t)
    assert float(weighted) == pytest.approx(0.1 * float(hard_negative_loss(alarm, t)), rel=1e-4)
    # The mark itself and a guard of 2 px round it are left out: a confident, correct mark costs nothing.
    marked = torch.zeros_like(t)
    marked[..., 30:40, 30:40] = 1
    right = torch.where(marked > 0, 8.0, -8.0)
    halo = right.clone()
    halo[..., 28:42, 28:42] = 8.0  # the mark and a sure 2-px ring round it
    assert hard_negative_loss(right, marked) < 1e-3 and hard_negative_loss(halo, marked) < 1e-3
    assert hard_negative_loss(halo, marked, guard=1) > 1


def test_early_stopping_on_scripted_sequence():
    es = EarlyStopping(patience=2, min_delta=0.01)
    seq = [0.5, 0.6, 0.605, 0.61, 0.62]  # +0.005, +0.01 are not > min_delta
    stops = [es.step(v) for v in seq[:4]]
    assert stops == [False, False, False, True]
    assert es.best == 0.6 and es.bad == 2
    assert es.step(0.62) is False and es.best == 0.62  # a real improvement resets patience


def test_topk_retention_on_scripted_metrics(tmp_path):
    cm = CheckpointManager(tmp_path, top_k=2, monitor="val_iou")
    w = {"w": torch.ones(1)}
    for epoch, v in enumerate([0.3, 0.5, 0.4, 0.7, 0.1], start=1):
        cm.save(epoch, {"val_iou": v}, w, {"model": {}}, full_state={"epoch": epoch})
    kept = sorted(p.name for p in tmp_path.glob("epoch_*.pt"))
    assert kept == ["epoch_0002.pt", "epoch_0004.pt"]
    assert load(tmp_path / "last.pt")["epoch"] == 5
    path, meta = select_best(tmp_path)
    assert path.name == "epoch_0004.pt" and meta["metrics"]["val_iou"] == 0.7


def test_lr_schedule_warmup_and_decay():
    cfg = TrainConfig(warmup_frac=0.1, min_lr_ratio=0.0, schedule="cosine")
    f = [lr_factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[50] < f[20] and f[99] < 0.01
    with pytest.raises(ValueError):
        lr_factor(50, 100, TrainConfig(schedule="nope"))


def test_checkpoints_are_weights_only(tmp_path, tiny_model_file):
    from wmrepair.checkpoints import load_model

    m, meta = load_model(tiny_model_file)
    assert isinstance(m, UNet)
    torch.load(tiny_model_file, weights_only=True)
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ValueError, match="not a"):
        load_model(tmp_path / "junk.pt")


def test_average_weights_interpolates_floats_and_keeps_counters():
    from wmrepair.checkpoints import average_weights

    a, b = UNet(UNetConfig(base_channels=4, depth=2)), UNet(UNetConfig(base_channels=4, depth=2))
    sa, sb = a.state_dict(), b.state_dict()
    for v in sb.values():
        if not v.is_floating_point():
            v += 5
    avg = average_weights(sa, sb, 0.7)
    for k, v in avg.items():
        want = 0.3 * sa[k] + 0.7 * sb[k] if v.is_floating_point() else sa[k]
        assert torch.allclose(v, want, atol=1e-6), k
    assert all(v.equal(sa[k]) for k, v in average_weights(sa, sb, 0.0).items())
    wide = UNet(UNetConfig(base_channels=8, depth=2)).state_dict()
    with pytest.raises(ValueError, match="different networks"):
        average_weights(sa, wide, 0.5)


def test_keep_init_needs_a_start():
    with pytest.raises(ValueError, match="keep_init.*not scratch"):
        TrainConfig(init="scratch", keep_init=0.5)


def test_select_detector_averages_with_the_start_and_validates_the_average(tmp_path, tiny_model_file):
    """train.keep_init: the written model is the weight average, its card the average's own validation."""
    from dataclasses import asdict

    from conftest import build_tiny_caches

    from wmrepair.checkpoints import load_model, save_model
    from wmrepair.train import select_detector, validate

    cache = build_tiny_caches(tmp_path, 4, 4, 64)
    start, _ = load_model(tiny_model_file)
    torch.manual_seed(1)
    tuned = UNet(UNetConfig(base_channels=4, depth=2))
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    save_model(tuned, ckdir / "epoch_0003.pt", epoch=3, metrics={"val_iou": 0.5})
    cfg = TrainConfig(init=str(tiny_model_file), keep_init=0.25, model=asdict(UNetConfig(base_channels=4, depth=2)))
    card = select_detector(ckdir, cache / "val" / "index.json", tmp_path / "m.pt", tmp_path / "m.json", cfg)
    got, meta = load_model(tmp_path / "m.pt")  # the card beside it matches
    for (k, v), s, t in zip(got.state_dict().items(), start.state_dict().values(), tuned.state_dict().values()):
        if v.is_floating_point():
            assert torch.allclose(v, 0.75 * t + 0.25 * s, atol=1e-6), k
    assert card["keep_init"] == 0.25 and card["fine_tuned_metrics"] == {"val_iou": 0.5}
    from torch.utils.data import DataLoader

    from wmrepair.train import val_dataset

    loader = DataLoader(val_dataset(cache / "val" / "index.json"), batch_size=cfg.batch_size)
    assert card["metrics"] == validate(got, loader, torch.device("cpu"), None, False, cfg.loss)


def test_distill_loss_pulls_each_logit_towards_the_teachers():
    from wmrepair.losses import distill_loss

    teacher = torch.tensor([[-2.0, 0.5, 3.0]])
    same = teacher.clone().requires_grad_(True)
    distill_loss(same, teacher).backward()
    assert torch.allclose(same.grad, torch.zeros(1, 3), atol=1e-7)  # at the teacher's logits: nothing to learn
    z = torch.zeros(1, 3, requires_grad=True)
    distill_loss(z, teacher).backward()
    assert torch.equal(torch.sign(-z.grad), torch.sign(teacher))  # a descent step moves towards the teacher


def test_teachers_are_one_frozen_average(tmp_path, tiny_model_file):
    from wmrepair.checkpoints import load_model, save_model
    from wmrepair.train import teacher_logits

    torch.manual_seed(3)
    save_model(UNet(UNetConfig(base_channels=4, depth=2)), tmp_path / "b.pt", epoch=1, metrics={})
    cfg = TrainConfig(teachers=[str(tiny_model_file), str(tmp_path / "b.pt")])
    average, shas = teacher_logits(cfg, torch.device("cpu"), None)
    x = torch.rand(2, 3, 32, 32)
    a, b = load_model(tiny_model_file)[0].eval(), load_model(tmp_path / "b.pt")[0].eval()
    with torch.no_grad():
        want = (a(x) + b(x)) / 2
    got = average(x)
    assert torch.allclose(got, want, atol=1e-5) and not got.requires_grad and len(shas) == 2
    assert teacher_logits(TrainConfig(), torch.device("cpu"), None) == (None, [])
    with pytest.raises(ValueError, match="scratch is no teacher"):
        teacher_logits(TrainConfig(teachers=["scratch"]), torch.device("cpu"), None)
    with pytest.raises(FileNotFoundError, match="train.teachers: .*missing.pt"):
        teacher_logits(TrainConfig(teachers=[str(tmp_path / "missing.pt")]), torch.device("cpu"), None)
