//! GGUF files (llama.cpp's model format, versions 2 and 3): the metadata
//! and the tensors' descriptions, read from an untrusted file with every
//! length checked against what is left of it, and the bytes of one tensor.
//!
//! The layout: magic `GGUF`, version (u32), tensor count and metadata count
//! (u64), the metadata (key string, value type u32, value), the tensor
//! descriptions (name, dimension count u32, dimensions u64 each, type u32,
//! offset u64 from the data section), then the data section at the next
//! multiple of `general.alignment` (32 by default). Strings are a u64 length
//! and UTF-8 bytes; all numbers little-endian.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::{Error, Result};

/// Longest metadata string (a chat template is a few KiB).
const MAX_STRING_BYTES: u64 = 1 << 20;
/// Most metadata entries.
const MAX_METADATA: u64 = 1 << 16;
/// Most tensors.
const MAX_TENSORS: u64 = 1 << 16;
/// Most dimensions of a tensor.
const MAX_DIMS: u32 = 4;
/// Arrays nest at most this deep.
const MAX_DEPTH: usize = 2;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An unsigned integer of any width.
    Uint(u64),
    /// A signed integer of any width.
    Int(i64),
    /// A float of either width.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array (of one type).
    Array(Vec<Value>),
}

/// How a tensor's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    /// 32-bit floats.
    F32,
    /// 16-bit IEEE floats.
    F16,
    /// bfloat16.
    Bf16,
    /// GGML Q4_0 blocks of 32.
    Q4_0,
    /// GGML Q4_1 blocks of 32.
    Q4_1,
    /// GGML Q8_0 blocks of 32.
    Q8_0,
    /// Another GGML type (its number), not served.
    Other(u32),
}

impl TensorType {
    fn from_code(code: u32) -> TensorType {
        match code {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            3 => TensorType::Q4_1,
            8 => TensorType::Q8_0,
            30 => TensorType::Bf16,
            other => TensorType::Other(other),
        }
    }

    /// Elements per block and bytes per block, for the types served.
    fn block(self) -> Option<(u64, u64)> {
        match self {
            TensorType::F32 => Some((1, 4)),
            TensorType::F16 | TensorType::Bf16 => Some((1, 2)),
            TensorType::Q4_0 => Some((32, 18)),
            TensorType::Q4_1 => Some((32, 20)),
            TensorType::Q8_0 => Some((32, 34)),
            TensorType::Other(_) => None,
        }
    }
}

/// One tensor's description.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Dimensions, innermost first (GGML's order: `[cols, rows]`).
    pub dims: Vec<u64>,
    /// How its elements are stored.
    pub kind: TensorType,
    /// Where its bytes start, from the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Its size in bytes, or why it cannot be served.
    fn bytes(&self, name: &str) -> Result<u64> {
        let (per_block, block_bytes) = self.kind.block().ok_or_else(|| {
            Error::BadModel(format!(
                "tensor {name} has GGML type {:?}, which this server does not serve (F32, F16, BF16, Q4_0, Q4_1, Q8_0 are)",
                self.kind
            ))
        })?;
        let inner = self.dims.first().copied().unwrap_or(1);
        if inner % per_block != 0 {
            return Err(Error::BadModel(format!(
                "tensor {name}: rows of {inner} elements are not whole blocks of {per_block}"
            )));
        }
        Ok(self.elements() / per_block * block_bytes)
    }
}

/// A GGUF file's header: metadata and tensor descriptions.
#[derive(Clone, Debug)]
pub struct Gguf {
    /// The metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// The tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    data_offset: u64,
    file_len: u64,
}

impl Gguf {
    /// Reads the header of the file at `path`.
    pub fn open(path: &Path) -> Result<Gguf> {
        let file = File::open(path).map_err(|e| bad(path, e))?;
        let len = file.metadata().map_err(|e| bad(path, e))?.len();
        Gguf::read(BufReader::new(file), len)
            .map_err(|e| Error::BadModel(format!("{}: {}", path.display(), message(e))))
    }

