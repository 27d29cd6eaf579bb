//! DDPM schedule, DDPM/DDIM steps and the sampler loop against the official goldens.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, get, load_io, reference};
use idflow_models::io::checkpoint::{load_model, LoadOptions, StateDict};
use idflow_models::sampler::{
    batch_noise, ddim_timesteps, ddpm_adds_noise, sample, CpuStepMath, DdimCoefficients, DdpmCoefficients, NoiseKey, SamplerConfig,
    SamplerKind, StepMath, PRIOR_STEP,
};
use idflow_models::schedule::{DdpmSchedule, SCHEDULE_KEYS};
use idflow_models::traits::Denoiser;
use idflow_models::unet::ConditionalUNet;

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn tiny_unet(dict: &StateDict) -> ConditionalUNet {
    let cfg = idflow_models::io::presets::reference_tiny_unet();
    load_model(dict, &LoadOptions::default(), |vb| ConditionalUNet::new(&cfg, vb)).unwrap().0
}

#[test]
fn schedule_from_checkpoint_and_recomputed_match_the_reference() {
    let io = load_io("ddpm_schedule_T1000.safetensors");
    let dict = StateDict::from_torch_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    let from_ckpt = DdpmSchedule::from_state_dict(&dict).unwrap().expect("checkpoint has the buffers");
    let computed = DdpmSchedule::linear(1000);
    for (key, (a, b)) in SCHEDULE_KEYS.iter().zip(from_ckpt.buffers().iter().zip(computed.buffers())) {
        let reference = vec_f32(get(&io, key));
        assert_eq!(a.as_slice(), reference.as_slice(), "{key}: checkpoint buffer differs from the reference");
        // recomputing may differ from PyTorch's vectorised kernels by an ulp (1.2e-7 near 1.0);
        // that is why the checkpoint's buffers are preferred
        let d = b.iter().zip(&reference).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0f32, f32::max);
        eprintln!("{key}: recomputed max rel diff {d:e}");
        assert!(d <= 2.0 * f32::EPSILON, "{key}: recomputed differs by {d:e}");
    }
}

#[test]
fn ddpm_step_matches_official_given_eps_and_with_the_unet() {
    let io = load_io("ddpm_steps.safetensors");
    let dict = StateDict::from_torch_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    let schedule = DdpmSchedule::from_state_dict(&dict).unwrap().unwrap();
    let unet = tiny_unet(&dict);
    let ts: Vec<i64> = get(&io, "t").to_vec1().unwrap();
    let context = get(&io, "context");
    for (case, &t) in ts.iter().enumerate() {
        let t = t as usize;
        let x_t = get(&io, "x_t").get(case).unwrap();
        let eps_ref = get(&io, "eps").get(case).unwrap();
        let z = get(&io, "z").get(case).unwrap();
        let x_prev_ref = get(&io, "x_prev").get(case).unwrap();
        let zv = ddpm_adds_noise(t).then(|| vec_f32(&z));
        if !ddpm_adds_noise(t) {
            assert!(vec_f32(&z).iter().all(|&v| v == 0.0), "t={t}: official z is zero");
        }
        let mut out = vec![0f32; x_t.elem_count()];
        let c = DdpmCoefficients::at(&schedule, t);
        CpuStepMath.ddpm_step(&vec_f32(&x_t), &vec_f32(&eps_ref), zv.as_deref(), c, &mut out);
        let out_t = Tensor::from_vec(out, x_t.shape(), &Device::Cpu).unwrap();
        assert_close(&format!("x_prev from eps, t={t}"), &out_t, &x_prev_ref, 1e-5);

        let tt = Tensor::new(&[t as i64, t as i64], &Device::Cpu).unwrap();
        let eps = unet.eps(&x_t, &tt, Some(context)).unwrap();
        assert_close(&format!("eps, t={t}"), &eps, &eps_ref, 1e-4);
        let mut out = vec![0f32; x_t.elem_count()];
        CpuStepMath.ddpm_step(&vec_f32(&x_t), &vec_f32(&eps), zv.as_deref(), c, &mut out);
        let out_t = Tensor::from_vec(out, x_t.shape(), &Device::Cpu).unwrap();
        assert_close(&format!("x_prev with UNet, t={t}"), &out_t, &x_prev_ref, 1e-4);
    }
}

