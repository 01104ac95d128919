import pytest
import torch

from lightning_ssl.nn import MLP, Backbone


def test_resnet_cifar_stem_keeps_resolution_and_discovers_dim():
    net = Backbone("resnet18", cifar_stem=True)
    assert net.dim == 512
    assert net.model.conv1.kernel_size == (3, 3) and isinstance(
        net.model.maxpool, torch.nn.Identity
    )
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_resnet50_dim_and_timm_models():
    assert Backbone("resnet50").dim == 2048
    net = Backbone("timm:resnet18")
    assert net.dim == 512 and net(torch.zeros(1, 3, 64, 64)).shape == (1, 512)


def test_vit_interpolates_position_embeddings_for_local_crops():
    net = Backbone("vit_tiny_patch16_224", image_size=64)
    assert net.dim == 192
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 192)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 192)  # local crop size


def test_vit_patch_size_must_divide_crop():
    with pytest.raises(ValueError, match="patch size 16 does not divide the crop size 40"):
        Backbone("vit_tiny_patch16_224", image_size=40)


def test_cifar_stem_on_non_resnet_is_an_error():
    with pytest.raises(ValueError, match="cifar_stem"):
        Backbone("vit_tiny_patch16_224", cifar_stem=True, image_size=32)


def test_mlp_layouts():
    simclr = MLP(512, 2048, 128)
    assert [type(m).__name__ for m in simclr] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    mocov3 = MLP(512, 4096, 256, num_layers=3, last_batch_norm=True, last_affine=False)
    assert not mocov3[-1].affine and mocov3[-1].num_features == 256
    assert mocov3(torch.randn(4, 512)).shape == (4, 256)
    with pytest.raises(ValueError):
        MLP(4, 4, 4, num_layers=0)


def test_zero_init_residual_reaches_torchvision_resnets():
    """SimCLR (TF ``resnet.py`` ``init_zero=True``), SimSiam and MoCo v3 (``zero_init_residual=
    True``) start every residual block as the identity: the block's last BN scale is zero."""
    net = Backbone("resnet18", cifar_stem=True, zero_init_residual=True)
    blocks = [b for layer in (net.model.layer1, net.model.layer4) for b in layer]
    assert all(torch.equal(b.bn2.weight, torch.zeros_like(b.bn2.weight)) for b in blocks)
    assert all(float(b.bn2.weight.abs().sum()) > 0 for b in Backbone("resnet18").model.layer1)
