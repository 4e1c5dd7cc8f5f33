"""reid's defaults against the coursework's own code (Surrey-EEEM071-CVDL/EEEM071-Coursework-2025
at 50782d9, a fork of early torchreid): each test writes the coursework's formula out as its
source has it and compares outputs.

The coursework draws its augmentation randomness from Python's ``random``; reid draws it from
torch's generator. The copies below take ``random`` as :class:`TorchRandom`, CPython's own
``uniform`` / ``randint`` formulas over torch's uniform draws, so that one ``torch.manual_seed``
gives both the same draws and the outputs must agree exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.models as tvmodels
from torch import nn
from torchvision.transforms import v2

from expgrid.errors import ConfigError
from expgrid.stopping import TrialRules
from trainables.reid.losses import LOSS_DEFAULTS, cross_entropy
from trainables.reid.models import create_model
from trainables.reid.train import REID_DEFAULTS, check_config, evaluation_due
from trainables.reid.transforms import normalise, to_unit, train_transform


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other test processes share this machine's cores
    yield
    torch.set_num_threads(threads)


class TorchRandom:
    """``random.uniform`` / ``random.randint`` as CPython computes them, on torch's generator."""

    @staticmethod
    def random() -> float:
        return float(torch.rand((), dtype=torch.float64))

    @classmethod
    def uniform(cls, a: float, b: float) -> float:
        return a + (b - a) * cls.random()  # CPython's Random.uniform

    @staticmethod
    def randint(a: int, b: int) -> int:
        return int(torch.randint(a, b + 1, ()))  # both ends included


random = TorchRandom


# ---- The coursework's src/transforms.py, as written (only `random` is TorchRandom) ------------


class CourseworkRandomErasing:
    def __init__(self, probability=0.5, sl=0.02, sh=0.4, r1=0.3, mean=[0.4914, 0.4822, 0.4465]):  # noqa: B006
        self.probability = probability
        self.mean = mean
        self.sl = sl
        self.sh = sh
        self.r1 = r1

    def __call__(self, img):
        if random.uniform(0, 1) > self.probability:
            return img

        for attempt in range(100):  # noqa: B007
            area = img.size()[1] * img.size()[2]

            target_area = random.uniform(self.sl, self.sh) * area
            aspect_ratio = random.uniform(self.r1, 1 / self.r1)

            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))

            if w < img.size()[2] and h < img.size()[1]:
                x1 = random.randint(0, img.size()[1] - h)
                y1 = random.randint(0, img.size()[2] - w)
                if img.size()[0] == 3:
                    img[0, x1 : x1 + h, y1 : y1 + w] = self.mean[0]
                    img[1, x1 : x1 + h, y1 : y1 + w] = self.mean[1]
                    img[2, x1 : x1 + h, y1 : y1 + w] = self.mean[2]
                else:
                    img[0, x1 : x1 + h, y1 : y1 + w] = self.mean[0]
                return img

        return img


class CourseworkColorAugmentation:
    def __init__(self, p=0.5):
        self.p = p
        self.eig_vec = torch.Tensor(
            [
                [0.4009, 0.7192, -0.5675],
                [-0.8140, -0.0045, -0.5808],
                [0.4203, -0.6948, -0.5836],
            ]
        )
        self.eig_val = torch.Tensor([[0.2175, 0.0188, 0.0045]])

    def __call__(self, tensor):
        if random.uniform(0, 1) > self.p:
            return tensor
        alpha = torch.normal(mean=torch.zeros_like(self.eig_val)) * 0.1
        quatity = torch.mm(self.eig_val * alpha, self.eig_vec)
        tensor = tensor + quatity.view(3, 1, 1)
        return tensor


# ---- src/models/tvmodels.py's TorchVisionModel (torchvision's `pretrained=` is `weights=` now) --


class CourseworkTorchVisionModel(nn.Module):
    def __init__(self, name, num_classes):
        super().__init__()
        self.backbone = tvmodels.__dict__[name](weights=None)
        self.feature_dim = self.backbone.classifier[0].in_features
        self.backbone.classifier = nn.Identity()
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x):
        v = self.backbone(x)
        if not self.training:
            return v
        return self.classifier(v), v


# ---- src/losses/cross_entropy_loss.py's CrossEntropyLoss.forward -------------------------------


def coursework_cross_entropy(inputs, targets, num_classes, label_smooth, epsilon=0.1):
    epsilon = epsilon if label_smooth else 0
    log_probs = nn.LogSoftmax(dim=1)(inputs)
    targets = torch.zeros(log_probs.size()).scatter_(1, targets.unsqueeze(1).data.cpu(), 1)
    targets = (1 - epsilon) * targets + epsilon / num_classes
    return (-targets * log_probs).mean(0).sum()


