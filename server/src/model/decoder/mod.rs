//! Decoder-only language models (Llama, Qwen2, Qwen3), from a GGUF file or
//! a Hugging Face safetensors folder, on our own CPU kernels or on a candle
//! device (a GPU with the `cuda` feature).
//!
//! One forward pass takes any number of sequences at once, each with its
//! own [`KvCache`] and any number of new tokens (a prefill chunk, or the
//! one token of a decode step): their rows are stacked so every weight is
//! read once per pass, and only attention runs sequence by sequence. That
//! is what continuous batching needs: sequences of different lengths share
//! a step.
//!
//! - [`config`]: the model's shape, from GGUF metadata or `config.json`;
//! - [`source`]: its tensors by role, from either file format;
//! - [`parts`]: those tensors checked and stacked, block by block;
//! - [`linear`]: a weight as GGML blocks or packed f32, fused where layers
//!   share an input;
//! - [`native`]: the pass on our CPU kernels; [`device`]: on candle;
//! - [`trace`]: a greedy run with every step's logits, for checks.

pub mod config;
pub mod device;
pub mod linear;
pub mod native;
pub mod parts;
pub mod source;
pub mod trace;

use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::kv_cache::KvCache as DeviceLayerCache;

use half::f16;

use crate::kernels::decoder::{KEY_TILE, KvElement, KvSlices, Rope, append_key};
use crate::model::engine::Engine;
use crate::model::gguf::Gguf;
use crate::{Error, Result};
use config::{DecoderConfig, KvDtype};
use device::DeviceWeights;
use native::NativeWeights;
use source::Source;

/// Where the weights live and what multiplies them.
enum Weights {
    /// Our CPU kernels.
    Native(NativeWeights),
    /// A candle device.
    Device(DeviceWeights),
}

/// A loaded decoder-only model.
pub struct Decoder {
    config: DecoderConfig,
    rope: Rope,
    weights: Weights,
}

/// Where a cache's keys and values are.
enum Store {
    /// In host memory, per layer (the native decoder).
    Host(HostLayers),
    /// On the device, per layer (a decoder on a candle device).
    Device(Vec<DeviceLayerCache>),
}

/// One layer's cached keys, in tiles of positions (as
/// [`crate::kernels::decoder::append_key`] lays them out), and values,
/// `len × kv_width`.
type Layer<E> = (Vec<E>, Vec<E>);

/// A host cache's layers, in the cache's element type.
enum HostLayers {
    /// `--kv-cache-dtype f32`.
    F32(Vec<Layer<f32>>),
    /// `--kv-cache-dtype f16`.
    F16(Vec<Layer<f16>>),
}

/// A sequence's cached keys and values, every layer.
pub struct KvCache {
    store: Store,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for up to `capacity` tokens of `config`'s model, its
    /// elements in `config.kv_dtype`. On the host its room is reserved at
    /// once, so that it never moves as it grows (the pages are touched as
    /// tokens arrive); on a device, it is allocated for `capacity` tokens
    /// at the first pass.
    pub fn new(config: &DecoderConfig, capacity: usize) -> KvCache {
        fn reserved<E>(config: &DecoderConfig, capacity: usize) -> Vec<Layer<E>> {
            let kv_width = config.kv_width();
            let keys = KvCache::room(capacity) * kv_width;
            (0..config.layers)
                .map(|_| {
                    (
                        Vec::with_capacity(keys),
                        Vec::with_capacity(capacity * kv_width),
                    )
                })
                .collect()
        }
        let layers = match config.kv_dtype {
            KvDtype::F32 => HostLayers::F32(reserved(config, capacity)),
            KvDtype::F16 => HostLayers::F16(reserved(config, capacity)),
        };
        KvCache {
            store: Store::Host(layers),
            len: 0,
            capacity,
        }
    }

