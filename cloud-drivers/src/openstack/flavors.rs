//! GPU facts of a flavor, read from its extra specs.
//!
//! EGI FedCloud sites agreed on the `Accelerator:*` properties (`Type`, `Number`,
//! `Vendor`, `Model`, `Memory`); flavor names differ per site and are never parsed.
//! Clouds that only set Nova's PCI passthrough alias (`pci_passthrough:alias =
//! "a100:2"`) or vGPU resources (`resources:VGPU = 1`) are understood as a fallback.

use std::collections::BTreeMap;

use crate::driver::GpuInfo;

/// Extra-spec keys of the EGI accelerator convention.
pub const ACCELERATOR_TYPE: &str = "Accelerator:Type";
pub const ACCELERATOR_NUMBER: &str = "Accelerator:Number";
pub const ACCELERATOR_VENDOR: &str = "Accelerator:Vendor";
pub const ACCELERATOR_MODEL: &str = "Accelerator:Model";
pub const ACCELERATOR_MEMORY: &str = "Accelerator:Memory";
/// Nova's PCI passthrough alias extra spec: `alias:count[,alias:count]`.
pub const PCI_ALIAS: &str = "pci_passthrough:alias";
/// Placement's vGPU resource request.
pub const VGPU: &str = "resources:VGPU";

/// GPU vendors recognised in alias and model names.
const VENDORS: [(&str, &str); 3] = [("nvidia", "NVIDIA"), ("amd", "AMD"), ("intel", "Intel")];
/// NVIDIA data-centre GPU names, for aliases that do not name the vendor.
const NVIDIA_MODELS: [&str; 14] = [
    "t4", "v100", "a100", "a30", "a40", "a10", "l4", "l40", "l40s", "h100", "h200", "p100", "rtx",
    "tesla",
];

/// The GPUs a flavor with these extra specs has; None for a flavor without GPUs.
pub fn gpu_from_extra_specs(specs: &BTreeMap<String, String>) -> Option<GpuInfo> {
    let get = |k: &str| {
        specs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let kind = get(ACCELERATOR_TYPE);
    let number = get(ACCELERATOR_NUMBER).and_then(parse_count);
    if kind.is_some() || number.is_some() {
        // Other accelerator kinds (FPGA, ...) are not GPUs.
        if kind.is_some_and(|k| !k.eq_ignore_ascii_case("gpu")) {
            return None;
        }
        let count = number.unwrap_or(1);
        if count == 0 {
            return None;
        }
        let model = get(ACCELERATOR_MODEL).unwrap_or_default().to_string();
        let vendor = get(ACCELERATOR_VENDOR)
            .map(normalise_vendor)
            .unwrap_or_else(|| vendor_of(&model).unwrap_or_default().to_string());
        let memory_mb = get(ACCELERATOR_MEMORY)
            .and_then(parse_memory_mb)
            .unwrap_or(0);
        return Some(GpuInfo {
            count,
            vendor,
            model,
            memory_mb,
        });
    }
    if let Some(alias) = get(PCI_ALIAS) {
        let mut count = 0;
        let mut names = Vec::new();
        for part in alias.split(',') {
            let (name, n) = match part.trim().rsplit_once(':') {
                Some((name, n)) => (name.trim(), parse_count(n).unwrap_or(1)),
                None => (part.trim(), 1),
            };
            if name.is_empty() {
                continue;
            }
            count += n;
            names.push(name.to_string());
        }
        if count > 0 {
            let model = names.join("+");
            return Some(GpuInfo {
                count,
                vendor: vendor_of(&model).unwrap_or_default().to_string(),
                model,
                memory_mb: 0,
            });
        }
    }
    if let Some(n) = get(VGPU).and_then(parse_count).filter(|n| *n > 0) {
        return Some(GpuInfo {
            count: n,
            vendor: "NVIDIA".into(),
            model: "vGPU".into(),
            memory_mb: 0,
        });
    }
    None
}

fn parse_count(s: &str) -> Option<u32> {
    s.trim().parse::<u32>().ok()
}

/// `NVIDIA`, `nvidia`, `NVIDIA Corporation` -> `NVIDIA`; others as given.
fn normalise_vendor(v: &str) -> String {
    let lower = v.to_ascii_lowercase();
    VENDORS
        .iter()
        .find(|(k, _)| lower.contains(k))
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| v.to_string())
}

