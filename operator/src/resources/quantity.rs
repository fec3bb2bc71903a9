//! CPU quantities as thread counts: the server's `OPENMODEL_THREADS` comes
//! from the pod's CPU limit.

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

#[cfg(test)]
mod tests {
    use super::*;

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