    /// Tokens' worth of memory a cache for `tokens` tokens takes: the CPU
    /// decoder stores keys in whole tiles of [`KEY_TILE`] positions, so
    /// `tokens` rounded up to one (what a KV budget must count).
    pub fn room(tokens: usize) -> usize {
        tokens.next_multiple_of(KEY_TILE)
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most of `tokens` cached positions that another cache can take
    /// over with [`KvCache::copy_prefix`]: whole tiles of [`KEY_TILE`]
    /// positions (vLLM's block of 16 tokens).
    pub fn shareable(tokens: usize) -> usize {
        tokens / KEY_TILE * KEY_TILE
    }

    /// Takes the first `tokens` positions of `donor` (a multiple of
    /// [`KEY_TILE`], at most `donor.len()`) into this empty cache, element
    /// for element: what the CPU decoder would have cached for the same
    /// tokens, since each row's keys and values depend only on the tokens
    /// up to it.
    pub fn copy_prefix(&mut self, donor: &KvCache, tokens: usize) -> Result<()> {
        if !self.is_empty()
            || !tokens.is_multiple_of(KEY_TILE)
            || tokens > donor.len
            || tokens > self.capacity
        {
            return Err(Error::BadInput(format!(
                "a cache prefix of {tokens} tokens cannot be copied: the target must be empty, with room, and the prefix whole tiles of {KEY_TILE} positions the donor has ({})",
                donor.len
            )));
        }
        // A layer's values are `len × kv_width`, its keys whole tiles of
        // `KEY_TILE × kv_width`: the first `tokens` positions of both are
        // their first `tokens × kv_width` elements.
        fn copy<E: Copy>(to: &mut [Layer<E>], from: &[Layer<E>], len: usize, tokens: usize) {
            for ((keys, values), (donor_keys, donor_values)) in to.iter_mut().zip(from) {
                let elements = donor_values.len() / len * tokens;
                keys.extend_from_slice(&donor_keys[..elements]);
                values.extend_from_slice(&donor_values[..elements]);
            }
        }
        if tokens == 0 {
            return Ok(());
        }
        match (&mut self.store, &donor.store) {
            (Store::Host(HostLayers::F32(to)), Store::Host(HostLayers::F32(from))) => {
                copy(to, from, donor.len, tokens)
            }
            (Store::Host(HostLayers::F16(to)), Store::Host(HostLayers::F16(from))) => {
                copy(to, from, donor.len, tokens)
            }
            _ => {
                return Err(Error::BadInput(
                    "a cache prefix is copied between host caches of one element type only".into(),
                ));
            }
        }
        self.len = tokens;
        Ok(())
    }

    /// Layer `layer` of a host cache, to read.
    fn host_layer(&self, layer: usize) -> Result<KvSlices<'_>> {
        match &self.store {
            Store::Host(HostLayers::F32(layers)) => {
                Ok(KvSlices::F32(&layers[layer].0, &layers[layer].1))
            }
            Store::Host(HostLayers::F16(layers)) => {
                Ok(KvSlices::F16(&layers[layer].0, &layers[layer].1))
            }
            Store::Device(_) => Err(on_the_wrong_side()),
        }
    }

    /// Appends the key and value of `position` (after those before it) to
    /// layer `layer` of a host cache, in its element type.
    fn host_append(
        &mut self,
        layer: usize,
        position: usize,
        key: &[f32],
        value: &[f32],
    ) -> Result<()> {
        fn append<E: KvElement>(layer: &mut Layer<E>, position: usize, key: &[f32], value: &[f32]) {
            append_key(&mut layer.0, position, key);
            layer.1.extend(value.iter().map(|v| E::from_f32(*v)));
        }
        match &mut self.store {
            Store::Host(HostLayers::F32(layers)) => {
                append(&mut layers[layer], position, key, value)
            }
            Store::Host(HostLayers::F16(layers)) => {
                append(&mut layers[layer], position, key, value)
            }
            Store::Device(_) => return Err(on_the_wrong_side()),
        }
        Ok(())
    }

