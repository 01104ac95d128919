import torch
import torch.nn.functional as F

from lightning_ssl.nn.knn import knn_predict


def _oracle(query, bank, labels, num_classes, k, t):
    scores = torch.zeros(query.shape[0], num_classes)
    for q in range(query.shape[0]):
        sims = [(float(query[q] @ bank[n]), int(labels[n])) for n in range(bank.shape[0])]
        sims.sort(key=lambda s: -s[0])
        for sim, lab in sims[:k]:
            scores[q, lab] += torch.exp(torch.tensor(sim / t))
    return scores


def test_knn_matches_explicit_vote_for_any_chunking():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(50, 8), dim=1)
    labels = torch.randint(0, 4, (50,))
    query = F.normalize(torch.randn(7, 8), dim=1)
    expected = _oracle(query, bank, labels, 4, k=10, t=0.1)
    for chunk in (3, 16, 1000):
        got = knn_predict(query, bank, labels, 4, k=10, temperature=0.1, chunk_size=chunk)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_knn_padding_rows_never_vote_and_k_larger_than_bank():
    bank = F.normalize(torch.randn(6, 4), dim=1)
    labels = torch.tensor([0, 1, 2, -1, -1, -1])
    scores = knn_predict(bank[:3], bank, labels, 3, k=100, temperature=0.1, chunk_size=2)
    assert scores.shape == (3, 3)
    assert torch.equal(scores.argmax(1), torch.tensor([0, 1, 2]))
    # Only the three labelled rows contribute.
    expected = _oracle(bank[:3], bank[:3], labels[:3], 3, k=3, t=0.1)
    assert torch.allclose(scores, expected, rtol=1e-5)


def test_knn_classifies_separated_clusters():
    torch.manual_seed(1)
    centers = F.normalize(torch.randn(5, 32), dim=1) * 5
    labels = torch.arange(5).repeat_interleave(40)
    bank = F.normalize(centers[labels] + torch.randn(200, 32), dim=1)
    q_labels = torch.arange(5).repeat_interleave(10)
    query = F.normalize(centers[q_labels] + torch.randn(50, 32), dim=1)
    pred = knn_predict(query, bank, labels, 5, k=20, temperature=0.1, chunk_size=64).argmax(1)
    assert (pred == q_labels).float().mean() > 0.95
