//! Multi-head self-attention over inputs laid end to end (no padding, so no
//! mask): one task per input, heads one after another, each head
//! `softmax(Q·Kᵀ / √d)·V` with K and V packed as GEMM operands.

use rayon::prelude::*;

use super::elementwise::softmax_in_place;
use super::gemm::{Epilogue, Layout, MatRef, PackedB, Scratch, matmul};
use super::isa::Isa;

/// Per-thread buffers, kept across inputs and heads.
#[derive(Default)]
struct Buffers {
    keys: PackedB,
    values: PackedB,
    scores: Vec<f32>,
    gemm: Scratch,
}

/// Self-attention of every input. `qkv` is `[Σ lengths, 3·hidden]` (the
/// fused Q, K, V projections, heads side by side in each); the result goes to
/// `context`, `[Σ lengths, hidden]`, every element of it written.
pub fn attention(isa: Isa, qkv: &[f32], lengths: &[usize], heads: usize, context: &mut [f32]) {
    let total: usize = lengths.iter().sum();
    assert!(heads > 0 && total > 0, "attention needs heads and tokens");
    let h = context.len() / total;
    assert!(h.is_multiple_of(heads) && context.len() == total * h && qkv.len() == total * 3 * h);
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    // One task per input: its rows of `context` are its own.
    let mut tasks = Vec::with_capacity(lengths.len());
    let (mut rest, mut start) = (context, 0);
    for len in lengths {
        let (mine, tail) = rest.split_at_mut(len * h);
        tasks.push((start, *len, mine));
        rest = tail;
        start += len;
    }
    tasks
        .into_par_iter()
        .for_each_init(Buffers::default, |buf, (start, len, out)| {
            if len == 0 {
                return;
            }
            let rows = &qkv[start * 3 * h..][..len * 3 * h];
            let part = |offset: usize| MatRef {
                data: &rows[offset..],
                rows: len,
                cols: d,
                ld: 3 * h,
            };
            buf.scores.resize(len * len, 0.0);
            for head in 0..heads {
                buf.keys.pack_transposed(part(h + head * d));
                buf.values.pack(part(2 * h + head * d));
                let (scores, gemm) = (&mut buf.scores, &mut buf.gemm);
                matmul(
                    part(head * d),
                    &buf.keys,
                    scores,
                    len,
                    Epilogue::Store,
                    gemm,
                    Layout::InPlace,
                );
                for row in scores.chunks_exact_mut(len) {
                    softmax_in_place(isa, row, scale);
                }
                let probabilities = MatRef::dense(scores, len, len);
                let out = &mut out[head * d..];
                matmul(
                    probabilities,
                    &buf.values,
                    out,
                    h,
                    Epilogue::Store,
                    gemm,
                    Layout::InPlace,
                );
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention of one input in f64, the textbook way.
    fn naive(qkv: &[f32], len: usize, heads: usize, h: usize) -> Vec<f64> {
        let d = h / heads;
        let at = |t: usize, c: usize| qkv[t * 3 * h + c] as f64;
        let mut out = vec![0f64; len * h];
        for head in 0..heads {
            for i in 0..len {
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..d)
                            .map(|c| at(i, head * d + c) * at(j, h + head * d + c))
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let top = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - top).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..d {
                    out[i * h + head * d + c] = (0..len)
                        .map(|j| e[j] / sum * at(j, 2 * h + head * d + c))
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn inputs_of_different_lengths_attend_only_to_themselves() {
        let (heads, h) = (3, 96);
        let lengths = [5, 1, 40, 13];
        let total: usize = lengths.iter().sum();
        let qkv: Vec<f32> = (0..total * 3 * h)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0)
            .collect();
        let mut context = vec![f32::NAN; total * h];
        attention(Isa::detect(), &qkv, &lengths, heads, &mut context);
        let mut start = 0;
        for len in lengths {
            let want = naive(&qkv[start * 3 * h..][..len * 3 * h], len, heads, h);
            for (got, want) in context[start * h..][..len * h].iter().zip(want) {
                assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
            }
            start += len;
        }
    }
}
