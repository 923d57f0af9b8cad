import pytest
import torch

from caopd_pl.ema import ema_update, make_teacher, stochastic_round


def _pair(tiny_model):
    teacher = make_teacher(tiny_model)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn_like(p))
    return tiny_model, teacher


def test_teacher_is_a_frozen_copy(tiny_model):
    teacher = make_teacher(tiny_model)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    for a, b in zip(teacher.parameters(), tiny_model.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_rate_zero_freezes(tiny_model):
    student, teacher = _pair(tiny_model)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_rate_one_copies(tiny_model):
    student, teacher = _pair(tiny_model)
    ema_update(teacher, student, 1.0)
    for (name, a), b in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert torch.equal(a, b), name


def test_rate_moves_by_the_given_fraction(tiny_model):
    student, teacher = _pair(tiny_model)
    old = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.25)
    for before, after, target in zip(old, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(after, 0.75 * before + 0.25 * target)


def test_tied_embeddings_stay_tied(tiny_model):
    student, teacher = _pair(tiny_model)
    ema_update(teacher, student, 0.5)
    assert teacher.lm_head.weight.data_ptr() == teacher.get_input_embeddings().weight.data_ptr()


def test_invalid_rate_raises(tiny_model):
    with pytest.raises(ValueError, match="ema_rate"):
        ema_update(make_teacher(tiny_model), tiny_model, 1.5)


def _drifting_pair(dtype: torch.dtype) -> tuple[torch.nn.Linear, torch.nn.Module]:
    torch.manual_seed(0)
    student = torch.nn.Linear(256, 256)  # weights ~U(-1/16, 1/16), the scale of a real model's
    return student, make_teacher(student, dtype)


def _ema_movement(teacher_dtype: torch.dtype, update, steps: int = 200, rate: float = 0.01) -> torch.Tensor:
    """How far the teacher's weight moved while the student drifted by Adam-sized steps (2e-5, mostly one way)."""
    student, teacher = _drifting_pair(teacher_dtype)
    start = teacher.weight.detach().float().clone()
    direction = torch.randn_like(student.weight).sign()
    for _ in range(steps):
        with torch.no_grad():
            student.weight.add_(2e-5 * direction * (torch.rand_like(direction) < 0.7))
        update(teacher, student, rate)
    return (teacher.weight.float() - start).flatten()


def test_make_teacher_casts_to_the_teacher_dtype(tiny_model):
    teacher = make_teacher(tiny_model, torch.bfloat16)
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}


@pytest.mark.parametrize(
    ("student_dtype", "teacher_dtype"), [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)]
)
def test_update_across_dtypes(tiny_model, student_dtype, teacher_dtype):
    student = tiny_model.to(student_dtype)
    teacher = make_teacher(student, teacher_dtype)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    ema_update(teacher, student, 1.0)
    for (name, a), b in zip(teacher.state_dict().items(), student.state_dict().values()):
        assert a.dtype == teacher_dtype and torch.equal(a, b.to(teacher_dtype)), name
    old = [p.float().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.5)
    for before, after, target in zip(old, teacher.parameters(), student.parameters()):
        expected = 0.5 * before + 0.5 * target.float()
        step = 2**-7 if teacher_dtype == torch.bfloat16 else 0.0  # one bf16 step, relative
        torch.testing.assert_close(after.float(), expected, atol=1e-6, rtol=step + 1e-6)


def test_low_precision_teacher_keeps_small_updates():
    # At rate 0.01 an update is ~1e-7 against a bf16 step of ~1e-4 here: round-to-nearest loses almost all of it.
    exact = _ema_movement(torch.float32, ema_update)
    stochastic = _ema_movement(torch.bfloat16, ema_update)

    def nearest(teacher, student, rate):  # the reference's bf16 EMA
        torch._foreach_lerp_(list(teacher.parameters()), [p.detach().bfloat16() for p in student.parameters()], rate)

    plain = _ema_movement(torch.bfloat16, nearest)
    kept = lambda movement: float(movement @ exact / (exact @ exact))  # noqa: E731
    assert kept(plain) < 0.2
    assert 0.9 < kept(stochastic) < 1.1
    # What stochastic rounding leaves is zero-mean noise of a few bf16 steps, far below the lost updates' lag.
    assert (stochastic - exact).norm() < 0.5 * (plain - exact).norm()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_round_is_unbiased_between_neighbours(dtype):
    values = torch.full((200_000,), 1.0 + 0.3 * 2**-7)  # 30% of the way from 1 to the next bf16 value
    values[100_000:] *= -1e-3
    rounded = stochastic_round(values, dtype, torch.Generator().manual_seed(0))
    assert rounded.dtype == dtype
    for half in (rounded[:100_000], rounded[100_000:]):
        assert half.unique().numel() == 2  # only the two neighbours
    torch.testing.assert_close(rounded.float().mean(), values.mean(), rtol=1e-4, atol=0)
    assert torch.equal(stochastic_round(torch.tensor([1.0, -2.5]), dtype), torch.tensor([1.0, -2.5], dtype=dtype))
