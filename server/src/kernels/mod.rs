//! Compute kernels for the native CPU encoder, in plain Rust (AVX-512
//! intrinsics only in the matrix-multiplication micro-kernel): no framework
//! between the model and the arithmetic, so that each op is fused where it
//! saves a pass over memory.
//!
//! - [`isa`]: which vector instructions the CPU has.
//! - [`gemm`]: `C = A·B` with packed weights and fused epilogues.
//! - [`elementwise`]: GELU, softmax and LayerNorm in one pass each.
//! - [`attention`]: multi-head self-attention over unpadded inputs.

pub mod attention;
pub mod elementwise;
pub mod gemm;
pub mod isa;
