import pytest
import torch

from caopd_pl.ema import ema_update, make_teacher


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