    /// Reads a header from `reader`, a file of `len` bytes.
    pub fn read(reader: impl Read, len: u64) -> Result<Gguf> {
        let mut r = Reader {
            inner: reader,
            pos: 0,
            len,
        };
        let magic = r.bytes(4)?;
        if magic != b"GGUF" {
            return Err(Error::BadModel(
                "not a GGUF file (it does not start with GGUF)".into(),
            ));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::BadModel(format!(
                "GGUF version {version}; versions 2 and 3 are served"
            )));
        }
        let tensor_count = r.count(MAX_TENSORS, "tensors")?;
        let metadata_count = r.count(MAX_METADATA, "metadata entries")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..metadata_count {
            let key = r.string()?;
            let kind = r.u32()?;
            let value = r.value(kind, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = BTreeMap::new();
        for _ in 0..tensor_count {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > MAX_DIMS {
                return Err(Error::BadModel(format!(
                    "tensor {name} has {n_dims} dimensions; at most {MAX_DIMS}"
                )));
            }
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
            if dims.iter().any(|d| *d == 0 || *d > len) {
                return Err(Error::BadModel(format!(
                    "tensor {name} has dimensions {dims:?}, impossible in a file of {len} bytes"
                )));
            }
            let kind = TensorType::from_code(r.u32()?);
            let offset = r.u64()?;
            let info = TensorInfo { dims, kind, offset };
            if tensors.insert(name.clone(), info).is_some() {
                return Err(Error::BadModel(format!("tensor {name} is described twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(Value::Uint(a)) if a.is_power_of_two() && *a <= 1 << 16 => *a,
            Some(other) => {
                return Err(Error::BadModel(format!(
                    "general.alignment is {other:?}; a power of two up to 65536 is expected"
                )));
            }
        };
        let data_offset = r.pos.div_ceil(alignment) * alignment;
        Ok(Gguf {
            metadata,
            tensors,
            data_offset,
            file_len: len,
        })
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::BadModel(format!("GGUF metadata lacks {key}")))
    }

    /// The unsigned integer under `key`.
    pub fn uint(&self, key: &str) -> Result<u64> {
        match self.get(key)? {
            Value::Uint(v) => Ok(*v),
            Value::Int(v) if *v >= 0 => Ok(*v as u64),
            other => Err(Error::BadModel(format!(
                "GGUF metadata {key} is {other:?}; an unsigned integer is expected"
            ))),
        }
    }

    /// The float under `key`.
    pub fn float(&self, key: &str) -> Result<f64> {
        match self.get(key)? {
            Value::Float(v) => Ok(*v),
            other => Err(Error::BadModel(format!(
                "GGUF metadata {key} is {other:?}; a float is expected"
            ))),
        }
    }

    /// The string under `key`.
    pub fn string(&self, key: &str) -> Result<&str> {
        match self.get(key)? {
            Value::String(v) => Ok(v),
            other => Err(Error::BadModel(format!(
                "GGUF metadata {key} is {other:?}; a string is expected"
            ))),
        }
    }

    /// The array under `key`.
    pub fn array(&self, key: &str) -> Result<&[Value]> {
        match self.get(key)? {
            Value::Array(v) => Ok(v),
            other => Err(Error::BadModel(format!(
                "GGUF metadata {key} is a {}; an array is expected",
                kind_name(other)
            ))),
        }
    }

    /// The bytes of tensor `name` read from `file` (the file this header
    /// came from), with its description; checked to lie inside the file.
    pub fn tensor_bytes(&self, file: &mut File, name: &str) -> Result<(Vec<u8>, TensorInfo)> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::BadModel(format!("the GGUF file lacks tensor {name}")))?;
        let size = info.bytes(name)?;
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(Error::BadModel(format!(
                "tensor {name} lies past the file's end"
            )));
        };
        if end > self.file_len {
            return Err(Error::BadModel(format!(
                "tensor {name} ends at byte {end}, past the file's end ({})",
                self.file_len
            )));
        }
        let mut bytes = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| Error::BadModel(format!("reading tensor {name}: {e}")))?;
        Ok((bytes, info.clone()))
    }
}

