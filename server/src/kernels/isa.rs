//! Which vector instructions this CPU offers, detected once, and a macro
//! that compiles one plain-Rust body for each of them.

use std::sync::OnceLock;

/// The instruction sets the kernels are specialized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512F (plus AVX2 and FMA).
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// Anything else: the compiler's baseline.
    Generic,
}

impl Isa {
    /// The best instruction set of this CPU. `OPENMODEL_ISA=avx2|generic`
    /// forces a lesser one (for comparisons and tests), never a better one.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let best = Isa::best_supported();
            match std::env::var("OPENMODEL_ISA").as_deref() {
                Ok("generic") => Isa::Generic,
                Ok("avx2") if best != Isa::Generic => Isa::Avx2,
                _ => best,
            }
        })
    }

    fn best_supported() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }

    /// Every instruction set this CPU can run, best first (for tests that
    /// compare the specializations).
    pub fn all_supported() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Generic]
            .into_iter()
            .filter(|isa| match (isa, Isa::best_supported()) {
                (Isa::Avx512, best) => best == Isa::Avx512,
                (Isa::Avx2, best) => best != Isa::Generic,
                _ => true,
            })
            .collect()
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Generic => "generic",
        }
    }
}

/// Defines `fn name(isa: Isa, args…)` whose plain-Rust body is compiled three
/// times (AVX-512, AVX2+FMA, baseline) and picked by `isa`, so that loops the
/// compiler vectorizes use the widest registers the CPU has.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name(isa: $crate::kernels::isa::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
            fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
            match isa {
                // SAFETY: `isa` comes from `Isa::detect`/`all_supported`,
                // so the CPU has these features.
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::isa::Isa::Avx512 => unsafe { v4($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::isa::Isa::Avx2 => unsafe { v3($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}

pub(crate) use multiversion;
