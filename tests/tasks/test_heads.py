"""The head bank must equal independent PyTorch training runs, head by head."""

import numpy as np
import torch
from torch import nn

from brainfm.tasks.heads import init_head_params
from brainfm.tasks.train import HeadConfig, HeadJob, train_head_bank, head_generator


def _reference_run(x, y, job, cfg):
    """One head trained the plain PyTorch way: nn.Module + torch.optim.Adam + early stopping."""
    g = head_generator(job.seed)
    p = init_head_params(1, x.shape[1], cfg.hidden or x.shape[1], cfg.n_out, [g])
    model = nn.Sequential(nn.LayerNorm(x.shape[1]), nn.Linear(x.shape[1], x.shape[1]), nn.GELU(),
                          nn.Linear(x.shape[1], cfg.n_out))
    with torch.no_grad():
        model[1].weight.copy_(p["w1"][0].T)
        model[1].bias.copy_(p["b1"][0])
        model[3].weight.copy_(p["w2"][0].T)
        model[3].bias.copy_(p["b2"][0])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss() if cfg.loss == "ce" else nn.MSELoss()
    tgt = (lambda t: t.long()) if cfg.loss == "ce" else (lambda t: t)
    out_fn = (lambda o: o) if cfg.loss == "ce" else (lambda o: o[:, 0])
    best, best_loss, bad = None, float("inf"), 0
    for _epoch in range(cfg.max_epochs):
        perm = torch.randperm(len(job.train), generator=g).numpy()
        rows = job.train[perm]
        for i in range(0, len(rows), cfg.batch_size):
            b = rows[i:i + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(out_fn(model(x[b])), tgt(y[b]))
            loss.backward()
            opt.step()
        with torch.no_grad():
            vl = loss_fn(out_fn(model(x[job.val])), tgt(y[job.val])).item()
        if vl < best_loss:
            best_loss, bad = vl, 0
            best = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best)
    return model


def _data(n=60, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, k, size=n), dtype=torch.float32)
    return x, y


def test_bank_equals_independent_torch_runs_classification():
    x, y = _data()
    cfg = HeadConfig(loss="ce", n_out=3, lr=1e-2, weight_decay=1e-3, batch_size=7, max_epochs=15, patience=3,
                     standardize_features=False)
    rng = np.random.default_rng(1)
    jobs = []
    for seed, n_tr in [(0, 40), (1, 23), (2, 9)]:
        perm = rng.permutation(60)
        jobs.append(HeadJob(train=perm[:n_tr], val=perm[45:], seed=seed))
    res = train_head_bank(x, y, jobs, cfg)
    out = res.predict(x)
    for h, job in enumerate(jobs):
        ref = _reference_run(x, y, job, cfg)
        with torch.no_grad():
            np.testing.assert_allclose(out[h].numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-5)


def test_bank_equals_independent_torch_runs_regression():
    x, _ = _data()
    y = x[:, 0] * 2 + 0.1 * torch.randn(60, generator=head_generator(5))
    cfg = HeadConfig(loss="mse", n_out=1, lr=5e-3, weight_decay=0.0, batch_size=16, max_epochs=12, patience=4,
                     standardize_features=False)
    jobs = [HeadJob(np.arange(0, 40), np.arange(40, 50), seed=s) for s in (3, 4)]
    res = train_head_bank(x, y, jobs, cfg)
    out = res.predict(x)
    for h, job in enumerate(jobs):
        ref = _reference_run(x, y, job, cfg)
        with torch.no_grad():
            np.testing.assert_allclose(out[h].numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-5)


def test_head_result_independent_of_bank_mates_with_dropout():
    x, y = _data()
    cfg = HeadConfig(loss="ce", n_out=3, lr=1e-2, dropout=0.3, batch_size=8, max_epochs=6, patience=10)
    a = HeadJob(np.arange(0, 30), np.arange(40, 50), seed=11)
    b = HeadJob(np.arange(5, 45), np.arange(45, 60), seed=12)
    alone = train_head_bank(x, y, [a], cfg).predict(x)[0]
    together = train_head_bank(x, y, [b, a], cfg).predict(x)[1]
    torch.testing.assert_close(alone, together)


def test_cox_loss_matches_lifelines_partial_likelihood():
    """Our Cox head loss equals the negative mean partial log-likelihood computed by hand with ties (Breslow)."""
    from brainfm.tasks.losses import cox_partial_likelihood

    rng = np.random.default_rng(0)
    t = rng.integers(1, 10, size=25).astype(float)
    e = rng.integers(0, 2, size=25).astype(float)
    r = rng.normal(size=25)
    expected = 0.0
    for i in range(25):
        if e[i]:
            expected -= r[i] - np.log(np.exp(r[t >= t[i]]).sum())
    expected /= e.sum()
    out = torch.tensor(r, dtype=torch.float32).view(1, -1, 1)
    target = torch.tensor(np.stack([t, e], -1), dtype=torch.float32).unsqueeze(0)
    got = cox_partial_likelihood(out, target, torch.ones(1, 25))
    assert abs(got.item() - expected) < 1e-4
    # padding rows must not change the loss
    out_p = torch.cat([out, torch.zeros(1, 3, 1)], 1)
    tgt_p = torch.cat([target, torch.zeros(1, 3, 2)], 1)
    w_p = torch.cat([torch.ones(1, 25), torch.zeros(1, 3)], 1)
    assert abs(cox_partial_likelihood(out_p, tgt_p, w_p).item() - expected) < 1e-4


def test_fused_and_fallback_optimiser_agree_with_inactive_heads():
    from brainfm.tasks.heads import BatchedAdam

    g = head_generator(0)
    base = {"w": torch.randn(4, 5, 3, generator=g), "b": torch.randn(4, 3, generator=g)}
    for decoupled in (False, True):
        fused = BatchedAdam({k: v.clone() for k, v in base.items()}, lr=1e-2, weight_decay=0.1, decoupled=decoupled)
        plain = BatchedAdam({k: v.clone() for k, v in base.items()}, lr=1e-2, weight_decay=0.1, decoupled=decoupled)
        plain._fused = None
        for step in range(6):
            grads = {k: torch.randn(v.shape, generator=g) for k, v in base.items()}
            active = torch.tensor([True, step % 2 == 0, step < 3, True])
            heads = torch.nonzero(active).flatten()
            frozen = {k: v[~active].clone() for k, v in fused.params.items()}
            fused.step({k: g[heads] for k, g in grads.items()}, heads)
            plain.step({k: g[heads] for k, g in grads.items()}, heads)
            for k in base:
                torch.testing.assert_close(fused.params[k], plain.params[k], rtol=1e-5, atol=1e-6)
                assert torch.equal(fused.params[k][~active], frozen[k])


def test_feature_standardisation_uses_only_each_heads_training_rows():
    x, y = _data()
    cfg = HeadConfig(loss="ce", n_out=3, lr=1e-2, batch_size=8, max_epochs=5, patience=10)
    job = HeadJob(np.arange(0, 30), np.arange(30, 40), seed=3)
    a = train_head_bank(x, y, [job], cfg)
    x2 = x.clone()
    x2[40:] = x2[40:] * 100 + 7  # rows outside training and validation
    b = train_head_bank(x2, y, [job], cfg)
    torch.testing.assert_close(a.predict(x[:40]), b.predict(x[:40]))
    torch.testing.assert_close(a.bank.shift[0], x[:30].mean(0))