fn vendor_of(model: &str) -> Option<&'static str> {
    let lower = model.to_ascii_lowercase();
    if let Some((_, name)) = VENDORS.iter().find(|(k, _)| lower.contains(k)) {
        return Some(name);
    }
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words
        .iter()
        .any(|w| {
            NVIDIA_MODELS.iter().any(|m| {
                w == m
                    || (w.starts_with(m)
                        && w[m.len()..].chars().all(|c| c.is_ascii_digit() || c == 'g'))
            })
        })
        .then_some("NVIDIA")
}

/// GPU memory in MiB from `16GB`, `16 GiB`, `16384MB`, `16384 MiB` or a bare number
/// (GiB when below 1024, MiB otherwise: sites write both `16` and `16384`).
pub fn parse_memory_mb(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let mb = match unit.as_str() {
        "" => {
            if value < 1024.0 {
                value * 1024.0
            } else {
                value
            }
        }
        "g" | "gb" | "gib" => value * 1024.0,
        "m" | "mb" | "mib" => value,
        "t" | "tb" | "tib" => value * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(mb.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn egi_accelerator_properties() {
        let g = gpu_from_extra_specs(&specs(&[
            ("Accelerator:Type", "GPU"),
            ("Accelerator:Number", "2"),
            ("Accelerator:Vendor", "NVIDIA Corporation"),
            ("Accelerator:Model", "Tesla V100-PCIE-32GB"),
            ("Accelerator:Memory", "32GB"),
        ]))
        .unwrap();
        assert_eq!(
            g,
            GpuInfo {
                count: 2,
                vendor: "NVIDIA".into(),
                model: "Tesla V100-PCIE-32GB".into(),
                memory_mb: 32768
            }
        );
    }

    #[test]
    fn accelerator_without_number_is_one_and_vendor_from_model() {
        let g = gpu_from_extra_specs(&specs(&[
            ("Accelerator:Type", "gpu"),
            ("Accelerator:Model", "A100"),
        ]))
        .unwrap();
        assert_eq!((g.count, g.vendor.as_str()), (1, "NVIDIA"));
    }

    #[test]
    fn non_gpu_accelerators_and_plain_flavors_have_no_gpu() {
        assert_eq!(
            gpu_from_extra_specs(&specs(&[("Accelerator:Type", "FPGA")])),
            None
        );
        assert_eq!(
            gpu_from_extra_specs(&specs(&[("hw:cpu_policy", "dedicated")])),
            None
        );
        assert_eq!(
            gpu_from_extra_specs(&specs(&[("Accelerator:Number", "0")])),
            None
        );
    }

    #[test]
    fn pci_alias_fallback() {
        let g = gpu_from_extra_specs(&specs(&[("pci_passthrough:alias", "V100:1")])).unwrap();
        assert_eq!(
            (g.count, g.vendor.as_str(), g.model.as_str()),
            (1, "NVIDIA", "V100")
        );
        let g =
            gpu_from_extra_specs(&specs(&[("pci_passthrough:alias", "a100:2, a100b:2")])).unwrap();
        assert_eq!(g.count, 4);
        let g = gpu_from_extra_specs(&specs(&[("pci_passthrough:alias", "mi210:1")])).unwrap();
        assert_eq!(g.vendor, "");
        let g = gpu_from_extra_specs(&specs(&[("resources:VGPU", "1")])).unwrap();
        assert_eq!((g.count, g.model.as_str()), (1, "vGPU"));
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory_mb("16GB"), Some(16384));
        assert_eq!(parse_memory_mb("16 GiB"), Some(16384));
        assert_eq!(parse_memory_mb("16"), Some(16384));
        assert_eq!(parse_memory_mb("15360"), Some(15360));
        assert_eq!(parse_memory_mb("15360MiB"), Some(15360));
        assert_eq!(parse_memory_mb("80 gb"), Some(81920));
        assert_eq!(parse_memory_mb("lots"), None);
    }
}
