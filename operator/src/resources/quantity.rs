//! Kubernetes quantities read: CPU quantities as thread counts (the
//! server's `OPENMODEL_THREADS` comes from the pod's CPU limit) and byte
//! sizes (the model's `size`, for the fetch's bound and its volume).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Whole CPUs in a Kubernetes CPU quantity (`2`, `1.5`, `2500m`), rounded
/// down but at least 1; `None` for a form this does not read (exponents,
/// binary suffixes), in which case the server finds its CPU limit itself.
pub fn whole_cpus(quantity: &Quantity) -> Option<u32> {
    let text = quantity.0.trim();
    let millis: f64 = match text.strip_suffix('m') {
        Some(milli) => milli.parse().ok()?,
        None => text.parse::<f64>().ok()? * 1000.0,
    };
    if !millis.is_finite() || millis <= 0.0 {
        return None;
    }
    Some(((millis / 1000.0).floor() as u32).max(1))
}

/// Bytes in a Kubernetes quantity of the form the CRD's `size` allows: a
/// whole number with an optional unit (`Ki`, `Mi`, `Gi`, `Ti`, `k`, `M`,
/// `G`, `T`); `None` for any other form, or one beyond `u64`.
pub fn bytes(quantity: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let text = quantity.trim();
    let (digits, unit) = UNITS
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|d| (d, *unit)))
        .unwrap_or((text, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_become_bytes() {
        let cases = [
            ("500Mi", Some(500 << 20)),
            ("20Gi", Some(20 << 30)),
            ("1G", Some(1_000_000_000)),
            ("1Ti", Some(1 << 40)),
            ("1024", Some(1024)),
            ("4k", Some(4000)),
            ("1.5Gi", None),
            ("Mi", None),
            ("-1", None),
            ("1e9", None),
            ("99999999999999999Ti", None),
        ];
        for (text, expected) in cases {
            assert_eq!(bytes(text), expected, "{text}");
        }
    }

    #[test]
    fn cpu_quantities_become_thread_counts() {
        let cases = [
            ("2", Some(2)),
            ("1.5", Some(1)),
            ("2500m", Some(2)),
            ("500m", Some(1)),
            ("16", Some(16)),
            ("0", None),
            ("1e3", Some(1000)),
            ("2Ki", None),
            ("lots", None),
        ];
        for (text, expected) in cases {
            assert_eq!(whole_cpus(&Quantity(text.into())), expected, "{text}");
        }
    }
}