    /// The device layers, made on first use by a decoder on a device.
    fn device_mut(&mut self, layers: usize) -> Result<&mut [DeviceLayerCache]> {
        if let Store::Host(host) = &self.store {
            let filled = match host {
                HostLayers::F32(layers) => layers.iter().any(|(k, _)| !k.is_empty()),
                HostLayers::F16(layers) => layers.iter().any(|(k, _)| !k.is_empty()),
            };
            if self.len > 0 || filled {
                return Err(Error::BadInput(
                    "a cache filled by the CPU decoder is given to a decoder on a device".into(),
                ));
            }
            self.store = Store::Device(device::new_layer_caches(layers, self.capacity));
        }
        match &mut self.store {
            Store::Device(layers) => Ok(layers),
            Store::Host(_) => Err(Error::BadInput("the device cache was not made".into())),
        }
    }
}

/// A cache filled on a device given to the CPU decoder.
fn on_the_wrong_side() -> Error {
    Error::BadInput("a cache filled on a device is given to the CPU decoder".into())
}

/// Which rows' logits a sequence wants from a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (a prefill chunk that is not the prompt's last).
    None,
    /// The last new token's (the next token's distribution).
    Last,
    /// Every new token's (tests comparing with a reference).
    All,
}

/// One sequence's part of a forward pass.
pub struct Step<'a> {
    /// Its new tokens.
    pub tokens: &'a [u32],
    /// Its cache, extended by the pass.
    pub cache: &'a mut KvCache,
    /// Which logits it wants.
    pub logits: Logits,
}

/// The rows of a pass (its steps' new tokens, one after another) whose
/// logits each step asked for.
fn wanted_rows(steps: &[Step<'_>]) -> Vec<Range<usize>> {
    let mut row = 0;
    steps
        .iter()
        .map(|step| {
            let n = step.tokens.len();
            let picked = match step.logits {
                Logits::None => row..row,
                Logits::Last => row + n - 1..row + n,
                Logits::All => row..row + n,
            };
            row += n;
            picked
        })
        .collect()
}

/// The logits of one forward pass: for each step, the rows it asked for
/// ([`Logits`]), `vocab` wide, all in one buffer. The engine keeps one from
/// pass to pass ([`Decoder::forward_into`]): a 16-sequence decode step's
/// logits are 3 MB, and a fresh buffer zeroed (0.15 ms), then copied out
/// step by step (0.25 ms), took 0.4 ms of a 26 ms pass on one thread while
/// the other waited (2 threads of the AVX-512 EPYC capped at AVX2).
#[derive(Clone, Debug, Default)]
pub struct PassLogits {
    values: Vec<f32>,
    vocab: usize,
    /// Each step's rows, in rows of `values`.
    steps: Vec<Range<usize>>,
}

impl PassLogits {
    /// Sized for the rows each step asked for (`wanted`, from
    /// [`wanted_rows`]), `vocab` wide: the buffer for the output projection
    /// to fill, all of it. What it held before is left there (the
    /// projection overwrites it), so a pass of as many rows as the last one
    /// writes nothing here.
    fn prepare(&mut self, wanted: &[Range<usize>], vocab: usize) -> &mut [f32] {
        self.steps.clear();
        let mut picked = 0;
        for rows in wanted {
            self.steps.push(picked..picked + rows.len());
            picked += rows.len();
        }
        self.vocab = vocab;
        self.values.resize(picked * vocab, 0.0);
        &mut self.values
    }

    /// How many steps the pass had.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the pass had no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Step `i`'s logits (`rows × vocab`; empty for [`Logits::None`]).
    pub fn step(&self, i: usize) -> &[f32] {
        let rows = &self.steps[i];
        &self.values[rows.start * self.vocab..rows.end * self.vocab]
    }

    /// Each step's logits, in order, to change in place (a sampler's
    /// penalties).
    pub fn steps_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        let (mut rest, vocab) = (&mut self.values[..], self.vocab);
        self.steps.iter().map(move |rows| {
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(rows.len() * vocab);
            rest = tail;
            mine
        })
    }

    /// Each step's logits as a vector of its own.
    pub fn into_rows(self) -> Vec<Vec<f32>> {
        (0..self.len()).map(|i| self.step(i).to_vec()).collect()
    }
}

