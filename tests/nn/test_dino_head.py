import torch
from torch import nn

from lightning_ssl.nn.dino_head import DINOHead


def test_dino_head_paper_layout():
    head = DINOHead(384)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (384, 2048),
        (2048, 2048),
        (2048, 256),
    ]
    assert sum(isinstance(m, nn.GELU) for m in head.mlp) == 2
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.mlp)  # no BN with ViTs
    assert head.last_layer.weight.shape == (65536, 256) and head.last_layer.bias is None
    assert head(torch.randn(3, 384)).shape == (3, 65536)


def test_dino_head_batch_norm_option_and_depth():
    head = DINOHead(16, out_dim=8, use_bn=True, num_layers=2, hidden_dim=32, bottleneck_dim=4)
    assert [type(m) for m in head.mlp] == [nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Linear]


def test_weight_norm_scale_is_frozen_at_one_and_rows_are_unit_norm():
    head = DINOHead(16, out_dim=8, hidden_dim=32, bottleneck_dim=4)
    assert torch.equal(head.weight_g, torch.ones(8, 1)) and not head.weight_g.requires_grad
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.1, weight_decay=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        head(torch.randn(8, 16)).logsumexp(dim=1).mean().backward()
        optimizer.step()
    assert torch.equal(head.weight_g, torch.ones(8, 1))
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(8), atol=1e-5)


def test_unnormalized_last_layer_trains_its_scale():
    head = DINOHead(16, out_dim=8, norm_last_layer=False, hidden_dim=32, bottleneck_dim=4)
    assert head.weight_g.requires_grad and torch.equal(head.weight_g, torch.ones(8, 1))


def test_bottleneck_is_l2_normalized_before_the_last_layer():
    head = DINOHead(16, out_dim=8, hidden_dim=32, bottleneck_dim=4)
    seen = []
    head.last_layer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    head(torch.randn(5, 16))
    assert torch.allclose(seen[0].norm(dim=1), torch.ones(5), atol=1e-5)