def checked(**overrides) -> None:
    """check_config of the defaults (untrained: no weights file here) with ``overrides``."""
    check_config({"model": {"pretrained": False}, "dataset": {"root": "unread"}, **overrides})


def uint8_image(seed: int, size=(3, 40, 30)) -> torch.Tensor:
    return torch.randint(0, 256, size, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ----------------------------------------------------------------------------------------------
# 1. Label smoothing: train.sh passes no --label-smooth, so ε = 0; 0.1 stays available


def test_cross_entropy_defaults_to_the_coursework_without_label_smoothing_and_keeps_0_1():
    assert REID_DEFAULTS["loss"]["label_smoothing"] == LOSS_DEFAULTS["label_smoothing"] == 0
    logits = torch.randn(12, 7, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.arange(12) % 7
    default = cross_entropy(logits, labels, REID_DEFAULTS["loss"]["label_smoothing"])
    torch.testing.assert_close(default, coursework_cross_entropy(logits, labels, 7, label_smooth=False))
    smoothed = cross_entropy(logits, labels, 0.1)  # the coursework's --label-smooth
    torch.testing.assert_close(smoothed, coursework_cross_entropy(logits, labels, 7, label_smooth=True))
    assert not torch.allclose(default, smoothed)
    checked(loss={"label_smoothing": 0.1})


# ----------------------------------------------------------------------------------------------
# 2-4. MobileNetV3-small and VGG16: the whole classifier replaced, default Linear init


@pytest.mark.parametrize(("name", "width"), [("mobilenet_v3_small", 576), ("vgg16", 512 * 7 * 7)])
def test_torchvision_models_are_the_coursework_torchvisionmodel(name, width):
    """Same seed → the same weights (so the new classifier has PyTorch's default init, as the
    coursework's), and the same embedding: the pooled feature the whole classifier read."""
    torch.manual_seed(3)
    ours = create_model({"name": name, "pretrained": False}, 5, (32, 32))
    torch.manual_seed(3)
    theirs = CourseworkTorchVisionModel(name, 5)
    assert ours.embedding_dim == theirs.feature_dim == width
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert [k.removeprefix("backbone.body.") for k in mine] == [k.removeprefix("backbone.") for k in reference]
    for (key, a), b in zip(mine.items(), reference.values()):
        assert torch.equal(a, b), key
    bound = 1 / math.sqrt(width)  # kaiming_uniform(a=√5): U(-1/√fan_in, 1/√fan_in)
    assert ours.classifier.weight.abs().max() <= bound and ours.classifier.weight.std() > bound / 3
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        assert ours(x).shape == (4, width)
    ours.train(), theirs.train()
    torch.manual_seed(9)  # (no dropout is left in either; equal seeds anyway)
    logits, v = ours(x)
    torch.manual_seed(9)
    ref_logits, ref_v = theirs(x)
    torch.testing.assert_close(v, ref_v)
    torch.testing.assert_close(logits, ref_logits)


def test_resnet_classifiers_keep_torchreids_small_init():
    """The coursework's ResNet._init_params: every Linear N(0, 0.01²), bias 0 (as before)."""
    torch.manual_seed(0)
    for name in ("resnet18", "resnet18_fc512"):
        model = create_model({"name": name, "pretrained": False}, 50, (32, 32))
        w = model.classifier.weight
        assert abs(w.std().item() - 0.01) < 0.001 and torch.equal(model.classifier.bias, torch.zeros(50))


# ----------------------------------------------------------------------------------------------
# 5. Random erasing


def test_random_erasing_is_the_courseworks_after_normalisation():
    """train_transform(["random_erasing"]) = resize → [0, 1] → normalise → the coursework's
    RandomErasing, which writes (0.4914, 0.4822, 0.4465) into the *normalised* image."""
    erased = 0
    for seed in range(40):
        image = uint8_image(seed, (3, 32, 24))
        torch.manual_seed(seed)
        ours = train_transform(["random_erasing"], 32, 24)(image)
        torch.manual_seed(seed)
        theirs = CourseworkRandomErasing()(normalise(to_unit(image)))
        assert torch.equal(ours, theirs), seed
        fill = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
        hit = (ours == fill).all(0)
        erased += bool(hit.any())
    assert 10 < erased < 30  # p 0.5: both branches taken


def test_random_erasing_tries_100_times_with_a_uniform_aspect():
    """A 100 × 2 image, where about 1 draw in 70 fits (1 pixel wide: area/aspect < 2.25): the
    coursework's 100 attempts (and its uniform aspect draws) erase most times, the same code cut
    to 10 attempts rarely."""
    from trainables.reid.transforms import RandomErasing

    image = torch.zeros(3, 100, 2)
    hundred = ten = 0
    for seed in range(60):
        torch.manual_seed(seed)
        ours = RandomErasing(p=1.0)(image)
        torch.manual_seed(seed)
        theirs = CourseworkRandomErasing(probability=1.0)(image.clone())
        assert torch.equal(ours, theirs), seed
        hundred += bool(ours.ne(0).any())
        torch.manual_seed(seed)
        ten += bool(RandomErasing(p=1.0, attempts=10)(image).ne(0).any())
    assert hundred > 30 and ten < 20, (hundred, ten)


def test_the_earlier_erasing_stays_available_as_random_erasing_tv():
    image = uint8_image(5, (3, 32, 24))
    torch.manual_seed(2)
    ours = train_transform(["random_erasing_tv"], 32, 24)(image)
    torch.manual_seed(2)
    theirs = v2.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=0)(normalise(to_unit(image)))
    assert torch.equal(ours, theirs)


# ----------------------------------------------------------------------------------------------
# 6. Colour augmentation


def test_color_aug_is_the_courseworks_color_augmentation_before_normalisation():
    changed = 0
    for seed in range(30):
        image = uint8_image(seed, (3, 32, 24))
        torch.manual_seed(seed)
        ours = train_transform(["color_aug"], 32, 24)(image)
        torch.manual_seed(seed)
        theirs = normalise(CourseworkColorAugmentation()(to_unit(image)))
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        changed += not torch.allclose(ours, normalise(to_unit(image)))
    assert 5 < changed < 25


def test_pca_lighting_is_alexnets_formula_and_differs_from_color_aug():
    eigval = torch.tensor([0.2175, 0.0188, 0.0045])
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
    image = to_unit(uint8_image(1, (3, 32, 24)))
    for seed in range(10):
        torch.manual_seed(seed)
        ours = train_transform(["pca_lighting"], 32, 24)(uint8_image(1, (3, 32, 24)))
        torch.manual_seed(seed)
        if torch.rand(()) >= 0.5:
            expected = image
        else:
            alpha = torch.randn(3) * 0.1
            expected = image + (eigvec @ (alpha * eigval)).view(3, 1, 1)
        torch.testing.assert_close(ours, normalise(expected), rtol=0, atol=1e-6)
    # The same α cast by the two formulas: different colour offsets.
    alpha = torch.tensor([1.0, 0.5, -0.5])
    coursework = torch.mm((eigval * alpha)[None], CourseworkColorAugmentation().eig_vec)[0]
    assert not torch.allclose(coursework, eigvec @ (alpha * eigval), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# 7. sync_bn and 8. evaluation epochs (what needs no Ray)


def test_sync_bn_is_checked_and_refused_on_cpu_ranks_in_one_line():
    from trainables.reid.train import _with_sync_bn

    with pytest.raises(ConfigError, match="sync_bn: expected true or false"):
        checked(sync_bn="yes")
    checked(sync_bn=True, workers=2)
    with pytest.raises(ValueError, match=r"^sync_bn: .*GPUs only") as info:
        _with_sync_bn(nn.BatchNorm2d(3), torch.device("cpu"))
    assert "\n" not in str(info.value)


RULES = TrialRules(metric="mAP", mode="max")


@pytest.mark.parametrize(
    ("rules", "eval_freq", "expected"),
    [
        (RULES, 0, [10]),  # the coursework's default: test at the end
        (RULES, 4, [4, 8, 10]),  # --eval-freq 4
        (TrialRules("mAP", "max", flush_epochs=frozenset({3, 6})), 0, [3, 6, 10]),  # ASHA's rungs
        (TrialRules("mAP", "max", keep_best_checkpoint=True), 0, list(range(1, 11))),  # select: best_epoch
        (TrialRules("mAP", "max", monitor="loss_xent", patience=2), 0, list(range(1, 11))),  # early stopping
    ],
)
def test_evaluation_epochs_are_those_something_reads(rules, eval_freq, expected):
    assert [e for e in range(1, 11) if evaluation_due(e, 10, eval_freq, rules)] == expected


def test_default_eval_freq_is_the_courseworks_end_only():
    assert REID_DEFAULTS["eval_freq"] == 0
