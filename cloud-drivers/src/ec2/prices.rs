//! A built-in table of EC2 on-demand prices.
//!
//! Estimates in USD per hour for Linux in us-east-1, from AWS's public price list;
//! other regions cost somewhat more. Good enough to rank instance types (cheapest
//! fit first), not for billing. `Ec2Settings::price_overrides` replaces any entry
//! and prices types the table does not know; unknown types sort after priced ones.

/// (instance type, USD per hour).
const PRICES: &[(&str, f64)] = &[
    // Burstable CPU.
    ("t3.nano", 0.0052),
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("t3.2xlarge", 0.3328),
    ("t3a.nano", 0.0047),
    ("t3a.micro", 0.0094),
    ("t3a.small", 0.0188),
    ("t3a.medium", 0.0376),
    ("t3a.large", 0.0752),
    ("t3a.xlarge", 0.1504),
    ("t3a.2xlarge", 0.3008),
    // General purpose.
    ("m5.large", 0.096),
    ("m5.xlarge", 0.192),
    ("m5.2xlarge", 0.384),
    ("m5.4xlarge", 0.768),
    ("m5.8xlarge", 1.536),
    ("m5.12xlarge", 2.304),
    ("m5.16xlarge", 3.072),
    ("m5.24xlarge", 4.608),
    ("m6i.large", 0.096),
    ("m6i.xlarge", 0.192),
    ("m6i.2xlarge", 0.384),
    ("m6i.4xlarge", 0.768),
    ("m6i.8xlarge", 1.536),
    ("m6i.12xlarge", 2.304),
    ("m6i.16xlarge", 3.072),
    ("m6i.24xlarge", 4.608),
    ("m6i.32xlarge", 6.144),
    // Compute optimised.
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("c5.2xlarge", 0.34),
    ("c5.4xlarge", 0.68),
    ("c5.9xlarge", 1.53),
    ("c5.12xlarge", 2.04),
    ("c5.18xlarge", 3.06),
    ("c5.24xlarge", 4.08),
    ("c6i.large", 0.085),
    ("c6i.xlarge", 0.17),
    ("c6i.2xlarge", 0.34),
    ("c6i.4xlarge", 0.68),
    ("c6i.8xlarge", 1.36),
    ("c6i.12xlarge", 2.04),
    ("c6i.16xlarge", 2.72),
    ("c6i.24xlarge", 4.08),
    ("c6i.32xlarge", 5.44),
    // Memory optimised.
    ("r5.large", 0.126),
    ("r5.xlarge", 0.252),
    ("r5.2xlarge", 0.504),
    ("r5.4xlarge", 1.008),
    // NVIDIA T4.
    ("g4dn.xlarge", 0.526),
    ("g4dn.2xlarge", 0.752),
    ("g4dn.4xlarge", 1.204),
    ("g4dn.8xlarge", 2.176),
    ("g4dn.12xlarge", 3.912),
    ("g4dn.16xlarge", 4.352),
    ("g4dn.metal", 7.824),
    // NVIDIA A10G.
    ("g5.xlarge", 1.006),
    ("g5.2xlarge", 1.212),
    ("g5.4xlarge", 1.624),
    ("g5.8xlarge", 2.448),
    ("g5.12xlarge", 5.672),
    ("g5.16xlarge", 4.096),
    ("g5.24xlarge", 8.144),
    ("g5.48xlarge", 16.288),
    // NVIDIA L4.
    ("g6.xlarge", 0.8048),
    ("g6.2xlarge", 0.9776),
    ("g6.4xlarge", 1.3232),
    ("g6.8xlarge", 2.0144),
    ("g6.12xlarge", 4.6016),
    ("g6.16xlarge", 3.3968),
    ("g6.24xlarge", 6.6752),
    ("g6.48xlarge", 13.3504),
    // NVIDIA L40S.
    ("g6e.xlarge", 1.861),
    ("g6e.2xlarge", 2.242),
    ("g6e.4xlarge", 3.004),
    ("g6e.8xlarge", 4.527),
    ("g6e.12xlarge", 10.493),
    ("g6e.16xlarge", 7.577),
    ("g6e.24xlarge", 15.066),
    ("g6e.48xlarge", 30.131),
    // NVIDIA V100.
    ("p3.2xlarge", 3.06),
    ("p3.8xlarge", 12.24),
    ("p3.16xlarge", 24.48),
    ("p3dn.24xlarge", 31.212),
    // NVIDIA A100 (40 GB, 80 GB).
    ("p4d.24xlarge", 32.7726),
    ("p4de.24xlarge", 40.9657),
    // NVIDIA H100 (after the 2025 price cut).
    ("p5.48xlarge", 55.04),
];

/// The built-in on-demand price estimate of `instance_type` (USD per hour, Linux,
/// us-east-1), when the table knows it.
pub fn builtin_price(instance_type: &str) -> Option<f64> {
    PRICES
        .iter()
        .find(|(name, _)| *name == instance_type)
        .map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sane() {
        let mut names: Vec<&str> = PRICES.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let len = names.len();
        names.dedup();
        assert_eq!(names.len(), len, "duplicate entries");
        assert!(PRICES.iter().all(|(_, p)| *p > 0.0 && *p < 200.0));
        assert_eq!(builtin_price("g4dn.xlarge"), Some(0.526));
        assert_eq!(builtin_price("p4d.24xlarge"), Some(32.7726));
        assert_eq!(builtin_price("x9.nothing"), None);
        // GPU types cost more than the CPU types of the same size.
        assert!(builtin_price("g4dn.xlarge") > builtin_price("m5.xlarge"));
    }
}
