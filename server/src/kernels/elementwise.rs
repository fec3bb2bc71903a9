//! One-pass element-wise kernels: exact-erf GELU, scaled softmax, LayerNorm.
//!
//! Each is plain, branch-free Rust over lanes of 16 floats that the compiler
//! vectorizes; [`multiversion!`] compiles it for the widest registers the CPU
//! has. `exp` and `erf` are polynomial approximations accurate to a few
//! units in the last place of f32, so results match PyTorch's to ~1e-7.

use super::isa::{Isa, multiversion};

/// Lanes per step; sixteen f32 fill one AVX-512 register.
pub(crate) const LANES: usize = 16;

/// `e^x` for f32 (Cephes' `expf`: 2ⁿ·e^r with |r| ≤ ln2/2, degree-6
/// polynomial). Inputs below −80 give e^−80 ≈ 1.8e−35 instead of less: no
/// result, nor its product with a softmax normalizer (≥ 1/512), is ever
/// subnormal, and subnormal arithmetic costs ~100× (a microcode assist).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let x = x.clamp(-80.0, 88.0);
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p: f32 = 1.987_569_1e-4;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 0.166_666_65);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r + 1.0);
    // 2ⁿ from the bits: adding 2²³ leaves the integer n + 127 in the low
    // mantissa bits (a cast would saturate, which does not vectorize).
    let biased = (n + (127.0 + 8_388_608.0))
        .to_bits()
        .wrapping_sub(0x4b00_0000);
    y * f32::from_bits(biased << 23)
}

/// `erf(x)` (Abramowitz & Stegun 7.1.26: absolute error < 1.5e-7, < 5e-7
/// after f32 rounding).
#[inline(always)]
fn erf(x: f32) -> f32 {
    // erf(4) rounds to 1 in f32; clamping keeps e^(−a²) far from subnormal.
    let a = x.abs().min(4.0);
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let mut p: f32 = 1.061_405_4;
    p = p.mul_add(t, -1.453_152);
    p = p.mul_add(t, 1.421_413_8);
    p = p.mul_add(t, -0.284_496_72);
    p = p.mul_add(t, 0.254_829_6);
    let y = 1.0 - p * t * exp(-a * a);
    y.copysign(x)
}

multiversion! {
    /// GELU as BERT uses it (`hidden_act: gelu`): `x · Φ(x)` with the exact
    /// normal CDF, in place.
    pub(crate) fn gelu_in_place(x: &mut [f32]) {
        map_in_place(x, |v| 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)));
    }
}

/// `x[i] = f(x[i])`, in whole lanes: a fixed-size inner loop the compiler
/// turns into one vector operation, so short slices (a 32-wide tile row, a
/// 16-token softmax) are vectorized too, not left to a scalar remainder.
#[inline(always)]
pub(crate) fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        let lanes: &mut [f32; LANES] = chunk.try_into().expect("chunk of LANES");
        for v in lanes.iter_mut() {
            *v = f(*v);
        }
    }
    for v in chunks.into_remainder() {
        *v = f(*v);
    }
}

/// Largest element, with per-lane partial maxima so that it vectorizes.
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            *m = if *v > *m { *v } else { *m };
        }
    }
    rest.iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, v| if *v > m { *v } else { m })
}

/// Sum of `f(x)` over `x`, with per-lane partial sums so that it vectorizes.
#[inline(always)]
pub(crate) fn sum_of(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (s, v) in lanes.iter_mut().zip(chunk) {
            *s += f(*v);
        }
    }
    rest.iter().map(|v| f(*v)).sum::<f32>() + lanes.iter().sum::<f32>()
}

multiversion! {
    /// `softmax(scale · x)` over `x`, in place (attention scores with the
    /// 1/√d scale folded in).
    pub(crate) fn softmax_in_place(x: &mut [f32], scale: f32) {
        softmax_inline(x, scale);
    }
}

/// [`softmax_in_place`]'s body, for kernels that inline it into their own
/// instruction set (the decoder's attention).
#[inline(always)]
pub(crate) fn softmax_inline(x: &mut [f32], scale: f32) {
    let top = max(x);
    map_in_place(x, |v| exp((v - top) * scale));
    let inv = 1.0 / sum_of(x, |v| v);
    map_in_place(x, |v| v * inv);
}

