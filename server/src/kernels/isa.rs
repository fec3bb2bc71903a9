//! Which vector instructions this CPU offers, detected once, and a macro
//! that compiles one plain-Rust body for each of them.

use std::sync::OnceLock;

/// The instruction-set levels the kernels are specialized for, lowest
/// first. Only a description: an [`Isa`] (what the kernels take) comes from
/// detection alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything: the compiler's baseline.
    Generic,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512F, VL and DQ (plus AVX2, FMA and F16C).
    Avx512,
}

/// An instruction set this CPU has. The only ways to get one are
/// [`Isa::detect`], [`Isa::all_supported`] and [`Isa::at_most`] (a lesser
/// level of one already detected), so safe code can never hand the kernels
/// an instruction set the CPU lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa(Level);

impl Isa {
    /// The best instruction set of this CPU. `OPENMODEL_ISA=avx2|generic`
    /// forces a lesser one (for comparisons and tests), never a better one.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let best = Isa::best_supported();
            match std::env::var("OPENMODEL_ISA").as_deref() {
                Ok("generic") => best.at_most(Level::Generic),
                Ok("avx2") => best.at_most(Level::Avx2),
                _ => best,
            }
        })
    }

    fn best_supported() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            // Every CPU with AVX2 and FMA has F16C too; checked all the same,
            // as the quantized kernels convert f16 scales with it.
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq");
            if avx2 && avx512 {
                return Isa(Level::Avx512);
            }
            if avx2 {
                return Isa(Level::Avx2);
            }
        }
        Isa(Level::Generic)
    }

    /// This instruction set, or `level` if that is lower: every level
    /// below a detected one is there too.
    pub fn at_most(self, level: Level) -> Isa {
        Isa(self.0.min(level))
    }

    /// Every instruction set this CPU can run, best first (for tests and
    /// benchmarks that compare the specializations).
    pub fn all_supported() -> Vec<Isa> {
        let best = Isa::best_supported();
        [Level::Avx512, Level::Avx2, Level::Generic]
            .into_iter()
            .filter(|level| *level <= best.0)
            .map(Isa)
            .collect()
    }

    /// Every instruction set up to [`Isa::detect`]'s (so under the
    /// `OPENMODEL_ISA` cap), best first: what the benchmarks time.
    pub fn all_detected() -> Vec<Isa> {
        let best = Isa::detect().level();
        Isa::all_supported()
            .into_iter()
            .filter(|isa| isa.level() <= best)
            .collect()
    }

    /// Its level.
    pub fn level(self) -> Level {
        self.0
    }

    /// Whether this instruction set includes AVX-512 VNNI and BW (8-bit
    /// dot products in one instruction, `vpdpbusd`): at the AVX-512 level
    /// only, and only where the CPU has them.
    pub fn avx512_vnni(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.0 == Level::Avx512 {
            return is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw");
        }
        false
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Generic => "generic",
        }
    }
}

/// Defines `fn name(isa: Isa, args…)` (or `fn name<T: Bound>(…)`, one type
/// parameter) whose plain-Rust body is compiled three times (AVX-512,
/// AVX2+FMA, baseline) and picked by `isa`, so that loops the compiler
/// vectorizes use the widest registers the CPU has. Declare the functions
/// `pub(crate)`: outside callers go through wrappers that detect the
/// instruction set themselves.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$gen:ident: $bound:path>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name $(<$gen: $bound>)? (isa: $crate::kernels::isa::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$gen: $bound>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma,f16c")]
            fn v4 $(<$gen: $bound>)? ($($arg: $ty),*) $(-> $ret)? { body $(::<$gen>)? ($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn v3 $(<$gen: $bound>)? ($($arg: $ty),*) $(-> $ret)? { body $(::<$gen>)? ($($arg),*) }
            match isa.level() {
                // SAFETY: an `Isa` only comes from runtime detection (its
                // field is private), so the CPU has AVX-512F, VL and DQ,
                // AVX2, FMA and F16C at this level.
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::isa::Level::Avx512 => unsafe { v4 $(::<$gen>)? ($($arg),*) },
                // SAFETY: as above: AVX2, FMA and F16C were detected.
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::isa::Level::Avx2 => unsafe { v3 $(::<$gen>)? ($($arg),*) },
                _ => body $(::<$gen>)? ($($arg),*),
            }
        }
    };
}

pub(crate) use multiversion;

/// Asks the cache for the lines of `data`, into the L1 cache (a hint: it
/// changes no result; nothing on other architectures).
#[inline(always)]
pub(crate) fn prefetch<T>(data: &[T]) {
    ask::<false, T>(data)
}

/// Asks the outer caches (L2 and beyond) for the lines of `data`: for what
/// is wanted later than what [`prefetch`] asks for, which in the L1 cache
/// would push out what is in use.
#[inline(always)]
pub(crate) fn prefetch_far<T>(data: &[T]) {
    ask::<true, T>(data)
}

/// [`prefetch`] (`FAR` false) or [`prefetch_far`].
#[inline(always)]
fn ask<const FAR: bool, T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T2, _mm_prefetch};
        let (start, len) = (data.as_ptr().cast::<u8>(), std::mem::size_of_val(data));
        for offset in (0..len).step_by(64) {
            // SAFETY: a prefetch reads nothing architecturally; the address
            // is inside `data`.
            unsafe {
                let line = start.add(offset).cast();
                if FAR {
                    _mm_prefetch::<_MM_HINT_T2>(line)
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(line)
                }
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_lists_every_level_up_to_the_best_and_caps_only_downwards() {
        let all = Isa::all_supported();
        assert_eq!(all.last().map(|i| i.level()), Some(Level::Generic));
        assert!(all.windows(2).all(|w| w[0].level() > w[1].level()));
        let best = all[0];
        assert!(Isa::detect().level() <= best.level());
        assert_eq!(best.at_most(Level::Avx512), best);
        assert_eq!(best.at_most(Level::Generic).level(), Level::Generic);
        assert!(all.contains(&best.at_most(Level::Avx2)));
        assert!(!best.at_most(Level::Avx2).avx512_vnni());
        let detected = Isa::all_detected();
        assert_eq!(detected[0].level(), Isa::detect().level());
        assert!(all.ends_with(&detected));
    }
}
