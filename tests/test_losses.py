import pytest
import torch
import torch.nn.functional as F

from caopd_pl.losses import chunked_divergence, masked_mean_divergence, token_divergence

KINDS = ["reverse", "forward", "jsd"]


def reference_divergence(student_logits, teacher_logits, kind, beta=0.5):
    """Plain per-token reference, written independently of caopd_pl.losses (F.kl_div conventions)."""
    log_p = student_logits.log_softmax(-1)
    log_q = teacher_logits.log_softmax(-1)
    if kind == "reverse":  # KL(p || q) = kl_div(input=log q, target=log p)
        return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)
    if kind == "forward":
        return F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(-1)
    m = beta * log_q.exp() + (1 - beta) * log_p.exp()
    log_m = m.log()
    kl_q = F.kl_div(log_m, log_q, reduction="none", log_target=True).sum(-1)
    kl_p = F.kl_div(log_m, log_p, reduction="none", log_target=True).sum(-1)
    return beta * kl_q + (1 - beta) * kl_p


def _inputs(n=45, h=24, v=97, dtype=torch.float32):
    hidden = torch.randn(n, h, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, h, dtype=dtype, requires_grad=True)
    return hidden, weight, torch.randn(n, h, dtype=dtype), torch.randn(v, h, dtype=dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_token_divergence_matches_reference(kind):
    s, t = torch.randn(10, 33, dtype=torch.float64), torch.randn(10, 33, dtype=torch.float64)
    torch.testing.assert_close(token_divergence(s, t, kind, 0.3), reference_divergence(s, t, kind, 0.3))


@pytest.mark.parametrize("kind", KINDS)
def test_divergence_is_zero_for_identical_inputs(kind):
    hidden, weight, _, _ = _inputs()
    loss = chunked_divergence(hidden, weight, hidden.detach(), weight.detach(), kind, chunk_size=7)
    assert loss.abs().item() < 1e-5
    hidden_grad, weight_grad = torch.autograd.grad(loss, [hidden, weight])
    assert hidden_grad.abs().max().item() < 1e-5 and weight_grad.abs().max().item() < 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [1, 8, 45, 1000])
def test_chunked_matches_unchunked_values_and_gradients(kind, chunk_size):
    # float64 on both sides: the comparison checks the algebra (chunking, closed-form gradients), not float32
    # rounding, whose size depends on the machine's BLAS kernels and thread count.
    hidden, weight, teacher_hidden, teacher_weight = _inputs(dtype=torch.float64)
    chunked = chunked_divergence(hidden, weight, teacher_hidden, teacher_weight, kind, 0.3, chunk_size)
    grads = torch.autograd.grad(chunked, [hidden, weight])
    naive = reference_divergence(hidden @ weight.T, teacher_hidden @ teacher_weight.T, kind, 0.3).sum()
    naive_grads = torch.autograd.grad(naive, [hidden, weight])
    torch.testing.assert_close(chunked, naive, atol=1e-10, rtol=1e-10)
    for got, want in zip(grads, naive_grads):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_chunked_loss_is_as_accurate_as_float32_naive(kind):
    # Against a float64 reference, the float32 chunked loss may err by no more than a small multiple of what the
    # float32 naive loss errs, with a floor of a few ulps of the largest value: a tolerance that follows the dtype
    # and the size of the reduction instead of a constant tuned on one machine.
    inputs64 = _inputs(dtype=torch.float64)
    inputs32 = [t.detach().float().requires_grad_(t.requires_grad) for t in inputs64]
    hidden, weight, teacher_hidden, teacher_weight = inputs64
    exact = reference_divergence(hidden @ weight.T, teacher_hidden @ teacher_weight.T, kind, 0.3).sum()
    exact_grads = torch.autograd.grad(exact, [hidden, weight])
    hidden, weight, teacher_hidden, teacher_weight = inputs32
    naive = reference_divergence(hidden @ weight.T, teacher_hidden @ teacher_weight.T, kind, 0.3).sum()
    naive_grads = torch.autograd.grad(naive, [hidden, weight])
    chunked = chunked_divergence(hidden, weight, teacher_hidden, teacher_weight, kind, 0.3, 8)
    chunked_grads = torch.autograd.grad(chunked, [hidden, weight])
    eps = torch.finfo(torch.float32).eps
    for got, base, want in zip([chunked, *chunked_grads], [naive, *naive_grads], [exact, *exact_grads]):
        floor = 16 * eps * want.abs().max().item()
        naive_error = (base.double() - want).abs().max().item()
        error = (got.double() - want).abs().max().item()
        assert error <= 4 * max(naive_error, floor), (error, naive_error, floor)


def test_teacher_receives_no_gradient():
    hidden, weight, teacher_hidden, teacher_weight = _inputs()
    teacher_hidden.requires_grad_()
    loss = chunked_divergence(hidden, weight, teacher_hidden, teacher_weight)
    loss.backward()
    assert teacher_hidden.grad is None


def test_masked_mean_ignores_padding_and_averages_counted_tokens():
    b, t, h, v = 3, 6, 8, 11
    hidden = torch.randn(b, t, h, requires_grad=True)
    teacher_hidden = torch.randn(b, t + 2, h)
    weight, teacher_weight = torch.randn(v, h, requires_grad=True), torch.randn(v, h)
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[0, 1:4] = mask[2, 2:6] = True
    teacher_mask = torch.zeros(b, t + 2, dtype=torch.bool)
    teacher_mask[0, 3:6] = teacher_mask[2, 4:8] = True
    mean, count = masked_mean_divergence(hidden, weight, teacher_hidden, teacher_weight, mask, teacher_mask)
    rows = reference_divergence(hidden[mask] @ weight.T, teacher_hidden[teacher_mask] @ teacher_weight.T, "reverse")
    assert count.item() == 7
    torch.testing.assert_close(mean, rows.mean())
    mean.backward()
    assert hidden.grad[~mask].abs().sum() == 0  # padding positions get no gradient


def test_nothing_counted_gives_zero_loss_and_zero_gradient():
    hidden, weight = torch.randn(2, 5, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    empty = torch.zeros(2, 5, dtype=torch.bool)
    mean, count = masked_mean_divergence(hidden, weight, torch.randn(2, 5, 4), torch.randn(9, 4), empty, empty)
    mean.backward()
    assert count.item() == 0 and mean.item() == 0.0 and hidden.grad.abs().sum() == 0


def test_mismatched_masks_and_bad_settings_raise():
    hidden, weight, teacher_hidden, teacher_weight = _inputs()
    with pytest.raises(ValueError, match="beta"):
        chunked_divergence(hidden, weight, teacher_hidden, teacher_weight, "jsd", beta=1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_divergence(hidden, weight, teacher_hidden, teacher_weight, chunk_size=0)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="completion tokens"):
        masked_mean_divergence(
            torch.randn(1, 4, 24), weight, torch.randn(1, 4, 24), teacher_weight, mask, mask & (torch.arange(4) > 0)
        )
