//! The vCPUs, memory and GPUs of the instance types in the price table, as EC2's
//! DescribeInstanceTypes reports them: with the prices, a catalogue for planning
//! without an EC2 account (`kelp plan` offline). The operator itself always asks EC2.

/// GPUs of a type: count, manufacturer, model, memory MiB each.
type Gpus = Option<(u32, &'static str, &'static str, u64)>;

/// (instance type, vCPUs, memory MiB, GPUs).
pub(crate) const SPECS: &[(&str, u32, u64, Gpus)] = &[
    ("t3.nano", 2, 512, None),
    ("t3.micro", 2, 1024, None),
    ("t3.small", 2, 2048, None),
    ("t3.medium", 2, 4096, None),
    ("t3.large", 2, 8192, None),
    ("t3.xlarge", 4, 16384, None),
    ("t3.2xlarge", 8, 32768, None),
    ("t3a.nano", 2, 512, None),
    ("t3a.micro", 2, 1024, None),
    ("t3a.small", 2, 2048, None),
    ("t3a.medium", 2, 4096, None),
    ("t3a.large", 2, 8192, None),
    ("t3a.xlarge", 4, 16384, None),
    ("t3a.2xlarge", 8, 32768, None),
    ("m5.large", 2, 8192, None),
    ("m5.xlarge", 4, 16384, None),
    ("m5.2xlarge", 8, 32768, None),
    ("m5.4xlarge", 16, 65536, None),
    ("m5.8xlarge", 32, 131072, None),
    ("m5.12xlarge", 48, 196608, None),
    ("m5.16xlarge", 64, 262144, None),
    ("m5.24xlarge", 96, 393216, None),
    ("m6i.large", 2, 8192, None),
    ("m6i.xlarge", 4, 16384, None),
    ("m6i.2xlarge", 8, 32768, None),
    ("m6i.4xlarge", 16, 65536, None),
    ("m6i.8xlarge", 32, 131072, None),
    ("m6i.12xlarge", 48, 196608, None),
    ("m6i.16xlarge", 64, 262144, None),
    ("m6i.24xlarge", 96, 393216, None),
    ("m6i.32xlarge", 128, 524288, None),
    ("c5.large", 2, 4096, None),
    ("c5.xlarge", 4, 8192, None),
    ("c5.2xlarge", 8, 16384, None),
    ("c5.4xlarge", 16, 32768, None),
    ("c5.9xlarge", 36, 73728, None),
    ("c5.12xlarge", 48, 98304, None),
    ("c5.18xlarge", 72, 147456, None),
    ("c5.24xlarge", 96, 196608, None),
    ("c6i.large", 2, 4096, None),
    ("c6i.xlarge", 4, 8192, None),
    ("c6i.2xlarge", 8, 16384, None),
    ("c6i.4xlarge", 16, 32768, None),
    ("c6i.8xlarge", 32, 65536, None),
    ("c6i.12xlarge", 48, 98304, None),
    ("c6i.16xlarge", 64, 131072, None),
    ("c6i.24xlarge", 96, 196608, None),
    ("c6i.32xlarge", 128, 262144, None),
    ("r5.large", 2, 16384, None),
    ("r5.xlarge", 4, 32768, None),
    ("r5.2xlarge", 8, 65536, None),
    ("r5.4xlarge", 16, 131072, None),
    ("g4dn.xlarge", 4, 16384, Some((1, "NVIDIA", "T4", 16384))),
    ("g4dn.2xlarge", 8, 32768, Some((1, "NVIDIA", "T4", 16384))),
    ("g4dn.4xlarge", 16, 65536, Some((1, "NVIDIA", "T4", 16384))),
    ("g4dn.8xlarge", 32, 131072, Some((1, "NVIDIA", "T4", 16384))),
    (
        "g4dn.12xlarge",
        48,
        196608,
        Some((4, "NVIDIA", "T4", 16384)),
    ),
    (
        "g4dn.16xlarge",
        64,
        262144,
        Some((1, "NVIDIA", "T4", 16384)),
    ),
    ("g4dn.metal", 96, 393216, Some((8, "NVIDIA", "T4", 16384))),
    ("g5.xlarge", 4, 16384, Some((1, "NVIDIA", "A10G", 22888))),
    ("g5.2xlarge", 8, 32768, Some((1, "NVIDIA", "A10G", 22888))),
    ("g5.4xlarge", 16, 65536, Some((1, "NVIDIA", "A10G", 22888))),
    ("g5.8xlarge", 32, 131072, Some((1, "NVIDIA", "A10G", 22888))),
    (
        "g5.12xlarge",
        48,
        196608,
        Some((4, "NVIDIA", "A10G", 22888)),
    ),
    (
        "g5.16xlarge",
        64,
        262144,
        Some((1, "NVIDIA", "A10G", 22888)),
    ),
    (
        "g5.24xlarge",
        96,
        393216,
        Some((4, "NVIDIA", "A10G", 22888)),
    ),
    (
        "g5.48xlarge",
        192,
        786432,
        Some((8, "NVIDIA", "A10G", 22888)),
    ),
    ("g6.xlarge", 4, 16384, Some((1, "NVIDIA", "L4", 22888))),
    ("g6.2xlarge", 8, 32768, Some((1, "NVIDIA", "L4", 22888))),
    ("g6.4xlarge", 16, 65536, Some((1, "NVIDIA", "L4", 22888))),
    ("g6.8xlarge", 32, 131072, Some((1, "NVIDIA", "L4", 22888))),
    ("g6.12xlarge", 48, 196608, Some((4, "NVIDIA", "L4", 22888))),
    ("g6.16xlarge", 64, 262144, Some((1, "NVIDIA", "L4", 22888))),
    ("g6.24xlarge", 96, 393216, Some((4, "NVIDIA", "L4", 22888))),
    ("g6.48xlarge", 192, 786432, Some((8, "NVIDIA", "L4", 22888))),
    ("g6e.xlarge", 4, 32768, Some((1, "NVIDIA", "L40S", 45776))),
    ("g6e.2xlarge", 8, 65536, Some((1, "NVIDIA", "L40S", 45776))),
    (
        "g6e.4xlarge",
        16,
        131072,
        Some((1, "NVIDIA", "L40S", 45776)),
    ),
    (
        "g6e.8xlarge",
        32,
        262144,
        Some((1, "NVIDIA", "L40S", 45776)),
    ),
    (
        "g6e.12xlarge",
        48,
        393216,
        Some((4, "NVIDIA", "L40S", 45776)),
    ),
    (
        "g6e.16xlarge",
        64,
        524288,
        Some((1, "NVIDIA", "L40S", 45776)),
    ),
    (
        "g6e.24xlarge",
        96,
        786432,
        Some((4, "NVIDIA", "L40S", 45776)),
    ),
    (
        "g6e.48xlarge",
        192,
        1572864,
        Some((8, "NVIDIA", "L40S", 45776)),
    ),
    (
        "p3dn.24xlarge",
        96,
        786432,
        Some((8, "NVIDIA", "V100", 32768)),
    ),
    (
        "p4d.24xlarge",
        96,
        1179648,
        Some((8, "NVIDIA", "A100", 40960)),
    ),
    (
        "p4de.24xlarge",
        96,
        1179648,
        Some((8, "NVIDIA", "A100", 81920)),
    ),
    (
        "p5.48xlarge",
        192,
        2097152,
        Some((8, "NVIDIA", "H100", 81920)),
    ),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_type_with_specs_has_a_price_and_gpu_types_name_their_gpus() {
        let cat = crate::ec2::builtin_catalogue();
        assert!(cat.len() >= 80);
        assert!(
            cat.iter()
                .all(|t| t.price_per_hour.is_some() && t.vcpus > 0)
        );
        let g4 = cat.iter().find(|t| t.name == "g4dn.xlarge").unwrap();
        assert_eq!((g4.vcpus, g4.memory_mb, g4.gpu_count()), (4, 16384, 1));
        assert_eq!(g4.gpu.as_ref().unwrap().model, "T4");
        let p4 = cat.iter().find(|t| t.name == "p4d.24xlarge").unwrap();
        assert_eq!(
            (p4.gpu_count(), p4.gpu.as_ref().unwrap().model.as_str()),
            (8, "A100")
        );
    }
}
