//! Engines: what runs a transformer's forward pass, behind the small
//! [`Encoder`] trait (token ids in, token states out) so that more
//! architectures and engines plug in, and [`load`], the factory that picks
//! one for a folder and an [`Engine`].
//!
//! - [`native_bert`]: our own CPU kernels (the default, and the fast one);
//! - [`candle_bert`]: candle-transformers' BERT on any candle device (the
//!   GPU path with the `cuda` feature, and an independent implementation
//!   the tests compare the native one with).

pub mod candle_bert;
pub mod native_bert;

use candle_core::{DType, Device};

use crate::model::folder::ModelSpec;
use crate::{Error, Result};
use candle_bert::CandleBert;
use native_bert::NativeBert;

/// Turns token ids into token states.
pub trait Encoder: Send + Sync {
    /// Width of a token state.
    fn hidden_size(&self) -> usize;

    /// Token states of every input of `batch` (ids including special
    /// tokens), one input after another: `[Σ lengths, hidden]`, row-major.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<f32>>;
}

/// Which implementation runs the model.
#[derive(Clone, Debug)]
pub enum Engine {
    /// Our own kernels on the CPU, in f32.
    Native,
    /// candle-transformers on a candle device (CPU, or CUDA with the `cuda`
    /// feature), computing in the given precision.
    Candle(Device, DType),
}

impl Engine {
    /// Parses `cpu` (native kernels), `candle-cpu`, or `cuda` / `cuda:N`,
    /// and the precision: `auto` (f16 on a GPU, else f32), `f32`, `f16` or
    /// `bf16` (the last two on a candle device only).
    pub fn parse(device: &str, dtype: &str) -> Result<Engine> {
        let precision = match dtype {
            "auto" => None,
            "f32" => Some(DType::F32),
            "f16" => Some(DType::F16),
            "bf16" => Some(DType::BF16),
            other => {
                return Err(Error::BadConfig(format!(
                    "unknown dtype {other:?}: use auto, f32, f16 or bf16"
                )));
            }
        };
        match device {
            "cpu" => match precision {
                None | Some(DType::F32) => Ok(Engine::Native),
                Some(_) => Err(Error::BadConfig(format!(
                    "dtype {dtype} needs a candle device (cuda, cuda:N or candle-cpu); the native CPU kernels compute in f32"
                ))),
            },
            "candle-cpu" => Ok(Engine::Candle(Device::Cpu, precision.unwrap_or(DType::F32))),
            cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
                let ordinal = match cuda.strip_prefix("cuda:") {
                    Some(n) => n.parse::<usize>().map_err(|_| {
                        Error::BadModel(format!(
                            "device {cuda:?}: the GPU ordinal must be a number, e.g. cuda:0"
                        ))
                    })?,
                    None => 0,
                };
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::BadModel(format!(
                        "device {cuda:?}: this openmodel-server was built without the `cuda` feature (cargo build --features cuda)"
                    )));
                }
                let device = Device::new_cuda(ordinal).map_err(|e| {
                    Error::BadConfig(format!(
                        "device {cuda:?}: CUDA cannot open GPU {ordinal} ({e}); it needs a GPU and the NVIDIA driver (libcuda.so.1) on this machine (in Kubernetes: a GPU in the resources and the NVIDIA device plugin on the node)"
                    ))
                })?;
                Ok(Engine::Candle(device, precision.unwrap_or(DType::F16)))
            }
            other => Err(Error::BadModel(format!(
                "unknown device {other:?}: use cpu, cuda, cuda:N or candle-cpu"
            ))),
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Engine::Native => format!(
                "native CPU kernels ({})",
                crate::kernels::isa::Isa::detect().name()
            ),
            Engine::Candle(Device::Cpu, dtype) => format!("candle on the CPU ({dtype:?})"),
            Engine::Candle(d, dtype) => format!("candle on {d:?} ({dtype:?})"),
        }
    }
}

/// The encoder for the folder's architecture on `engine`: the factory the
/// tasks load their backbone from.
pub fn load(spec: &ModelSpec, engine: &Engine) -> Result<Box<dyn Encoder>> {
    if spec.model_type != "bert" {
        return Err(Error::BadModel(format!(
            "no encoder for model_type {:?} (supported: bert)",
            spec.model_type
        )));
    }
    Ok(match engine {
        Engine::Native => Box::new(NativeBert::load(spec)?),
        Engine::Candle(device, dtype) => Box::new(CandleBert::load(spec, device, *dtype)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_or_say_what_to_pass() {
        assert!(matches!(Engine::parse("cpu", "auto"), Ok(Engine::Native)));
        assert!(matches!(Engine::parse("cpu", "f32"), Ok(Engine::Native)));
        assert!(matches!(
            Engine::parse("candle-cpu", "auto"),
            Ok(Engine::Candle(Device::Cpu, DType::F32))
        ));
        assert!(matches!(
            Engine::parse("candle-cpu", "bf16"),
            Ok(Engine::Candle(Device::Cpu, DType::BF16))
        ));
        let err = Engine::parse("cpu", "f16").err().unwrap().to_string();
        assert!(err.contains("needs a candle device"), "{err}");
        let err = Engine::parse("cpu", "f8").err().unwrap().to_string();
        assert!(err.contains("auto, f32, f16 or bf16"), "{err}");
        let err = Engine::parse("tpu", "auto").err().unwrap().to_string();
        assert!(err.contains("cpu, cuda, cuda:N or candle-cpu"), "{err}");
        let err = Engine::parse("cuda:x", "auto").err().unwrap().to_string();
        assert!(err.contains("ordinal must be a number"), "{err}");
        if !candle_core::utils::cuda_is_available() {
            let err = Engine::parse("cuda", "auto").err().unwrap().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