impl Decoder {
    /// Loads a model for our CPU kernels: `path` is a `.gguf` file, or a
    /// folder holding either one `.gguf` file or `config.json` with
    /// `*.safetensors`.
    pub fn load(path: &Path) -> Result<Decoder> {
        let (config, mut source) = open(path)?;
        let rope = rope(&config);
        let top = parts::read_top(&config, &mut source)?;
        let weights =
            NativeWeights::new(&config, top, |i| parts::read_block(&config, &mut source, i))?;
        Ok(Decoder {
            config,
            rope,
            weights: Weights::Native(weights),
        })
    }

    /// Loads a model onto a candle `device` (a GPU, or candle's CPU
    /// kernels): dense weights and activations in `dtype`; a model of GGML
    /// blocks computes in f32.
    pub fn load_on(path: &Path, device: &Device, dtype: DType) -> Result<Decoder> {
        let (config, mut source) = open(path)?;
        let rope = rope(&config);
        let top = parts::read_top(&config, &mut source)?;
        let weights = DeviceWeights::new(
            &config,
            &rope,
            top,
            |i| parts::read_block(&config, &mut source, i),
            device,
            dtype,
        )?;
        Ok(Decoder {
            config,
            rope,
            weights: Weights::Device(weights),
        })
    }

    /// Loads a model for `engine`: [`Decoder::load`] for our CPU kernels,
    /// [`Decoder::load_on`] for a candle device.
    pub fn load_for(path: &Path, engine: &Engine) -> Result<Decoder> {
        match engine {
            Engine::Native => Decoder::load(path),
            Engine::Candle(device, dtype) => Decoder::load_on(path, device, *dtype),
        }
    }

    /// Caches made for this decoder from now on ([`KvCache::new`] with its
    /// config) keep their keys and values in `dtype`, and a KV budget
    /// counts [`DecoderConfig::kv_bytes_per_token`] in it. Only the CPU
    /// decoder has the choice: on a candle device the cache is in the
    /// activations' precision.
    pub fn set_kv_dtype(&mut self, dtype: KvDtype) -> Result<()> {
        if dtype != KvDtype::F32 && matches!(self.weights, Weights::Device(_)) {
            return Err(Error::BadConfig(format!(
                "--kv-cache-dtype {} is for our CPU kernels (--device cpu); on a candle device the KV cache is in --dtype: leave --kv-cache-dtype at f32",
                dtype.name()
            )));
        }
        self.config.kv_dtype = dtype;
        Ok(())
    }

    /// Whether its sequences can share cached prefixes
    /// ([`KvCache::copy_prefix`]): on our CPU kernels, where each row's
    /// keys and values are the same bit for bit whatever rows share its
    /// pass. Not on a candle device, whose products may sum a row
    /// differently beside other rows.
    pub fn shares_prefixes(&self) -> bool {
        matches!(self.weights, Weights::Native(_))
    }

    /// The model's shape.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Longest sequence (prompt and output) a cache may hold.
    pub fn max_positions(&self) -> usize {
        self.rope.positions()
    }

    /// Where the model runs, for logs: `cpu`, or the candle device and
    /// the precision of its activations.
    pub fn describe(&self) -> String {
        match &self.weights {
            Weights::Native(_) => "cpu (native kernels)".into(),
            Weights::Device(w) => format!("candle {:?}", w.dtype()).to_lowercase(),
        }
    }

