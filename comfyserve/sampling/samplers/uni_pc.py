"""UniPC (Zhao et al. 2023, arXiv:2302.04867): a multistep predictor-corrector in data prediction
with B(h) = h ("bh1") or e^h - 1 ("bh2"), of order min(3, steps - 1), the first steps and the last
ones at lower orders.

ComfyUI runs it with sigma itself as the time variable and the VP quantities derived from it,
alpha = 1 / sqrt(1 + sigma^2): the start is moved into VP space (divided by sqrt(1 + sigma_0^2)), a
final sigma of 0 becomes 0.001, and the result is divided by alpha(0.001)."""

from __future__ import annotations

import torch

from ._history import History
from ._run import SamplerRun
from ._steps import append_dims

# -- the VP marginals as functions of sigma -------------------------------------------------------


def _vp_log_alpha(sigma):
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _vp_alpha(sigma):
    return torch.exp(_vp_log_alpha(sigma))


def _vp_std(sigma):
    return torch.sqrt(1.0 - torch.exp(2.0 * _vp_log_alpha(sigma)))


def _vp_lambda(sigma):
    """log(alpha / std), the half-log-SNR of the VP view."""
    log_alpha = _vp_log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _bh_system(ratios, hh, order: int, variant: str):
    """UniPC's order conditions R rho = b for the nodes at relative log-SNR positions `ratios`
    (the last one 1); returns (R, b, h phi_1(h), B(h)) for hh = -h."""
    if variant == "bh1":
        b_h = hh
    elif variant == "bh2":
        b_h = torch.expm1(hh)
    else:
        raise NotImplementedError(f"UniPC variant {variant!r}")
    h_phi_1 = torch.expm1(hh)
    phi = h_phi_1 / hh - 1  # h phi_(k+1)(h) / h^k, starting at k = 1
    factorial = 1
    rows, rhs = [], []
    for k in range(1, order + 1):
        rows.append(torch.pow(ratios, k - 1))
        rhs.append(phi * factorial / b_h)
        factorial *= k + 1
        phi = phi / hh - 1 / factorial
    return torch.stack(rows), torch.tensor(rhs, device=ratios.device), h_phi_1, b_h


class _UniPC:
    """The solver in VP space: `predict` is the data prediction at VP-space x, `step` one update."""

    def __init__(self, run: SamplerRun, variant: str):
        self.run = run
        self.variant = variant

    def predict(self, x, sigma):
        """x0 from the denoiser, which works on the VE-space x * sqrt(1 + sigma^2)."""
        if sigma.reshape((-1,)).shape[0] == 1:
            sigma = sigma.expand(x.shape[0])
        per_sample = sigma.view(sigma.shape[:1] + (1,) * (x.ndim - 1))
        x_ve = x * ((per_sample**2 + 1.0) ** 0.5)
        eps = (x_ve - self.run.model(x_ve, sigma, **self.run.extra_args)) / per_sample
        return (x - append_dims(_vp_std(sigma), x.dim()) * eps) / append_dims(_vp_alpha(sigma), x.dim())

    def step(self, x, history: History, t, order: int, correct: bool):
        """One UniPC-B(h) update from the newest history entry to time t using `order` entries;
        returns (x_t, the prediction at x_t or None when not correcting)."""
        dims = x.dim()
        t_prev, model_prev = history.back(1)
        lam_prev = _vp_lambda(t_prev)
        h = _vp_lambda(t) - lam_prev
        ratios, differences = [], []
        for k in range(2, order + 1):
            t_k, model_k = history.back(k)
            ratio = ((_vp_lambda(t_k) - lam_prev) / h)[0]
            ratios.append(ratio)
            differences.append((model_k - model_prev) / ratio)
        R, b, h_phi_1, b_h = _bh_system(torch.tensor(ratios + [1.0], device=x.device), -h[0], order, self.variant)
        alpha_t = torch.exp(_vp_log_alpha(t))
        correction_scale = append_dims(alpha_t * b_h, dims)
        base = append_dims(_vp_std(t) / _vp_std(t_prev), dims) * x - append_dims(alpha_t * h_phi_1, dims) * model_prev

        stacked = torch.stack(differences, dim=1) if differences else None
        if stacked is None:
            predicted_term = 0
        else:
            rho_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            predicted_term = torch.einsum("k,bk...->b...", rho_p, stacked)
        x_t = base - correction_scale * predicted_term
        if not correct:
            return x_t, None
        rho_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(R, b)
        model_t = self.predict(x_t, t)
        known_term = torch.einsum("k,bk...->b...", rho_c[:-1], stacked) if stacked is not None else 0
        return base - correction_scale * (known_term + rho_c[-1] * (model_t - model_prev)), model_t

    def sample(self, x, timesteps, order: int, callback=None):
        """Steps 1 .. order - 1 warm up at orders 1, 2, ...; every update but the last is corrected
        (one extra evaluation, whose prediction the next steps reuse).  The last two updates share
        the last progress report."""
        steps = len(timesteps) - 1
        history: History = History(max(order, 1))
        start = timesteps[0].expand(x.shape[0])
        history.push((start, self.predict(x, start)))
        self._report(callback, 0, x, history)
        if order < 1:  # a single step: ComfyUI evaluates the start and returns it unchanged
            return x
        for k in range(1, steps + 1):
            t = timesteps[k].expand(x.shape[0])
            step_order = k if k < order else min(order, steps + 1 - k)
            x, model_x = self.step(x, history, t, step_order, correct=k < steps)
            if k < steps:
                history.push((t, model_x))
            if k != steps - 1:
                self._report(callback, min(k, steps - 1), x, history)
        return x

    @staticmethod
    def _report(callback, i, x, history: History):
        if callback is not None:
            callback({"x": x, "i": i, "denoised": history.back(1)[1]})


@torch.no_grad()
def sample_uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=False, variant="bh1"):
    """KSampler's `uni_pc` (bh1).  `sigmas` is left as it is (ComfyUI writes the 0.001 into it)."""
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    solver = _UniPC(SamplerRun(model, x, extra_args), variant)
    x = solver.sample(x, timesteps, min(3, len(timesteps) - 2), callback=callback)
    x /= _vp_alpha(timesteps[-1])
    return x


@torch.no_grad()
def sample_uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=False):
    """KSampler's `uni_pc_bh2`."""
    return sample_uni_pc(model, x, sigmas, extra_args, callback, disable, variant="bh2")