fn bad(path: &Path, e: std::io::Error) -> Error {
    Error::BadModel(format!("{}: {e}", path.display()))
}

fn message(e: Error) -> String {
    match e {
        Error::BadModel(m) => m,
        other => other.to_string(),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Uint(_) => "unsigned integer",
        Value::Int(_) => "integer",
        Value::Float(_) => "float",
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Array(_) => "array",
    }
}

/// A reader that knows how much of the file is left.
struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Reader<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.left() {
            return Err(Error::BadModel(format!(
                "the header asks for {n} bytes at byte {}, past the file's end ({})",
                self.pos, self.len
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf).map_err(|e| {
            Error::BadModel(format!("reading the header at byte {}: {e}", self.pos))
        })?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.bytes(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn count(&mut self, max: u64, what: &str) -> Result<u64> {
        let n = self.u64()?;
        if n > max {
            return Err(Error::BadModel(format!(
                "the header declares {n} {what}; at most {max} are read"
            )));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > MAX_STRING_BYTES {
            return Err(Error::BadModel(format!(
                "a string of {n} bytes at byte {}; at most {MAX_STRING_BYTES}",
                self.pos
            )));
        }
        let bytes = self.bytes(n)?;
        String::from_utf8(bytes)
            .map_err(|_| Error::BadModel(format!("a string before byte {} is not UTF-8", self.pos)))
    }

    fn value(&mut self, kind: u32, depth: usize) -> Result<Value> {
        Ok(match kind {
            0 => Value::Uint(u64::from(self.array::<1>()?[0])),
            1 => Value::Int(i64::from(i8::from_le_bytes(self.array()?))),
            2 => Value::Uint(u64::from(u16::from_le_bytes(self.array()?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.array()?))),
            4 => Value::Uint(u64::from(self.u32()?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.array()?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::BadModel(format!(
                        "a boolean of value {b} before byte {}",
                        self.pos
                    )));
                }
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(Error::BadModel(format!(
                        "arrays nested deeper than {MAX_DEPTH} before byte {}",
                        self.pos
                    )));
                }
                let element = self.u32()?;
                let n = self.u64()?;
                // Every element takes at least one byte of the file.
                if n > self.left() {
                    return Err(Error::BadModel(format!(
                        "an array of {n} elements at byte {}, more than the file holds",
                        self.pos
                    )));
                }
                let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    items.push(self.value(element, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::Uint(self.u64()?),
            11 => Value::Int(i64::from_le_bytes(self.array()?)),
            12 => Value::Float(f64::from_le_bytes(self.array()?)),
            other => {
                return Err(Error::BadModel(format!(
                    "unknown GGUF value type {other} before byte {}",
                    self.pos
                )));
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A GGUF writer for tests: metadata of strings and u32s, F32 tensors.
    pub(crate) fn write(
        metadata: &[(&str, Value)],
        tensors: &[(&str, Vec<u64>, Vec<f32>)],
    ) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        fn value(out: &mut Vec<u8>, v: &Value) {
            match v {
                Value::Uint(x) => out.extend((*x as u32).to_le_bytes()),
                Value::Int(x) => out.extend((*x as i32).to_le_bytes()),
                Value::Float(x) => out.extend((*x as f32).to_le_bytes()),
                Value::Bool(b) => out.push(u8::from(*b)),
                Value::String(s) => string(out, s),
                Value::Array(items) => {
                    let code = items.first().map_or(4, code);
                    out.extend(code.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for item in items {
                        value(out, item);
                    }
                }
            }
        }
        fn code(v: &Value) -> u32 {
            match v {
                Value::Uint(_) => 4,
                Value::Int(_) => 5,
                Value::Float(_) => 6,
                Value::Bool(_) => 7,
                Value::String(_) => 8,
                Value::Array(_) => 9,
            }
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (key, v) in metadata {
            string(&mut out, key);
            out.extend(code(v).to_le_bytes());
            value(&mut out, v);
        }
        let mut offset = 0u64;
        for (name, dims, data) in tensors {
            string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(0u32.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (data.len() * 4).div_ceil(32) as u64 * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for (_, _, data) in tensors {
            let start = out.len();
            for v in data {
                out.extend(v.to_le_bytes());
            }
            out.resize(start + (data.len() * 4).div_ceil(32) * 32, 0);
        }
        out
    }

    fn sample() -> Vec<u8> {
        write(
            &[
                ("general.architecture", Value::String("llama".into())),
                ("llama.block_count", Value::Uint(2)),
                (
                    "tokenizer.ggml.tokens",
                    Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
                ),
            ],
            &[("w", vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])],
        )
    }

    #[test]
    fn reads_metadata_and_tensor_bytes() {
        let bytes = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.string("general.architecture").unwrap(), "llama");
        assert_eq!(g.uint("llama.block_count").unwrap(), 2);
        assert_eq!(g.array("tokenizer.ggml.tokens").unwrap().len(), 2);
        let (data, info) = g
            .tensor_bytes(&mut File::open(&path).unwrap(), "w")
            .unwrap();
        assert_eq!(info.dims, vec![2, 3]);
        assert_eq!(info.kind, TensorType::F32);
        let floats: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(floats, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let missing = g
            .tensor_bytes(&mut File::open(&path).unwrap(), "nope")
            .unwrap_err();
        assert!(
            missing.to_string().contains("lacks tensor nope"),
            "{missing}"
        );
        let wrong = g.uint("general.architecture").unwrap_err();
        assert!(wrong.to_string().contains("unsigned integer"), "{wrong}");
    }

    #[test]
    fn every_truncation_is_refused_not_panicked() {
        let bytes = sample();
        let ok: Vec<bool> = (0..bytes.len())
            .map(|cut| Gguf::read(&bytes[..cut], cut as u64).is_ok())
            .collect();
        // Every cut inside the header fails; from its end on, it reads.
        let header_end = ok.iter().position(|ok| *ok).unwrap();
        assert!(
            header_end > 100,
            "a header cut at {header_end} bytes was read"
        );
        assert!(ok[header_end..].iter().all(|ok| *ok));
    }

    #[test]
    fn huge_declared_lengths_are_refused_before_allocating() {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes());
        let e = Gguf::read(&bytes[..], bytes.len() as u64).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        let mut array = b"GGUF".to_vec();
        array.extend(3u32.to_le_bytes());
        array.extend(0u64.to_le_bytes());
        array.extend(1u64.to_le_bytes());
        array.extend(1u64.to_le_bytes());
        array.push(b'k');
        array.extend(9u32.to_le_bytes());
        array.extend(4u32.to_le_bytes());
        array.extend((1u64 << 60).to_le_bytes());
        let e = Gguf::read(&array[..], array.len() as u64).unwrap_err();
        assert!(e.to_string().contains("more than the file holds"), "{e}");
    }

    #[test]
    fn a_tensor_past_the_end_is_refused() {
        let mut bytes = sample();
        // The six floats end 8 bytes before the padded end.
        bytes.truncate(bytes.len() - 16);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let g = Gguf::open(&path).unwrap();
        let e = g
            .tensor_bytes(&mut File::open(&path).unwrap(), "w")
            .unwrap_err();
        assert!(e.to_string().contains("past the file's end"), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut with_magic = b"GGUF\x03\0\0\0".to_vec();
            with_magic.extend(&bytes);
            let _ = Gguf::read(&with_magic[..], with_magic.len() as u64);
            let _ = Gguf::read(&bytes[..], bytes.len() as u64);
        }

        #[test]
        fn flipped_bytes_never_panic(at in 0usize..200, to in any::<u8>()) {
            let mut bytes = sample();
            let i = at % bytes.len();
            bytes[i] = to;
            let _ = Gguf::read(&bytes[..], bytes.len() as u64);
        }
    }
}