    /// Runs one pass over `steps`: appends each step's tokens to its cache
    /// and returns, per step, the logits it asked for (`rows × vocab`).
    /// A step refused (no tokens, an id outside the vocabulary, past its
    /// cache's room) fails the pass before any cache changes.
    pub fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let mut logits = PassLogits::default();
        self.forward_into(steps, &mut logits)?;
        Ok(logits.into_rows())
    }

    /// [`forward`](Self::forward), the logits into `logits` (kept by the
    /// caller from pass to pass, so that a pass neither allocates nor
    /// copies them).
    ///
    /// On our kernels the pass runs on a thread of the rayon pool, so that
    /// each of its parallel products is a fork of that worker (the idle
    /// workers are still spinning) rather than a job handed in from
    /// outside, for which the caller sleeps and is woken: ~120 of those per
    /// decode step cost a fifth of its time.
    pub fn forward_into(&self, steps: &mut [Step<'_>], logits: &mut PassLogits) -> Result<()> {
        self.check(steps)?;
        match &self.weights {
            Weights::Native(w) => {
                rayon::scope(|_| w.forward(&self.config, &self.rope, steps, logits))?
            }
            Weights::Device(w) => w.forward(&self.config, steps, logits)?,
        }
        for step in steps.iter_mut() {
            step.cache.len += step.tokens.len();
        }
        Ok(())
    }

    fn check(&self, steps: &[Step<'_>]) -> Result<()> {
        let c = &self.config;
        for step in steps {
            if step.tokens.is_empty() {
                return Err(Error::BadInput("a step without tokens".into()));
            }
            if let Some(bad) = step.tokens.iter().find(|t| **t as usize >= c.vocab) {
                return Err(Error::BadInput(format!(
                    "token id {bad} is outside the vocabulary of {} tokens",
                    c.vocab
                )));
            }
            let end = step.cache.len + step.tokens.len();
            if end > step.cache.capacity || end > self.max_positions() {
                return Err(Error::BadInput(format!(
                    "{end} tokens exceed the sequence's room ({} reserved, {} positions)",
                    step.cache.capacity,
                    self.max_positions()
                )));
            }
        }
        Ok(())
    }
}

/// The rotary table of `config`, up to its context (at most 2¹⁷
/// positions).
fn rope(config: &DecoderConfig) -> Rope {
    let positions = config.context.min(1 << 17);
    Rope::new(
        config.head_dim,
        config.rope_theta,
        positions,
        config.rope_style,
    )
}

/// The configuration and tensor source of `path`.
fn open(path: &Path) -> Result<(DecoderConfig, Source)> {
    let gguf_file = if path.is_file() {
        Some(path.to_path_buf())
    } else {
        single_gguf(path)?
    };
    if let Some(file) = gguf_file {
        let header = Gguf::open(&file)?;
        let config = DecoderConfig::from_gguf(&header)?;
        return Ok((config, Source::gguf(header, &file)?));
    }
    let config_path = path.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::BadModel(format!("{}: {e}", config_path.display())))?;
    let config = DecoderConfig::from_hf_json(&text)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::BadModel(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::BadModel(format!(
            "{}: no .gguf file and no .safetensors files",
            path.display()
        )));
    }
    Ok((config, Source::safetensors(&files)?))
}

/// The one `.gguf` file in folder `dir`, if there is one.
pub fn single_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::BadModel(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(Error::BadModel(format!(
            "{}: {n} .gguf files; a model folder holds one",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_logits_give_each_step_the_rows_it_asked_for() {
        // Rows of a pass: 3 of the first step (all), none of the second,
        // the last of the third's two.
        let mut logits = PassLogits::default();
        let vocab = 2;
        let buffer = logits.prepare(&[0..3, 3..3, 5..6], vocab);
        assert_eq!(buffer.len(), 4 * vocab);
        for (i, v) in buffer.iter_mut().enumerate() {
            *v = i as f32;
        }
        assert_eq!(logits.len(), 3);
        assert_eq!(logits.step(0), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(logits.step(1).is_empty());
        assert_eq!(logits.step(2), &[6.0, 7.0]);
        let rows: Vec<usize> = logits.steps_mut().map(|rows| rows.len()).collect();
        assert_eq!(rows, [6, 0, 2]);
        // The next pass reuses the buffer: one row each of two steps.
        assert_eq!(logits.prepare(&[0..1, 1..2], vocab).len(), 2 * vocab);
        let rows: Vec<usize> = logits.steps_mut().map(|rows| rows.len()).collect();
        assert_eq!(rows, [2, 2]);
        assert_eq!(logits.into_rows(), [vec![0.0, 1.0], vec![2.0, 3.0]]);
    }
}
