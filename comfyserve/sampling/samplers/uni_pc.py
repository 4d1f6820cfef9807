"""UniPC (Zhao et al. 2023, arXiv:2302.04867): multistep predictor-corrector in data prediction,
B(h) = h ("bh1") or e^h - 1 ("bh2"), order min(3, steps - 1), lower orders at the end.

As ComfyUI runs it: the "time" variable is sigma itself, the VP quantities come from
alpha = 1 / sqrt(1 + sigma^2); the input noise is moved to VP space (divided by sqrt(1 + sigma_0^2))
and a final sigma of 0 is replaced by 0.001 (the result is divided by alpha(0.001))."""

from __future__ import annotations

import torch


class _SigmaVP:
    """VP marginals as functions of sigma."""

    @staticmethod
    def log_alpha(sigma):
        return 0.5 * torch.log(1 / ((sigma * sigma) + 1))

    def alpha(self, sigma):
        return torch.exp(self.log_alpha(sigma))

    def std(self, sigma):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(sigma)))

    def lam(self, sigma):
        log_alpha = self.log_alpha(sigma)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _expand(v: torch.Tensor, dims: int) -> torch.Tensor:
    return v[(...,) + (None,) * (dims - 1)]


class _UniPC:
    def __init__(self, model, extra_args: dict, variant: str):
        self.model = model
        self.extra_args = extra_args
        self.variant = variant
        self.ns = _SigmaVP()

    def eps(self, x, sigma):
        """Noise prediction at VP-space x: the denoiser works on x * sqrt(1 + sigma^2)."""
        if sigma.reshape((-1,)).shape[0] == 1:
            sigma = sigma.expand(x.shape[0])
        s = sigma.view(sigma.shape[:1] + (1,) * (x.ndim - 1))
        x_ve = x * ((s**2 + 1.0) ** 0.5)
        return (x_ve - self.model(x_ve, sigma, **self.extra_args)) / s

    def data_prediction(self, x, sigma):
        noise = self.eps(x, sigma)
        dims = x.dim()
        alpha_t, sigma_t = self.ns.alpha(sigma), self.ns.std(sigma)
        return (x - _expand(sigma_t, dims) * noise) / _expand(alpha_t, dims)

    def update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        """One multistep UniPC-B(h) step from t_prev_list[-1] to t (data prediction)."""
        ns = self.ns
        if len(t.shape) == 0:
            t = t.view(-1)
        assert order <= len(model_prev_list)
        dims = x.dim()
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = ns.lam(t_prev_0)
        lambda_t = ns.lam(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = ns.std(t_prev_0), ns.std(t)
        alpha_t = torch.exp(ns.log_alpha(t))
        h = lambda_t - lambda_prev_0

        rks = []
        D1s = []
        for i in range(1, order):
            t_prev_i = t_prev_list[-(i + 1)]
            model_prev_i = model_prev_list[-(i + 1)]
            rk = ((ns.lam(t_prev_i) - lambda_prev_0) / h)[0]
            rks.append(rk)
            D1s.append((model_prev_i - model_prev_0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)

        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        if self.variant == "bh1":
            B_h = hh
        elif self.variant == "bh2":
            B_h = torch.expm1(hh)
        else:
            raise NotImplementedError(self.variant)
        R = []
        b = []
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        R = torch.stack(R)
        b = torch.tensor(b, device=x.device)

        use_predictor = len(D1s) > 0
        if use_predictor:
            D1s = torch.stack(D1s, dim=1)
            rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        else:
            D1s = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(R, b)

        x_t_ = _expand(sigma_t / sigma_prev_0, dims) * x - _expand(alpha_t * h_phi_1, dims) * model_prev_0
        pred_res = torch.einsum("k,bk...->b...", rhos_p, D1s) if use_predictor else 0
        x_t = x_t_ - _expand(alpha_t * B_h, dims) * pred_res
        model_t = None
        if use_corrector:
            model_t = self.data_prediction(x_t, t)
            corr_res = torch.einsum("k,bk...->b...", rhos_c[:-1], D1s) if D1s is not None else 0
            D1_t = model_t - model_prev_0
            x_t = x_t_ - _expand(alpha_t * B_h, dims) * (corr_res + rhos_c[-1] * D1_t)
        return x_t, model_t

    def sample(self, x, timesteps, order, callback=None):
        steps = len(timesteps) - 1
        assert steps >= order
        model_prev_list: list[torch.Tensor] = []
        t_prev_list: list[torch.Tensor] = []
        for step_index in range(steps):
            if step_index == 0:
                vec_t = timesteps[0].expand(x.shape[0])
                model_prev_list = [self.data_prediction(x, vec_t)]
                t_prev_list = [vec_t]
            elif step_index < order:
                vec_t = timesteps[step_index].expand(x.shape[0])
                x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, step_index, use_corrector=True)
                if model_x is None:
                    model_x = self.data_prediction(x, vec_t)
                model_prev_list.append(model_x)
                t_prev_list.append(vec_t)
            else:
                last = step_index + (1 if step_index == steps - 1 else 0)
                for step in range(step_index, last + 1):
                    vec_t = timesteps[step].expand(x.shape[0])
                    step_order = min(order, steps + 1 - step)
                    use_corrector = step != steps
                    x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=use_corrector)
                    for i in range(order - 1):
                        t_prev_list[i] = t_prev_list[i + 1]
                        model_prev_list[i] = model_prev_list[i + 1]
                    t_prev_list[-1] = vec_t
                    if step < steps:
                        if model_x is None:
                            model_x = self.data_prediction(x, vec_t)
                        model_prev_list[-1] = model_x
            if callback is not None:
                callback({"x": x, "i": step_index, "denoised": model_prev_list[-1]})
        return x


@torch.no_grad()
def sample_uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=False, variant="bh1"):
    """KSampler's `uni_pc` (bh1).  `sigmas` is not modified (ComfyUI writes the 0.001 into it)."""
    extra_args = {} if extra_args is None else extra_args
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    ns = _SigmaVP()
    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    order = min(3, len(timesteps) - 2)
    x = _UniPC(model, extra_args, variant).sample(x, timesteps, order, callback=callback)
    x /= ns.alpha(timesteps[-1])
    return x


@torch.no_grad()
def sample_uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=False):
    """KSampler's `uni_pc_bh2`."""
    return sample_uni_pc(model, x, sigmas, extra_args, callback, disable, variant="bh2")
