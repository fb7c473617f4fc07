"""The one training loop: a stack of k models trains each as the same loop trains it alone."""

from __future__ import annotations

import pytest
import torch

from synthmed.config import Config
from synthmed.data.base import ImageSet
from synthmed.plugins import registry
from synthmed.training import Member, fit, fit_stack, stack

SIZE, CLASSES = 16, 4


def _set(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    images = torch.randint(0, 256, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    images[:, :, :4, :4] = (labels * 60).view(-1, 1, 1, 1).to(torch.uint8)  # learnable signal
    return ImageSet(images, labels.long())


def _model(config: Config) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    return registry("models").get("cnn")().create(CLASSES, SIZE, config).to(memory_format=torch.channels_last)


def _logged() -> tuple[list, callable]:
    calls: list = []
    return calls, lambda metrics, step=None: calls.append((step, dict(metrics)))


@pytest.mark.parametrize("policy_name", ["none", "basic"])
@pytest.mark.parametrize("budget", ["epochs", "steps"])
def test_a_stack_trains_each_model_as_the_loop_trains_it_alone(policy_name, budget):
    """Validation, early stopping (each model at its own epoch), best-epoch restore and the step budget,
    per model: the stack's outcome, logged metrics and weights equal each model's alone (float tolerance)."""
    torch.set_num_threads(1)
    policy = registry("policies").get(policy_name)()
    configs = [Config(image_size=SIZE, epochs=6, batch_size=8, lr=0.005, patience=patience, val_frac=0.25, seed=seed,
                      device="cpu", precision="fp32", quiet=True) for seed, patience in ((3, 1), (4, 2), (5, 0))]
    data = [(_set(40, c.seed), _set(12, 100 + c.seed)) for c in configs]
    max_steps = 17 if budget == "steps" else None

    alone, alone_logs, alone_models = [], [], []
    for c, (train_set, val_set) in zip(configs, data):
        model, (calls, log) = _model(c), _logged()
        alone.append(fit(model, policy, train_set, val_set, c, "cpu", log, max_steps=max_steps))
        alone_logs.append(calls)
        alone_models.append(model)

    models, logs, members = [_model(c) for c in configs], [], []
    for c, (train_set, val_set) in zip(configs, data):
        calls, log = _logged()
        logs.append(calls)
        members.append(Member(train_set, val_set, c, log))
    together = fit_stack(stack(models), policy, members, "cpu", max_steps=max_steps)

    assert len({info["train_seconds"] for info in together}) == 1  # the stack's one shared time
    for a, b, la, lb, ma, mb in zip(alone, together, alone_logs, logs, alone_models, models):
        for key in ("epochs_run", "best_epoch", "optimizer_steps"):
            assert a[key] == b[key], key
        assert [step for step, _ in la] == [step for step, _ in lb]
        for (_, x), (_, y) in zip(la, lb):
            assert x.keys() == y.keys()
            for name in x:
                assert y[name] == pytest.approx(x[name], rel=1e-3, abs=1e-4), name
        for p, q in zip(ma.state_dict().values(), mb.state_dict().values()):
            # Adam normalises each step: a weight whose gradient is ~0 can move by a fraction of lr
            # when the other summation order flips its sign, so the bound is a share of lr
            torch.testing.assert_close(q, p, rtol=1e-3, atol=0.1 * configs[0].lr)
    # not vacuous: a model stopped early while another went on, and a best epoch before the last was restored
    assert min(info["epochs_run"] for info in alone) < max(info["epochs_run"] for info in alone)
    assert any(info["best_epoch"] < info["epochs_run"] for info in alone)


def test_one_model_through_fit_is_a_stack_of_one():
    """fit() is fit_stack over one model: bit-identical weights and outcome for the same seed."""
    torch.set_num_threads(1)
    policy = registry("policies").get("basic")()
    config = Config(image_size=SIZE, epochs=2, batch_size=8, seed=7, device="cpu", precision="fp32", quiet=True)
    train_set = _set(24, 1)
    a, b = _model(config), _model(config)
    fit(a, policy, train_set, None, config, "cpu", lambda *x, **k: None)
    fit_stack(stack([b]), policy, [Member(train_set, None, config, lambda *x, **k: None)], "cpu")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
