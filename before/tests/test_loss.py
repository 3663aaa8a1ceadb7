"""The soft-label loss: targets for each family's real tokenization, agreement with a dense
per-token reference, and the properties the published loss is for."""

import pytest
import torch
import torch.nn.functional as F

from cogip.loss import NumberTokens, SoftLabelLoss, proximity
from cogip.models.families import FAMILIES


def _loss(tiny_models, family, **kw):
    tok = FAMILIES[family].load_processor(tiny_models[family]).tokenizer
    return tok, SoftLabelLoss(NumberTokens.from_tokenizer(tok), **kw)


def test_kernel_values():
    psi = proximity(10, 1)   # the published kernel, the default: ∝ max_j|j-c| - |k-c|
    assert (psi[5] * 25).tolist() == pytest.approx([0, 1, 2, 3, 4, 5, 4, 3, 2, 1])
    assert (psi[0] * 45).tolist() == pytest.approx([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert torch.equal(proximity(10, 1, "triangular"), psi)   # the published code's name for it
    narrow = proximity(10, 1, "narrow-triangle", 2.0)
    assert narrow[5].tolist() == pytest.approx([0, 0, 0, 0, 0.25, 0.5, 0.25, 0, 0, 0])
    assert narrow[0].tolist()[:3] == pytest.approx([2 / 3, 1 / 3, 0])
    assert torch.allclose(narrow.sum(1), torch.ones(10)) and torch.allclose(psi.sum(1), torch.ones(10))
    assert proximity(10, 1, "uniform")[3].tolist() == pytest.approx([0.1] * 10)
    g = proximity(10, 1, "gaussian", 1.0)[5]
    assert g[4] == pytest.approx(g[6]) and g[5] > g[4] > g[3]
    with pytest.raises(ValueError, match="unknown soft-label kernel 'wide'"):
        proximity(10, 1, "wide")


def test_number_classes_per_family(tiny_models):
    assert sorted(_loss(tiny_models, "qwen")[1].digit_counts) == [1]
    assert sorted(_loss(tiny_models, "gemma")[1].digit_counts) == [1]
    assert sorted(_loss(tiny_models, "llama")[1].digit_counts) == [1]   # published: multi-digit tokens plain CE
    assert sorted(_loss(tiny_models, "llama", multidigit=True)[1].digit_counts) == [1, 2, 3]


@pytest.mark.parametrize("family", ["qwen", "gemma"])
def test_soft_targets_single_digit_families(tiny_models, family):
    tok, loss = _loss(tiny_models, family, eta=0.15, kernel="narrow-triangle")
    for answer in ("medium 5.577", "very low 0.042", "negative -2.000"):
        ids = torch.tensor(tok(answer, add_special_tokens=False).input_ids)
        q = loss.target_distribution(ids, len(tok))
        for row, t in zip(q, tok.convert_ids_to_tokens(ids)):
            if t.isdigit():
                d = int(t)
                near = [x for x in (d - 1, d + 1) if 0 <= x <= 9]
                w = {d: 2.0, **{x: 1.0 for x in near}}
                for x, wx in w.items():   # ψ: 2 at the digit, 1 at each neighbour, normalised
                    expect = 0.15 * wx / sum(w.values()) + (0.85 if x == d else 0)
                    assert row[tok.convert_tokens_to_ids(str(x))] == pytest.approx(expect)
                assert row.sum() == pytest.approx(1.0) and (row > 0).sum() == len(w)
            else:
                assert row.max() == 1.0 and row.sum() == 1.0    # regular tokens: one-hot


def test_soft_targets_llama_three_digit_tokens(tiny_models):
    tok, published = _loss(tiny_models, "llama", eta=0.15)
    ids = torch.tensor(tok("medium 5.577", add_special_tokens=False).input_ids)
    q = published.target_distribution(ids, len(tok))
    assert q[-1].max() == 1.0 and q[-1][ids[-1]] == 1.0   # published: '577' is a regular token
    assert q[-3][tok.convert_tokens_to_ids("4")] == pytest.approx(0.15 * 4 / 25)   # '5' is a digit
    tok, loss = _loss(tiny_models, "llama", eta=0.15, kernel="narrow-triangle", multidigit=True)
    ids = torch.tensor(tok("medium 5.577", add_special_tokens=False).input_ids)
    assert tok.convert_ids_to_tokens(ids)[-1] == "577"
    q = loss.target_distribution(ids, len(tok))[-1]
    at = lambda s: q[tok.convert_tokens_to_ids(s)].item()
    # three-digit ψ: triangle of half-width 2 leading-digit units (200) around 577; Σ weights = 200
    assert at("577") == pytest.approx(0.85 + 0.15 / 200)
    assert at("578") == pytest.approx(0.15 * (1 - 1 / 200) / 200)
    assert at("677") == pytest.approx(0.15 * 0.5 / 200)
    assert at("777") == 0 and at("5") == 0 and q.sum() == pytest.approx(1.0)
    ids = torch.tensor(tok("very low 0.042", add_special_tokens=False).input_ids)
    q = loss.target_distribution(ids, len(tok))[-1]
    assert tok.convert_ids_to_tokens(ids)[-1] == "042" and q[tok.convert_tokens_to_ids("041")] > 0


@pytest.mark.parametrize("family", ["qwen", "llama"])
@pytest.mark.parametrize("kernel, multidigit", [("published", False), ("narrow-triangle", False),
                                               ("gaussian", True), ("uniform", True)])
def test_matches_dense_per_token_reference(tiny_models, family, kernel, multidigit):
    tok, loss = _loss(tiny_models, family, eta=0.15, lam=2.0, kernel=kernel, multidigit=multidigit)
    text = "medium 5.577 negative -2.000 very high 8.911"
    targets = torch.tensor(tok(text, add_special_tokens=False).input_ids)
    torch.manual_seed(0)
    logits = torch.randn(len(targets), len(tok)) * 3
    q = loss.target_distribution(targets, len(tok))
    reference = 0.0
    for i, t in enumerate(targets.tolist()):      # the published algorithm, token by token
        ce_soft = -(q[i] * F.log_softmax(logits[i], -1)).sum()
        number = tok.convert_ids_to_tokens(t).isdigit() and (multidigit or len(tok.convert_ids_to_tokens(t)) == 1)
        reference += (2.0 if number else 1.0) * ce_soft
    total, regular, numeric = loss(logits, targets)
    assert total.item() == pytest.approx(reference.item() / len(targets), rel=1e-5)
    assert (regular + 2.0 * numeric).item() == pytest.approx(reference.item(), rel=1e-5)


def test_plain_ce_when_soft_off(tiny_models):
    tok, loss = _loss(tiny_models, "qwen", soft=False)
    targets = torch.tensor(tok("high 7.250", add_special_tokens=False).input_ids)
    logits = torch.randn(len(targets), len(tok))
    assert loss(logits, targets)[0].item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_near_misses_cost_less(tiny_models):
    tok, loss = _loss(tiny_models, "qwen", eta=0.15)
    five = torch.tensor([tok.convert_tokens_to_ids("5")])
    def peaked(digit):
        logits = torch.zeros(1, len(tok))
        logits[0, tok.convert_tokens_to_ids(digit)] = 8.0
        return logits
    near, far = loss(peaked("6"), five)[0], loss(peaked("9"), five)[0]
    assert near < far
    plain = SoftLabelLoss(NumberTokens.from_tokenizer(tok), soft=False)
    assert plain(peaked("6"), five)[0].item() == pytest.approx(plain(peaked("9"), five)[0].item())


def test_gradients_flow_and_no_nan_for_extreme_logits(tiny_models):
    tok, loss = _loss(tiny_models, "llama")
    targets = torch.tensor(tok("negative -2.000", add_special_tokens=False).input_ids)
    logits = (torch.randn(len(targets), len(tok)) * 1e4).requires_grad_()
    total = loss(logits, targets)[0]
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all()


def published_loss(logits, labels, tokenizer, eta, lam):
    """The published trainer's loss (sft/*/src/trainer/sft_trainer.py), written out directly: digit ids from
    encoding "0".."9"; a digit at place p (from the decimal point of its number) gets the weights
    max_k d_k - d_k with d_k = |k - c|·10^p, normalised; q = (1-η)·onehot + η·ψ; every other token plain CE;
    (Σ regular + λ Σ numeric) / N."""
    digit_ids = [tokenizer.encode(str(d), add_special_tokens=False)[0] for d in range(10)]
    dot = tokenizer.encode(".", add_special_tokens=False)[0]
    logp = F.log_softmax(logits, dim=-1)
    labels = labels.tolist()
    regular, numeric = 0.0, 0.0
    for t, target in enumerate(labels):
        if target not in digit_ids:
            regular = regular - logp[t, target]
            continue
        left = right = t
        while left > 0 and (labels[left - 1] in digit_ids or labels[left - 1] == dot):
            left -= 1
        while right + 1 < len(labels) and (labels[right + 1] in digit_ids or labels[right + 1] == dot):
            right += 1
        point = next((j for j in range(left, right + 1) if labels[j] == dot), right + 1)
        place = point - t - 1
        c = digit_ids.index(target)
        dist = torch.tensor([abs(k - c) * 10.0 ** place for k in range(10)])
        w = dist.max() - dist
        q = (1 - eta) * F.one_hot(torch.tensor(c), 10).double() + eta * w / w.sum()
        numeric = numeric - (q.to(logp.dtype) * logp[t, digit_ids]).sum()
    return (regular + lam * numeric) / len(labels)


@pytest.mark.parametrize("family", ["qwen", "llama"])
def test_default_is_the_published_loss_and_gradient(tiny_models, family):
    tok, loss = _loss(tiny_models, family)   # the defaults: η 0.15, λ 2.0, the published kernel
    text = "medium 5.577<|x|>negative -2.000 very high 8.911 high 0.712 positive 3 low 10.250"
    targets = torch.tensor(tok(text, add_special_tokens=False).input_ids)
    if family == "llama":
        assert "577" in tok.convert_ids_to_tokens(targets) and "250" in tok.convert_ids_to_tokens(targets)
    torch.manual_seed(0)
    logits = (torch.randn(len(targets), len(tok)) * 3).requires_grad_()
    ours = loss(logits, targets)[0]
    (g_ours,) = torch.autograd.grad(ours, logits)
    reference = published_loss(logits, targets, tok, eta=0.15, lam=2.0)
    (g_ref,) = torch.autograd.grad(reference, logits)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    assert (g_ours - g_ref).abs().max().item() < 1e-6
    plain = F.cross_entropy(logits, targets)   # and it is not plain cross-entropy
    assert abs(ours.item() - plain.item()) > 1e-3