#[test]
fn ddim_steps_match_standard_and_admis_goldens() {
    let io = load_io("ddim_steps.safetensors");
    let schedule = DdpmSchedule::linear(1000);
    let t: Vec<i64> = get(&io, "t").to_vec1().unwrap();
    let t_prev: Vec<i64> = get(&io, "t_prev").to_vec1().unwrap();
    let sig0: Vec<f64> = get(&io, "sigma_eta0").to_vec1().unwrap();
    let sig1: Vec<f64> = get(&io, "sigma_eta1").to_vec1().unwrap();
    // the fixture's cases are exactly what a 50-step DDIM visits
    let visits = ddim_timesteps(1000, 50);
    assert_eq!(visits.len(), 50);
    for case in 0..t.len() {
        let tc = t[case] as usize;
        let tp = (t_prev[case] >= 0).then_some(t_prev[case] as usize);
        assert!(visits.contains(&(tc, tp)), "({tc}, {tp:?}) is not a DDIM-50 step");
        let x_t = vec_f32(&get(&io, "x_t").get(case).unwrap());
        let eps = vec_f32(&get(&io, "eps").get(case).unwrap());
        let z = vec_f32(&get(&io, "z").get(case).unwrap());
        let shape = get(&io, "x_t").get(case).unwrap().shape().clone();
        for (eta, sig, std_key, admis_key) in
            [(0.0, &sig0, "x_prev_eta0", "admis_x_prev_eta0"), (1.0, &sig1, "x_prev_eta1", "admis_x_prev_eta1")]
        {
            let c = DdimCoefficients::standard(&schedule, tc, tp, eta);
            assert!((c.sigma - sig[case]).abs() < 1e-7, "sigma eta={eta} case {case}");
            let mut out = vec![0f32; x_t.len()];
            let mut x0 = vec![0f32; x_t.len()];
            CpuStepMath.ddim_step(&x_t, &eps, Some(&z), c, &mut out, Some(&mut x0));
            let out = Tensor::from_vec(out, &shape, &Device::Cpu).unwrap();
            assert_close(&format!("{std_key} case {case}"), &out, &get(&io, std_key).get(case).unwrap(), 1e-5);
            let x0 = Tensor::from_vec(x0, &shape, &Device::Cpu).unwrap();
            assert_close(&format!("pred_x0 case {case}"), &x0, &get(&io, "pred_x0").get(case).unwrap(), 1e-5);

            let c = DdimCoefficients::admis(&schedule, tc, tp, eta);
            let mut out = vec![0f32; x_t.len()];
            CpuStepMath.ddim_step(&x_t, &eps, (eta > 0.0).then_some(z.as_slice()), c, &mut out, None);
            let out = Tensor::from_vec(out, &shape, &Device::Cpu).unwrap();
            assert_close(&format!("{admis_key} case {case}"), &out, &get(&io, admis_key).get(case).unwrap(), 1e-4);
        }
    }
}

#[test]
fn guidance_formula() {
    let mut out = [0f32; 2];
    CpuStepMath.guidance(&[1.0, -2.0], &[3.0, 4.0], 1.5, &mut out);
    assert_eq!(out, [-0.5 * 1.0 + 1.5 * 3.0, -0.5 * -2.0 + 1.5 * 4.0]);
}

#[test]
fn batched_guidance_equals_two_passes_and_noise_is_keyed_per_sample() {
    let dict = StateDict::from_torch_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    let unet = tiny_unet(&dict);
    let io = load_io("idiff_unet_tiny_io.safetensors");
    let (x, t, context) = (get(&io, "x"), get(&io, "t"), get(&io, "context"));
    let w = 2.5;
    let batched = unet.eps_guided(x, t, context, w).unwrap();
    let cond = unet.eps(x, t, Some(context)).unwrap();
    let uncond = unet.eps(x, t, None).unwrap();
    let two_pass = ((uncond * (1.0 - w)).unwrap() + (cond * w).unwrap()).unwrap();
    assert_close("batched CFG", &batched, &two_pass, 1e-5);

    // a sample's noise does not depend on which batch it is in
    let k = |identity, sample| NoiseKey { seed: 7, identity, sample };
    let a = batch_noise(&[k(1, 0), k(2, 3)], 500, &[3, 4, 4], &Device::Cpu).unwrap();
    let b = batch_noise(&[k(2, 3)], 500, &[3, 4, 4], &Device::Cpu).unwrap();
    assert_close("keyed noise", &a.get(1).unwrap(), &b.get(0).unwrap(), 0.0);
    let c = batch_noise(&[k(2, 3)], 499, &[3, 4, 4], &Device::Cpu).unwrap();
    assert!(common::max_abs_diff(&b, &c) > 0.1, "different steps draw different noise");
}

#[test]
fn short_ddim_sampling_is_batch_independent() {
    let dict = StateDict::from_torch_file(reference("idiff_unet_tiny.ckpt")).unwrap();
    let unet = tiny_unet(&dict);
    let schedule = DdpmSchedule::from_state_dict(&dict).unwrap().unwrap();
    let io = load_io("idiff_unet_tiny_io.safetensors");
    let context = get(&io, "context");
    let keys: Vec<NoiseKey> = (0..3).map(|i| NoiseKey { seed: 11, identity: i, sample: 0 }).collect();
    let cfg = SamplerConfig { kind: SamplerKind::Ddim { steps: 4, eta: 1.0, admis_compat: false }, guidance_scale: Some(2.0) };
    let x_t = batch_noise(&keys, PRIOR_STEP, &[3, 16, 16], &Device::Cpu).unwrap();
    let all = sample(&unet, &schedule, &cfg, &CpuStepMath, &x_t, Some(context), &keys).unwrap();
    let x_1 = batch_noise(&keys[1..2], PRIOR_STEP, &[3, 16, 16], &Device::Cpu).unwrap();
    let one = sample(&unet, &schedule, &cfg, &CpuStepMath, &x_1, Some(&context.narrow(0, 1, 1).unwrap()), &keys[1..2]).unwrap();
    // only floating-point batching effects (GEMM blocking) remain; the noise is identical
    assert_close("sample 1 alone vs in a batch", &one.get(0).unwrap(), &all.get(1).unwrap(), 1e-3);
    assert!(all.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
}
