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
/// activations, SwiGLU) runs on every thread: a prefill's, and a decode
/// step's from about 16 sequences on (16 rows of 576; at 32,768, where it
/// first was, those stayed on one thread while the other waited, and a
/// 16-row decode pass took 4 % longer); below, the rows of a few sequences
/// stay on one (a fork would cost more than the pass).
pub(crate) const PARALLEL_VALUES: usize = 1 << 13;
