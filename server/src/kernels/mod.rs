//! Compute kernels for the native CPU encoder, in plain Rust (SIMD
//! intrinsics only in the matrix-multiplication micro-kernels): no framework
//! between the model and the arithmetic, so that each op is fused where it
//! saves a pass over memory.
//!
//! - [`isa`]: which vector instructions the CPU has.
//! - [`gemm`]: `C = A·B` with packed weights and fused epilogues.
//! - [`elementwise`]: GELU, softmax and LayerNorm in one pass each.
//! - [`decoder`]: RMSNorm, SwiGLU, RoPE and cached causal attention for
//!   decoder-only models.
//! - [`attention`]: multi-head self-attention over unpadded inputs.
//! - [`quant`]: matrix products with GGML-quantized weights (`Q4_0`,
//!   `Q4_1`, `Q8_0`) for GGUF models.

pub mod attention;
pub mod decoder;
pub mod elementwise;
pub mod gemm;
pub mod isa;
pub mod quant;

/// From this many values on, an elementwise pass over rows (quantizing
/// activations, norms, SwiGLU, residual additions) runs on every thread: a
/// prefill's, and a decode
/// step's from about 16 sequences on (16 rows of 576; at 32,768, where it
/// first was, those stayed on one thread while the other waited, and a
/// 16-row decode pass took 4 % longer); below, the rows of a few sequences
/// stay on one (a fork would cost more than the pass).
pub(crate) const PARALLEL_VALUES: usize = 1 << 13;

/// The rows per chunk when a pass over `rows` rows of `width` values runs
/// on every thread ([`PARALLEL_VALUES`] values or more): chunks of about
/// `PARALLEL_VALUES` values, as many as a multiple of the threads (16 rows
/// of 576 in 2 chunks of 8 on two threads, not 15 and 1); `None` below it.
pub(crate) fn rows_per_chunk(rows: usize, width: usize) -> Option<usize> {
    let values = rows * width;
    if values < PARALLEL_VALUES {
        return None;
    }
    let threads = rayon::current_num_threads().max(1);
    let chunks = values.div_ceil(PARALLEL_VALUES).next_multiple_of(threads);
    Some(rows.div_ceil(chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_split_evenly_over_the_threads_from_the_threshold_on() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool of 2 threads");
        pool.install(|| {
            // A few decoding rows stay on one thread.
            assert_eq!(rows_per_chunk(4, 576), None);
            assert_eq!(rows_per_chunk(1, PARALLEL_VALUES - 1), None);
            // 16 rows of 576 (9216 values): 2 chunks of 8, not 15 and 1.
            assert_eq!(rows_per_chunk(16, 576), Some(8));
            // 16 rows of 1536: 3 chunks' worth, rounded up to 4 of 4 rows.
            assert_eq!(rows_per_chunk(16, 1536), Some(4));
            // A prefill of 256 rows of 576: 18 chunks of 15 rows or fewer.
            assert_eq!(rows_per_chunk(256, 576), Some(15));
        });
    }
}
