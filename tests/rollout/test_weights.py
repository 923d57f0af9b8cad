"""Gathering the student's weights and telling when they changed: engine-agnostic, no vLLM needed."""

from __future__ import annotations

import pytest
import torch

from caopd_pl.rollout.weights import changed_on_any_rank, checkpoint_name, fingerprint, iter_full_parameters


@pytest.fixture
def twin_models(tiny_model):
    """Two copies of the tiny model with equal weights: one to shard, one to compare with."""
    import copy

    return tiny_model, copy.deepcopy(tiny_model)


@pytest.fixture
def world_of_one(tmp_path):
    """A gloo process group of one rank, as a trainer's would be; destroyed afterwards."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def assert_full_parameters(gathered: list[tuple[str, torch.Tensor]], reference: torch.nn.Module) -> None:
    """Every parameter once under each of its checkpoint names (tied ones too), as a full plain tensor."""
    want = dict(reference.named_parameters(remove_duplicate=False))
    assert sorted(name for name, _ in gathered) == sorted(want)
    for name, value in gathered:
        assert type(value) is torch.Tensor and torch.equal(value, want[name]), name


def test_checkpoint_names_lose_the_wrapper_components():
    assert checkpoint_name("_orig_mod.model.layers.0._fsdp_wrapped_module.mlp.up_proj.weight") == (
        "model.layers.0.mlp.up_proj.weight"
    )
    assert checkpoint_name("model._checkpoint_wrapped_module.norm.weight") == "model.norm.weight"
    assert checkpoint_name("lm_head.weight") == "lm_head.weight"


def test_a_plain_model_yields_every_parameter_tied_ones_under_each_name(tiny_model):
    gathered = list(iter_full_parameters(tiny_model))
    assert_full_parameters(gathered, tiny_model)
    names = dict(gathered)
    assert names["lm_head.weight"].data_ptr() == names["model.embed_tokens.weight"].data_ptr()  # tied: both names


def test_a_compiled_or_checkpointed_wrapper_is_named_as_the_checkpoint(tiny_model):
    class Wrapper(torch.nn.Module):  # what torch.compile and activation checkpointing insert into the names
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner

    assert_full_parameters(list(iter_full_parameters(Wrapper(tiny_model))), tiny_model)


def test_fsdp2_dtensors_are_gathered_to_full_tensors(twin_models, world_of_one):
    from torch.distributed.fsdp import fully_shard

    sharded, reference = twin_models
    for layer in sharded.model.layers:
        fully_shard(layer)
    fully_shard(sharded)
    assert type(next(sharded.parameters())).__name__ == "DTensor"
    assert_full_parameters(list(iter_full_parameters(sharded)), reference)


@pytest.mark.filterwarnings("ignore:FSDP is switching to use `NO_SHARD`:UserWarning")
@pytest.mark.parametrize("use_orig_params", [True, False])
def test_fsdp1_units_yield_each_parameter_once(twin_models, world_of_one, use_orig_params):
    """Nested FSDP1 units: the root unit must not yield the parameters its nested units own (it did, twice)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    sharded, reference = twin_models
    cpu = torch.device("cpu")
    for index, layer in enumerate(sharded.model.layers):
        sharded.model.layers[index] = FSDP(layer, device_id=cpu, use_orig_params=use_orig_params)
    wrapped = FSDP(sharded, device_id=cpu, use_orig_params=use_orig_params)
    assert_full_parameters(list(iter_full_parameters(wrapped)), reference)


def test_the_fingerprint_sees_every_kind_of_update():
    model = torch.nn.Linear(4, 4)
    before = fingerprint(model)
    assert not fingerprint(model).differs(before) and before.differs(None)  # unchanged; nothing pushed yet

    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    plain.step()  # bumps the version counters
    stepped = fingerprint(model)
    assert stepped.keys != before.keys and stepped.differs(before)

    fused = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)  # does not bump version counters
    fused.step()
    after = fingerprint(model)
    assert after.keys == stepped.keys and after.differs(stepped)  # the content summary sees it
    model.weight.data.mul_(2)  # invisible to autograd's version counter too
    assert fingerprint(model).differs(after)


def test_the_fingerprint_of_a_sharded_model_reads_local_shards(twin_models, world_of_one):
    from torch.distributed.fsdp import fully_shard

    sharded, _ = twin_models
    fully_shard(sharded)
    before = fingerprint(sharded)
    assert before.sums.shape == (len(list(sharded.parameters())), 2)
    with torch.no_grad():
        next(sharded.parameters()).to_local().add_(1.0)
    assert fingerprint(sharded).differs(before)


def test_ranks_agree_on_a_change(world_of_one):
    cpu = torch.device("cpu")
    assert changed_on_any_rank(True, cpu) and not changed_on_any_rank(False, cpu)


def test_without_a_process_group_the_local_answer_stands():
    assert not torch.distributed.is_initialized()
    assert changed_on_any_rank(True, torch.device("cpu")) and not changed_on_any_rank(False, torch.device("cpu"))
