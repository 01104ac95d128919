"""ProtoNCE's prototype term against a float64 loop of the paper's formula (Li et al. 2021,
eq. 11) and the official ``pcl/builder.py`` computation, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.losses import proto_nce_loss


def _eq11_prototype_term(v, prototypes, phi, positives: list[int], candidates: list[int]):
    """-1/B sum_i log exp(v_i . c_s / phi_s) / sum_{j in candidates} exp(v_i . c_j / phi_j)."""
    v, c = F.normalize(v, dim=1), F.normalize(prototypes, dim=1)
    total = 0.0
    for i, s in enumerate(positives):
        numerator = torch.exp(torch.dot(v[i], c[s]) / phi[s])
        denominator = sum(torch.exp(torch.dot(v[i], c[j]) / phi[j]) for j in candidates)
        total = total - torch.log(numerator / denominator)
    return total / len(positives)


def _data(seed: int, k: int = 12, b: int = 5, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    phi = 0.05 + 0.3 * torch.rand(k, generator=g, dtype=torch.float64)
    v = torch.randn(b, d, generator=g, dtype=torch.float64)
    return v, prototypes, phi


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_equals_the_formula_values_and_gradients(seed):
    v, prototypes, phi = _data(seed)
    positives = [3, 0, 11, 3, 7]  # two queries share cluster 3
    candidates = [0, 3, 7, 11, 5, 9, 1]  # the batch's clusters once, then sampled negatives
    a, b = v.clone().requires_grad_(), v.clone().requires_grad_()
    loss = proto_nce_loss(a, prototypes, phi, torch.tensor(positives), torch.tensor(candidates))
    expected = _eq11_prototype_term(b, prototypes, phi, positives, candidates)
    assert loss.dtype == torch.float64  # float64 in, float64 inside
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)
    loss.backward()
    expected.backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_order_of_the_candidates_does_not_matter():
    v, prototypes, phi = _data(2)
    positives = torch.tensor([4, 1, 4, 6, 2])
    candidates = torch.tensor([1, 2, 4, 6, 0, 10])
    shuffled = candidates[torch.tensor([5, 2, 0, 4, 3, 1])]
    loss = proto_nce_loss(v, prototypes, phi, positives, candidates)
    assert float(proto_nce_loss(v, prototypes, phi, positives, shuffled)) == pytest.approx(
        float(loss), rel=1e-12
    )


def test_equals_the_official_builder_when_the_batch_clusters_are_distinct():
    """pcl/builder.py: logits over cat(prototypes of the batch's clusters, r sampled others),
    divided by their density, label i for query i (with distinct clusters: our candidates)."""
    v, prototypes, phi = _data(3)
    pos_proto_id = torch.tensor([2, 7, 0, 9, 4])
    neg_proto_id = torch.tensor([1, 11, 5])
    q = F.normalize(v, dim=1)
    proto_selected = torch.cat([prototypes[pos_proto_id], prototypes[neg_proto_id]], dim=0)
    logits_proto = torch.mm(q, proto_selected.t()) / phi[torch.cat([pos_proto_id, neg_proto_id])]
    official = F.cross_entropy(logits_proto, torch.arange(5))
    ours = proto_nce_loss(v, prototypes, phi, pos_proto_id, torch.cat([pos_proto_id, neg_proto_id]))
    assert float(ours) == pytest.approx(float(official), rel=1e-12)


def test_float32_under_autocast_and_gradients_reach_the_query_only():
    v, prototypes, phi = (t.float() for t in _data(4))
    prototypes.requires_grad_()
    query = v.bfloat16().requires_grad_()
    positives, candidates = torch.tensor([0, 1, 2, 3, 4]), torch.arange(12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = proto_nce_loss(query, prototypes, phi, positives, candidates)
    assert loss.dtype == torch.float32
    expected = proto_nce_loss(query.detach().float(), prototypes, phi, positives, candidates)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert query.grad is not None and prototypes.grad is None