multiversion! {
    /// LayerNorm of each `gamma.len()`-wide row of `x`, in place: mean and
    /// variance in two passes (as PyTorch, for accuracy), then
    /// `(x − mean) / √(var + eps) · gamma + beta`.
    pub(crate) fn layer_norm_in_place(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let width = gamma.len();
        for row in x.chunks_exact_mut(width) {
            let mean = sum_of(row, |v| v) / width as f32;
            let var = sum_of(row, |v| (v - mean) * (v - mean)) / width as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = ((*v - mean) * inv).mul_add(*g, *b);
            }
        }
    }
}

/// [`gelu_in_place`] on the detected instruction set.
pub fn gelu(x: &mut [f32]) {
    gelu_in_place(Isa::detect(), x)
}

/// [`layer_norm_in_place`] on the detected instruction set.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    layer_norm_in_place(Isa::detect(), x, gamma, beta, eps)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// erf in f64: Taylor series below 3, continued fraction of erfc above.
    pub(crate) fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let y = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        y.copysign(x)
    }

    fn grid() -> impl Iterator<Item = f32> {
        (-20000..=20000).map(|i| i as f32 / 2000.0)
    }

    #[test]
    fn exp_is_accurate_to_a_few_ulp() {
        for x in grid().map(|v| v * 8.0).filter(|x| *x >= -80.0) {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn erf_is_accurate() {
        assert!((erf64(1.0) - 0.842_700_792_949_714_9).abs() < 1e-15);
        assert!((erf64(3.5) - 0.999_999_256_901_627_7).abs() < 1e-13);
        for x in grid() {
            let (got, want) = (erf(x) as f64, erf64(x as f64));
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn every_isa_computes_the_same_gelu_softmax_and_layer_norm() {
        let base: Vec<f32> = grid().step_by(97).collect();
        for isa in Isa::all_supported() {
            let mut g = base.clone();
            gelu_in_place(isa, &mut g);
            for (x, y) in base.iter().zip(&g) {
                let want = 0.5 * *x as f64 * (1.0 + erf64(*x as f64 / std::f64::consts::SQRT_2));
                assert!(
                    (*y as f64 - want).abs() < 3e-6 * (1.0 + want.abs()),
                    "{isa:?} gelu({x}) = {y}"
                );
            }

            let mut s = base[..37].to_vec();
            softmax_in_place(isa, &mut s, 0.5);
            let top = base[..37].iter().fold(f64::MIN, |m, v| m.max(*v as f64));
            let total: f64 = base[..37]
                .iter()
                .map(|v| ((*v as f64 - top) * 0.5).exp())
                .sum();
            for (x, y) in base[..37].iter().zip(&s) {
                let want = ((*x as f64 - top) * 0.5).exp() / total;
                assert!((*y as f64 - want).abs() < 1e-6, "{isa:?} softmax");
            }

            let width = 40;
            let mut l = base[..2 * width].to_vec();
            let gamma: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 / 10.0).collect();
            let beta: Vec<f32> = (0..width).map(|i| i as f32 / 7.0).collect();
            layer_norm_in_place(isa, &mut l, &gamma, &beta, 1e-12);
            for (row_in, row_out) in base[..2 * width].chunks(width).zip(l.chunks(width)) {
                let mean = row_in.iter().map(|v| *v as f64).sum::<f64>() / width as f64;
                let var = row_in
                    .iter()
                    .map(|v| (*v as f64 - mean).powi(2))
                    .sum::<f64>()
                    / width as f64;
                for (j, (x, y)) in row_in.iter().zip(row_out).enumerate() {
                    let want = (*x as f64 - mean) / (var + 1e-12).sqrt() * gamma[j] as f64
                        + beta[j] as f64;
                    assert!((*y as f64 - want).abs() < 1e-5, "{isa:?} layer norm");
                }
            }
        }
    }

    #[test]
    fn softmax_of_huge_and_tiny_scores_stays_finite() {
        let mut s = vec![1e30, -1e30, 0.0, 1e30];
        softmax_in_place(Isa::detect(), &mut s, 1.0);
        assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
        assert_eq!((s[0], s[3]), (0.5, 0.5));
        assert!(s[1] < 1e-30 && s[2] < 1e-30, "{s:?}");
    }
}
