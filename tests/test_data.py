import torch

from caopd_pl.data import DistillExample, collate_distill, skip_first


def test_masks_select_the_same_completion_tokens_in_both_views():
    examples = [
        DistillExample([1, 2, 3], [1, 2, 3, 4, 5, 6], [10, 11, 12]),
        DistillExample([1, 2], [1, 2, 3, 4], [20, 21, 22, 23]),
    ]
    batch = collate_distill(examples, pad_id=0)
    for side in ("student", "teacher"):
        ids, mask = batch[f"{side}_ids"], batch[f"{side}_mask"]
        predicted = ids[:, 1:][mask[:, :-1]]  # the token each masked position predicts
        assert predicted.tolist() == [10, 11, 12, 20, 21, 22, 23]
        assert (
            batch[f"{side}_attention"].sum(-1)
            == torch.tensor([len(e.completion) for e in examples])
            + torch.tensor([len(getattr(e, f"{side}_prompt")) for e in examples])
        ).all()


def test_skip_first_drops_leading_positions_per_row():
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert skip_first(mask, 1).tolist() == [[False, False, True, True, False], [False, True, False, False, False]]
    assert not skip_first(mask, 5).any()
    assert torch.equal(skip_first(mask, 0), mask)
