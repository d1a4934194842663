"""The selective strategy: K groups -> K optimizer steps touching only the group's heads; joint grouping is
exactly joint training; the single-group rule; non-finite losses; per-group balancers; exact resume."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from mtlkit import balancing
from mtlkit.errors import MtlkitError
from mtlkit.strategies import STRATEGIES, ProximalAffinity, Selective, StepContext, get

from .helpers import TASKS, micro_setup


class RecordingAdam(torch.optim.Adam):
    """Adam that records, per step, which heads changed, whether the backbone changed, and whose state moved."""

    def __init__(self, model: torch.nn.Module, lr: float = 1e-3, **kwargs) -> None:
        super().__init__(model.parameters(), lr=lr, **kwargs)
        self.model = model
        self.records: list[dict] = []

    def _snapshot(self) -> tuple[dict, dict]:
        params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        state = {
            n: {k: v.clone() if torch.is_tensor(v) else v for k, v in self.state[p].items()}
            for n, p in self.model.named_parameters()
            if p in self.state
        }
        return params, state

    def step(self, closure=None):
        params, state = self._snapshot()
        out = super().step(closure)
        after_params, after_state = self._snapshot()
        changed = {n for n in params if not torch.equal(params[n], after_params[n])}
        state_moved = {
            n
            for n in set(state) | set(after_state)
            if n not in state
            or n not in after_state
            or any(not torch.equal(torch.as_tensor(state[n][k]), torch.as_tensor(after_state[n][k])) for k in state[n])
        }
        self.records.append(
            {
                "heads": {n.split(".")[1] for n in changed if n.startswith("heads.")},
                "backbone": any(n.startswith("backbone.") for n in changed),
                "state_heads": {n.split(".")[1] for n in state_moved if n.startswith("heads.")},
            }
        )
        return out


def make_ctx(model, tasks, optimizer, balancer=None, **kwargs) -> StepContext:
    balancer = balancer or balancing.get("equal", tasks=list(tasks))
    return StepContext(model=model, tasks=tasks, balancer=balancer, optimizer=optimizer, **kwargs)


def run(strategy, steps: int, seed: int = 0, **ctx_kwargs):
    tasks, model, batch = micro_setup(seed)
    opt = RecordingAdam(model)
    ctx = make_ctx(model, tasks, opt, **ctx_kwargs)
    infos = []
    for i in range(steps):
        ctx.iteration = i
        infos.append(strategy.step(batch, ctx))
    return infos, opt, model


@pytest.mark.parametrize(
    ("options", "sizes"),
    [
        ({"grouping": "separate"}, [1, 1, 1, 1]),
        ({"grouping": "random", "group_size": 2}, [2, 2]),
        ({"grouping": "random", "group_size": 3}, [1, 3]),
        ({"grouping": "affinity", "warmup": 100}, [1, 1, 1, 1]),  # warm-up: singletons
    ],
)
def test_k_groups_give_k_steps_each_touching_only_its_heads(options, sizes):
    strategy = get("selective", seed=3, **options)
    infos, opt, _ = run(strategy, steps=2)
    assert len(opt.records) == sum(info["steps"] for info in infos) == 2 * len(sizes)
    done = 0
    for info in infos:
        groups = info["groups"]
        assert sorted(len(g) for g in groups) == sizes and info["steps"] == len(groups) and info["skipped"] == 0
        assert sorted(t for g in groups for t in g) == sorted(TASKS)
        for group, record in zip(groups, opt.records[done : done + len(groups)], strict=True):
            assert record["heads"] == set(group)  # heads outside the group: bit-identical
            assert record["state_heads"] == set(group)  # and their Adam state unchanged
            assert record["backbone"]
        done += len(groups)


@pytest.mark.parametrize("method", ["equal", "famo"])
def test_joint_grouping_is_plain_joint_training_bit_for_bit(method):
    steps = 3
    infos, opt_sel, model_sel = run(get("selective", grouping="joint"), steps,
                                    balancer=balancing.get(method, tasks=list(TASKS)))
    tasks, model, batch = micro_setup(0)
    opt = RecordingAdam(model)
    ctx = make_ctx(model, tasks, opt, balancer=balancing.get(method, tasks=list(TASKS)))
    joint = get("joint")
    ref = []
    for i in range(steps):
        ctx.iteration = i
        ref.append(joint.step(batch, ctx))
    for (n, p), (n2, q) in zip(model_sel.named_parameters(), model.named_parameters(), strict=True):
        assert n == n2 and torch.equal(p, q), n
    for p, q in zip(model_sel.parameters(), model.parameters(), strict=True):
        for k in opt.state[q]:
            assert torch.equal(torch.as_tensor(opt_sel.state[p][k]), torch.as_tensor(opt.state[q][k]))
    assert [i["losses"] for i in infos] == [r["losses"] for r in ref]
    assert [i["weights"] for i in infos] == [r["weights"] for r in ref]
    assert all(i["steps"] == 1 and i["groups"] == [list(TASKS)] for i in infos)  # never doubled


def _one_group_strategy(**options) -> tuple[Selective, list[dict]]:
    tasks, model, batch = micro_setup()
    opt = RecordingAdam(model)
    ctx = make_ctx(model, tasks, opt)
    strategy = get("selective", warmup=0, seed=0, **options)
    strategy._setup(ctx)
    strategy.batches = 1  # past the warm-up (the official test is `iter_count <= prepos`)
    strategy.affinity.matrix[:] = 1e-3  # equal affinities: one cluster
    return strategy, [strategy.step(batch, ctx)], opt


def test_single_group_is_stepped_twice_unless_disabled():
    strategy, infos, opt = _one_group_strategy()
    assert infos[0]["grouped_by"] == "affinity"
    assert infos[0]["groups"] == [list(TASKS)] and infos[0]["steps"] == 2 and len(opt.records) == 2
    assert strategy.affinity.measurements == 1  # the doubled step keeps the affinity measured
    strategy, infos, opt = _one_group_strategy(double_single=False)
    assert infos[0]["steps"] == 1 and strategy.affinity.measurements == 0


def test_warmup_then_affinity_groups_and_logged_info():
    strategy = get("selective", warmup=2, seed=0)
    infos, opt, _ = run(strategy, steps=5)
    assert [i["grouped_by"] for i in infos] == ["warmup", "warmup", "warmup", "affinity", "affinity"]
    assert infos[0]["affinity_tasks"] == list(TASKS) and "affinity_tasks" not in infos[1]
    for info in infos:
        assert len(info["affinity"]) == 4 and all(len(r) == 4 for r in info["affinity"])
        assert set(info["losses"]) == set(TASKS) and set(info["weights"]) == set(TASKS)
        json.dumps(info)  # goes to log.jsonl as is
    # previous attribution: 3 measurements per warm-up batch of 4 singleton groups
    assert strategy.affinity.measurements == 3 * 3 + sum(max(i["steps"] - 1, 0) for i in infos[3:])
    assert np.all(np.diag(strategy.affinity.matrix) >= 0)


def test_affinity_uses_the_reduced_losses():
    fake = iter(np.linspace(2.0, 1.0, 200).tolist())
    seen: list[dict] = []

    def reduce(values):  # stands in for the all-reduce: every process would see these values
        out = {t: next(fake) for t in values}
        seen.append(out)
        return out

    strategy = get("selective", grouping="separate", seed=0, decay=0.5)
    infos, _, _ = run(strategy, steps=2, reduce_losses=reduce)
    expected = ProximalAffinity(list(TASKS), decay=0.5)
    k = 0
    for info in infos:
        expected.begin_batch()
        for group in info["groups"]:
            expected.observe(group, seen[k])
            k += 1
    np.testing.assert_array_equal(strategy.affinity.matrix, expected.matrix)
    assert infos[0]["losses"] == seen[0]


def test_non_finite_loss_skips_that_group_and_spares_the_affinity():
    calls = {"n": 0}

    def reduce(values):
        calls["n"] += 1
        return {t: (math.nan if calls["n"] == 2 and t == "depth" else v) for t, v in values.items()}

    strategy = get("selective", grouping="separate", order="forward", seed=0)
    infos, opt, _ = run(strategy, steps=1, reduce_losses=reduce)
    info = infos[0]
    assert info["steps"] == 3 and info["skipped"] == 1 and len(opt.records) == 3
    assert [r["heads"] for r in opt.records] == [{"semseg"}, {"normals"}, {"edge"}]  # depth's step skipped
    assert strategy.affinity.measurements == 1  # only (forward 3 -> forward 4) is usable
    assert np.all(np.isfinite(strategy.affinity.matrix))


def test_all_losses_nan_changes_nothing():
    tasks, model, batch = micro_setup()
    batch["edge"] = torch.full_like(batch["edge"], math.nan)  # edge loss NaN on every forward
    before = copy.deepcopy(model.state_dict())
    opt = RecordingAdam(model)
    strategy = get("selective", seed=0)
    info = strategy.step(batch, make_ctx(model, tasks, opt))
    assert info["steps"] == 0 and info["skipped"] == 4 and opt.records == [] and not opt.state
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert np.all(strategy.affinity.matrix == 0.0)


class Recording(balancing.Equal):
    calls: list[tuple[int, list[str]]] = []

    def backward(self, losses, shared=None, features=None, **context):
        type(self).calls.append((id(self), list(losses)))
        return super().backward(losses, shared=shared, features=features, **context)


def test_balancer_sees_only_its_groups_losses_with_one_instance_per_group():
    Recording.calls = []
    base = Recording(list(TASKS))
    strategy = get("selective", grouping="random", group_size=2, seed=1)
    infos, _, _ = run(strategy, steps=4, balancer=base)
    groups = [g for info in infos for g in info["groups"]]
    assert [c[1] for c in Recording.calls] == groups
    by_group: dict[tuple, set] = {}
    for (instance, _), group in zip(Recording.calls, groups, strict=True):
        by_group.setdefault(tuple(group), set()).add(instance)
    assert all(len(ids) == 1 for ids in by_group.values())  # the same instance whenever a group recurs
    assert id(base) not in {i for ids in by_group.values() for i in ids}  # sub-groups never use ctx.balancer

    Recording.calls = []
    run(get("selective", grouping="joint"), steps=1, balancer=base)
    assert Recording.calls == [(id(base), list(TASKS))]


def test_balancer_factory_and_learnable_parameters():
    made: list[list[str]] = []

    def factory(tasks):
        made.append(tasks)
        return balancing.get("equal", tasks=tasks)

    strategy = get("selective", grouping="separate", order="forward", seed=0)
    strategy.balancer_factory = factory
    run(strategy, steps=2)
    assert made == [[t] for t in TASKS]

    class Learnable(balancing.Equal):
        def __init__(self, tasks=None):
            super().__init__(tasks)
            self.log_vars = torch.nn.Parameter(torch.zeros(len(tasks or [])))

        def parameters(self):
            return [self.log_vars]

    with pytest.raises(MtlkitError, match="learns parameters"):
        run(get("selective", grouping="separate"), steps=1, balancer=Learnable(list(TASKS)))


class Counting(balancing.WeightedSum):
    """A stateful weighting: the weights depend on how often this instance was called."""

    name = "counting"

    def __init__(self, tasks=None):
        super().__init__(tasks)
        self.calls = 0

    def weights(self, losses, **context):
        self.calls += 1
        return {t: 1.0 + 0.1 * self.calls * (i + 1) for i, t in enumerate(losses)}

    def state_dict(self):
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.calls = state["calls"]


@pytest.mark.parametrize("options", [{"warmup": 1}, {"grouping": "random", "group_size": 2}])
def test_resume_from_state_dict_continues_exactly(options):
    full = get("selective", seed=7, **options)
    ref, _, model_ref = run(full, steps=5, balancer=Counting(list(TASKS)))

    tasks, model, batch = micro_setup(0)
    ctx = make_ctx(model, tasks, RecordingAdam(model), balancer=Counting(list(TASKS)))
    first = get("selective", seed=7, **options)
    infos = [first.step(batch, ctx) for _ in range(3)]
    state = json.loads(json.dumps(first.state_dict()))  # plain values: any checkpoint format will do
    second = get("selective", seed=123, **options)  # the seed is overridden by the saved generator
    second.load_state_dict(state)
    infos += [second.step(batch, ctx) for _ in range(2)]
    for a, b in zip(infos, ref, strict=True):
        assert a["groups"] == b["groups"] and a["affinity"] == b["affinity"] and a["losses"] == b["losses"]
        assert a["weights"] == b["weights"]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model_ref.parameters(), strict=True))


def test_resume_restores_the_balancer_as_it_was_before_its_first_use():
    tasks, model, batch = micro_setup(0)
    base = Counting(list(TASKS))
    ctx = make_ctx(model, tasks, RecordingAdam(model), balancer=base)
    first = get("selective", grouping="joint")
    first.step(batch, ctx)
    assert base.calls == 1
    second = get("selective", grouping="random", group_size=2, seed=0)
    second.load_state_dict(first.state_dict())
    second.step(batch, ctx)  # new sub-groups are copied from the pristine balancer, not the used one
    assert sorted(b.calls for b in second._balancers.values()) == [1, 1]


def test_same_seed_same_groups_whatever_the_global_rng():
    orders = []
    for global_seed in (0, 1):
        strategy = get("selective", grouping="random", group_size=2, seed=5)
        torch.manual_seed(global_seed)
        infos, _, _ = run(strategy, steps=3)
        orders.append([i["groups"] for i in infos])
    assert orders[0] == orders[1]


class GradCapture(torch.optim.SGD):
    def step(self, closure=None):
        self.grads = [p.grad.clone() for group in self.param_groups for p in group["params"]]
        return super().step(closure)


def test_group_norm_divides_the_group_loss_by_its_size():
    grads = []
    for group_norm in (False, True):
        tasks, model, batch = micro_setup()
        opt = GradCapture(model.parameters(), lr=0.1)
        get("selective", grouping="joint", group_norm=group_norm).step(batch, make_ctx(model, tasks, opt))
        grads.append(opt.grads)
    for g, g_norm in zip(*grads, strict=True):
        torch.testing.assert_close(g_norm, g / len(TASKS), rtol=1e-6, atol=0)


def test_forward_and_backward_order():
    infos, opt, _ = run(get("selective", grouping="separate", order="forward"), steps=1)
    assert infos[0]["groups"] == [[t] for t in TASKS]
    assert [r["heads"] for r in opt.records] == [{t} for t in TASKS]
    infos, _, _ = run(get("selective", grouping="separate", order="backward"), steps=1)
    assert infos[0]["groups"] == [[t] for t in reversed(TASKS)]


def test_options_are_validated():
    assert "selective" in STRATEGIES
    for bad in (
        {"grouping": "clusters"},
        {"order": "sideways"},
        {"attribution": "next"},
        {"decay": -1},
        {"grouping": "random"},
        {"grouping": "random", "group_size": 2, "num_groups": 2},
        {"group_size": 2},
        {"warmup": -1},
        {"double_single": "maybe"},
        {"lr": 0.1},
    ):
        with pytest.raises(MtlkitError):
            get("selective", **bad)
    strategy = get("selective", decay="0.0001", warmup="10", double_single="false")
    assert strategy.decay == 1e-4 and strategy.warmup == 10 and strategy.double_single is False


def test_fixed_weights_apply_within_each_group():
    base = balancing.get("fixed", tasks=list(TASKS), weights={"semseg": 2.0, "edge": 50.0})
    infos, _, _ = run(get("selective", grouping="random", group_size=2, seed=0), steps=1, balancer=base)
    assert infos[0]["weights"] == {"semseg": 2.0, "depth": 1.0, "normals": 1.0, "edge": 50.0}
    assert infos[0]["steps"] == 2


class PostStep(balancing.Equal):
    """Records the losses handed to post_step (as FAMO wants them)."""

    needs_post_step_losses = True
    log: list[tuple[list[str], dict[str, float]]] = []

    def post_step(self, losses):
        type(self).log.append((list(self.tasks), {t: float(v) for t, v in losses.items()}))


def test_post_step_losses_come_from_the_next_forward_then_one_extra():
    PostStep.log = []
    forwards: list[dict] = []

    def reduce(values):
        forwards.append(dict(values))
        return values

    strategy = get("selective", grouping="separate", order="forward")
    strategy.configure_balancer("fixed", {"weights": {"edge": 50.0}})  # sub-groups come from the spec ...
    strategy.balancer_factory = lambda ts: PostStep(ts)  # ... unless a factory is set
    infos, _, _ = run(strategy, steps=1, reduce_losses=reduce)
    assert [g for g, _ in PostStep.log] == [[t] for t in TASKS]
    for k, (group, after) in enumerate(PostStep.log[:-1]):
        assert after == {group[0]: forwards[k + 1][group[0]]}  # the next group's forward, same batch
    assert len(forwards) == 4  # the last group's post-step losses come from an extra (unreduced) forward
    assert infos[0]["weights"] == dict.fromkeys(TASKS, 1.0)


def test_configured_balancers_are_built_per_group():
    strategy = get("selective", grouping="random", group_size=2, seed=0)
    strategy.configure_balancer("famo", {"w_lr": 0.05})
    infos, _, _ = run(strategy, steps=2, balancer=balancing.get("famo", tasks=list(TASKS)))
    assert all(i["steps"] == 2 and i["skipped"] == 0 for i in infos)
    for key, b in strategy._balancers.items():
        assert b.tasks == key.split("+") and b.logits.shape == (2,) and b.w_lr == 0.05
    fixed = get("selective", grouping="separate")
    fixed.configure_balancer("fixed", {"weights": {"semseg": 3.0, "edge": 50.0}})
    infos, _, _ = run(fixed, steps=1)
    assert infos[0]["weights"] == {"semseg": 3.0, "depth": 1.0, "normals": 1.0, "edge": 50.0}


def test_unrestrictable_balancer_state_is_a_user_error():
    with pytest.raises(MtlkitError, match="configure_balancer"):
        run(get("selective", grouping="separate"), steps=1, balancer=balancing.get("famo", tasks=list(TASKS)))


class FakeRecorder:
    def __init__(self):
        self.begun: list[list[str]] = []

    def begin(self, losses, model=None, features=None, iteration=0):
        self.begun.append(list(losses))
        return self

    def finish(self, info):
        return {"weights_seen": dict(info["weights"])}


def test_gradient_statistics_once_per_batch_for_all_tasks():
    rec = FakeRecorder()
    infos, _, _ = run(get("selective", grouping="random", group_size=2, seed=0), steps=2, grad_stats=rec)
    assert rec.begun == [list(TASKS)] * 2
    for info in infos:
        first = info["groups"][0]
        assert info["grad_stats"] == {"weights_seen": dict.fromkeys(first, 1.0), "update_group": first}
