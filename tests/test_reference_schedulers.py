"""The diffusion schedules and update rules of `ualm.diffusion` against an independent, maintained
implementation of the same rules: diffusers' DDPMScheduler and DDIMScheduler (the `test` extra).

Index conventions: ualm's step t = 1 … T (t = 0 is the data, γ_0 = 1) is diffusers' timestep
t − 1 = 0 … T − 1, and ualm's last jump to t = 0 is diffusers' step to "timestep −1", where
`set_alpha_to_one` makes ᾱ = 1.
"""
import pytest
import torch

from ualm import diffusion as D

diffusers = pytest.importorskip("diffusers")

T = 100
SCHEDULES = {"paper": dict(beta_schedule="linear", beta_start=1e-4, beta_end=1e-2),
             "cosine": dict(beta_schedule="squaredcos_cap_v2")}


def reference(kind: str, name: str):
    cls = {"ddpm": diffusers.DDPMScheduler, "ddim": diffusers.DDIMScheduler}[kind]
    # DDIM's jumps start at T (diffusers' "trailing" spacing, Lin et al. 2024), not at T − T/steps
    extra = dict(variance_type="fixed_large") if kind == "ddpm" else dict(set_alpha_to_one=True,
                                                                          timestep_spacing="trailing")
    return cls(num_train_timesteps=T, clip_sample=False, prediction_type="epsilon", **SCHEDULES[name], **extra)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_match(name):
    ours = D.schedule(name)
    ref = reference("ddpm", name)
    assert torch.allclose(ours.betas[1:], ref.betas.double(), rtol=1e-6, atol=1e-9)
    assert torch.allclose(ours.table("gammas")[1:], ref.alphas_cumprod.double(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("t", [1, 2, 37, 100])
def test_ancestral_step_is_ddpm_with_variance_beta(name, t):
    """Eq. 10 with σ_t² = β_t is DDPM's step with the "fixed_large" variance."""
    sched, ref = D.schedule(name), reference("ddpm", name)
    g = torch.Generator().manual_seed(t)
    y_t, eps = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    # diffusers draws its noise with the generator it is given: draw the same noise for ours
    noise = torch.randn(y_t.shape, generator=torch.Generator().manual_seed(99))
    expected = ref.step(eps, t - 1, y_t, generator=torch.Generator().manual_seed(99)).prev_sample
    got = D.ancestral_step(sched, y_t.double(), t, eps.double(), noise.double())
    assert torch.allclose(got, expected.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("steps", [1, 10, 20])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_path_and_steps_match(name, steps, eta):
    """DDIM's jumps (evenly spaced, T divisible by the steps) and each update, with η = 0
    (deterministic) and η = 1, for an ε-predicting and a v-predicting network."""
    sched, ref = D.schedule(name), reference("ddim", name)
    ref.set_timesteps(steps)
    path = D.step_path(T, "ddim", steps)
    assert [t - 1 for t in path[:-1]] == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(steps)
    y = torch.randn(2, 1, 8, 8, generator=g)
    for t, s in zip(path[:-1], path[1:]):
        out = torch.randn(y.shape, generator=g)  # the network's output at this step
        noise = torch.randn(y.shape, generator=g)
        expected = ref.step(out, t - 1, y, eta=eta, variance_noise=noise).prev_sample
        eps = out.double()
        y0 = sched.y0_from_eps(y.double(), t, eps)
        got = D.ddim_step(sched, y.double(), t, s, eps, y0, eta, noise.double())
        assert torch.allclose(got, expected.double(), rtol=1e-4, atol=1e-4), (t, s)
        # the same step from a v-prediction: ualm turns v into (ε, y0), diffusers does its own
        v_ref = diffusers.DDIMScheduler(num_train_timesteps=T, clip_sample=False, set_alpha_to_one=True,
                                        timestep_spacing="trailing", prediction_type="v_prediction",
                                        **SCHEDULES[name])
        v_ref.set_timesteps(steps)
        expected_v = v_ref.step(out, t - 1, y, eta=eta, variance_noise=noise).prev_sample
        eps_v, y0_v = sched.from_v(y.double(), t, out.double())
        got_v = D.ddim_step(sched, y.double(), t, s, eps_v, y0_v, eta, noise.double())
        assert torch.allclose(got_v, expected_v.double(), rtol=1e-4, atol=1e-4), (t, s)
        y = expected
