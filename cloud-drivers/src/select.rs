//! Instance type choice: which of a cloud's types can run a pool, cheapest first.
//!
//! Pure functions over the catalogue a driver returned, so every cloud picks the same
//! way and the choice is unit-tested without a cloud.

use std::cmp::Ordering;

use crate::driver::{InstanceType, Requirements};

/// How many offered names an "unknown instance type" error lists.
const OFFERED_SHOWN: usize = 6;
/// How many near misses a "nothing fits" error lists.
const CLOSEST_SHOWN: usize = 3;

/// No instance type meets the requirements. The message says what was asked and what
/// comes closest, on one line, so it can go straight into a condition or an Event.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum NoFit {
    /// The explicitly requested type is not offered by this cloud.
    #[error("instance type {name:?} is not offered by this cloud; offered: {offered}")]
    UnknownType {
        /// The requested name.
        name: String,
        /// A few names the cloud does offer (comma-separated).
        offered: String,
    },
    /// No offered type meets the requirements.
    #[error("no instance type has {wanted}; closest: {closest}")]
    NothingFits {
        /// The requirements, in words.
        wanted: String,
        /// The nearest misses and what they lack (or `none` for an empty catalogue).
        closest: String,
    },
}

impl NoFit {
    /// A short stable label for metrics and Events.
    pub fn label(&self) -> &'static str {
        match self {
            NoFit::UnknownType { .. } => "UnknownInstanceType",
            NoFit::NothingFits { .. } => "NoInstanceTypeFits",
        }
    }
}

/// Every type meeting `req`, cheapest first.
///
/// An explicit `req.instance_type` wins: the result is that type alone (matched
/// exactly, or case-insensitively when that is unambiguous), whatever the other
/// requirements say. Otherwise see [`fits`] for the rules. Ordering: priced types by
/// price before unpriced ones, then by (GPU count, vCPUs, memory) ascending, then
/// name, so the choice is deterministic.
pub fn candidates<'a>(
    types: &'a [InstanceType],
    req: &Requirements,
) -> Result<Vec<&'a InstanceType>, NoFit> {
    if let Some(name) = req.instance_type.as_deref() {
        return explicit(types, name).map(|t| vec![t]);
    }
    let mut fit: Vec<&InstanceType> = types.iter().filter(|t| fits(t, req)).collect();
    if fit.is_empty() {
        return Err(nothing_fits(types, req));
    }
    fit.sort_by(|a, b| order(a, b));
    Ok(fit)
}

/// The cheapest type meeting `req` (the first of [`candidates`]).
pub fn choose<'a>(
    types: &'a [InstanceType],
    req: &Requirements,
) -> Result<&'a InstanceType, NoFit> {
    candidates(types, req).map(|c| c[0])
}

/// Whether `t` meets `req`, ignoring `req.instance_type`.
///
/// - vCPUs and memory at least what is asked; disk too when both sides know it
///   (clouds that size the root volume per request leave `disk_gb` unset);
/// - `gpu_count == 0` accepts only CPU-only types, so a CPU pool never burns a GPU;
/// - otherwise at least `gpu_count` GPUs, vendor equal (ignoring case), model equal
///   or contained as a word (`A100` matches `A100-SXM4-40GB`, not `A1000`), and at
///   least `gpu_memory_mb` per GPU.
pub fn fits(t: &InstanceType, req: &Requirements) -> bool {
    misses(t, req).is_empty()
}

/// Whether a GPU model name matches a requested one: equal, or containing it as a
/// whole word, ignoring ASCII case.
pub fn model_matches(model: &str, wanted: &str) -> bool {
    let model = model.to_ascii_lowercase();
    let wanted = wanted.trim().to_ascii_lowercase();
    if wanted.is_empty() {
        return true;
    }
    let bytes = model.as_bytes();
    model.match_indices(&wanted).any(|(start, _)| {
        let end = start + wanted.len();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let after_ok = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        before_ok && after_ok
    })
}

fn explicit<'a>(types: &'a [InstanceType], name: &str) -> Result<&'a InstanceType, NoFit> {
    if let Some(t) = types.iter().find(|t| t.name == name) {
        return Ok(t);
    }
    let mut folded = types.iter().filter(|t| t.name.eq_ignore_ascii_case(name));
    if let (Some(t), None) = (folded.next(), folded.next()) {
        return Ok(t);
    }
    // Names sharing the requested prefix (`g4dn.` for `g4dn.xlarg`) help most; fall
    // back to the cheapest few.
    let family = name.split(['.', '-', '_']).next().unwrap_or(name);
    let mut sorted: Vec<&InstanceType> = types.iter().collect();
    sorted.sort_by(|a, b| order(a, b));
    let (mut shown, rest): (Vec<&InstanceType>, Vec<&InstanceType>) =
        sorted.into_iter().partition(|t| {
            !family.is_empty()
                && t.name
                    .to_ascii_lowercase()
                    .starts_with(&family.to_ascii_lowercase())
        });
    shown.extend(rest);
    Err(NoFit::UnknownType {
        name: name.to_string(),
        offered: list_names(shown.iter().map(|t| t.name.as_str()), types.len()),
    })
}

fn list_names<'a>(names: impl Iterator<Item = &'a str>, total: usize) -> String {
    let shown: Vec<&str> = names.take(OFFERED_SHOWN).collect();
    if shown.is_empty() {
        return "none".to_string();
    }
    let mut s = shown.join(", ");
    if total > shown.len() {
        s.push_str(&format!(" and {} more", total - shown.len()));
    }
    s
}

/// Deterministic cheapest-first order.
fn order(a: &InstanceType, b: &InstanceType) -> Ordering {
    let price = match (a.price_per_hour, b.price_per_hour) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    price
        .then_with(|| {
            (a.gpu_count(), a.vcpus, a.memory_mb).cmp(&(b.gpu_count(), b.vcpus, b.memory_mb))
        })
        .then_with(|| a.name.cmp(&b.name))
}

/// A requirement a type fails, with a weight for ranking near misses: a wrong GPU
/// model or vendor is farther off than a little too little memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Miss {
    Cpu,
    Memory,
    Disk,
    HasGpu,
    NoGpu,
    GpuCount,
    GpuVendor,
    GpuModel,
    GpuMemory,
}

impl Miss {
    fn weight(self) -> u32 {
        match self {
            Miss::GpuVendor | Miss::GpuModel => 2,
            // A type without GPUs misses every GPU requirement at once.
            Miss::NoGpu => 10,
            _ => 1,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Miss::Cpu => "too few vCPUs",
            Miss::Memory => "too little memory",
            Miss::Disk => "too small a disk",
            Miss::HasGpu => "has GPUs",
            Miss::NoGpu => "no GPUs",
            Miss::GpuCount => "too few GPUs",
            Miss::GpuVendor => "other GPU vendor",
            Miss::GpuModel => "other GPU model",
            Miss::GpuMemory => "too little GPU memory",
        }
    }
}

fn misses(t: &InstanceType, req: &Requirements) -> Vec<Miss> {
    let mut m = Vec::new();
    if req.cpu.is_some_and(|c| t.vcpus < c) {
        m.push(Miss::Cpu);
    }
    if req.memory_mb.is_some_and(|mb| t.memory_mb < mb) {
        m.push(Miss::Memory);
    }
    if let (Some(want), Some(has)) = (req.disk_gb, t.disk_gb)
        && has < want
    {
        m.push(Miss::Disk);
    }
    if req.gpu_count == 0 {
        if t.gpu_count() > 0 {
            m.push(Miss::HasGpu);
        }
        return m;
    }
    let Some(gpu) = t.gpu.as_ref().filter(|g| g.count > 0) else {
        m.push(Miss::NoGpu);
        return m;
    };
    if gpu.count < req.gpu_count {
        m.push(Miss::GpuCount);
    }
    if req
        .gpu_vendor
        .as_deref()
        .is_some_and(|v| !gpu.vendor.eq_ignore_ascii_case(v.trim()))
    {
        m.push(Miss::GpuVendor);
    }
    if req
        .gpu_model
        .as_deref()
        .is_some_and(|w| !model_matches(&gpu.model, w))
    {
        m.push(Miss::GpuModel);
    }
    if req.gpu_memory_mb.is_some_and(|mb| gpu.memory_mb < mb) {
        m.push(Miss::GpuMemory);
    }
    m
}

fn nothing_fits(types: &[InstanceType], req: &Requirements) -> NoFit {
    let mut scored: Vec<(u32, &InstanceType, Vec<Miss>)> = types
        .iter()
        .map(|t| {
            let m = misses(t, req);
            (m.iter().map(|x| x.weight()).sum(), t, m)
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| order(a.1, b.1)));
    let closest: Vec<String> = scored
        .iter()
        .take(CLOSEST_SHOWN)
        .map(|(_, t, m)| {
            let why: Vec<&str> = m.iter().map(|x| x.describe()).collect();
            format!("{} ({}: {})", t.name, describe_type(t), why.join(", "))
        })
        .collect();
    NoFit::NothingFits {
        wanted: describe_requirements(req),
        closest: if closest.is_empty() {
            "none (the cloud offers no instance types)".to_string()
        } else {
            closest.join("; ")
        },
    }
}

fn describe_type(t: &InstanceType) -> String {
    let mut s = format!("{} vCPU, {} MB", t.vcpus, t.memory_mb);
    if let Some(d) = t.disk_gb {
        s.push_str(&format!(", {d} GB disk"));
    }
    if let Some(g) = t.gpu.as_ref().filter(|g| g.count > 0) {
        s.push_str(&format!(
            ", {}x {} {} {} MB",
            g.count, g.vendor, g.model, g.memory_mb
        ));
    }
    s
}

fn describe_requirements(req: &Requirements) -> String {
    let mut parts = Vec::new();
    if let Some(c) = req.cpu {
        parts.push(format!(">= {c} vCPUs"));
    }
    if let Some(mb) = req.memory_mb {
        parts.push(format!(">= {mb} MB memory"));
    }
    if let Some(gb) = req.disk_gb {
        parts.push(format!(">= {gb} GB disk"));
    }
    if req.gpu_count == 0 {
        parts.push("no GPUs".to_string());
    } else {
        let mut g = req.gpu_count.to_string();
        for word in [req.gpu_vendor.as_deref(), req.gpu_model.as_deref()]
            .into_iter()
            .flatten()
        {
            g.push(' ');
            g.push_str(word.trim());
        }
        g.push_str(if req.gpu_count == 1 { " GPU" } else { " GPUs" });
        if let Some(mb) = req.gpu_memory_mb {
            g.push_str(&format!(" with >= {mb} MB each"));
        }
        parts.push(g);
    }
    match parts.len() {
        1 => parts.remove(0),
        _ => {
            let last = parts.pop().unwrap_or_default();
            format!("{} and {last}", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::GpuInfo;

    fn cpu(name: &str, vcpus: u32, memory_mb: u64, price: Option<f64>) -> InstanceType {
        InstanceType {
            name: name.into(),
            vcpus,
            memory_mb,
            disk_gb: None,
            gpu: None,
            price_per_hour: price,
        }
    }

    fn gpu(name: &str, count: u32, model: &str, mem: u64, price: Option<f64>) -> InstanceType {
        InstanceType {
            gpu: Some(GpuInfo {
                count,
                vendor: "NVIDIA".into(),
                model: model.into(),
                memory_mb: mem,
            }),
            ..cpu(name, 8 * count, 32768 * u64::from(count), price)
        }
    }

    fn catalogue() -> Vec<InstanceType> {
        vec![
            cpu("c.large", 2, 4096, Some(0.08)),
            cpu("c.small", 1, 2048, Some(0.02)),
            cpu("c.xlarge", 4, 16384, Some(0.20)),
            gpu("g4dn.xlarge", 1, "T4", 16384, Some(0.526)),
            gpu("g4dn.12xlarge", 4, "T4", 16384, Some(3.912)),
            gpu("p3.2xlarge", 1, "V100", 16384, Some(3.06)),
            gpu("p4d.24xlarge", 8, "A100-SXM4-40GB", 40960, Some(32.77)),
            gpu("a1000.box", 1, "RTX A1000", 8192, Some(0.3)),
        ]
    }

    fn names(v: &[&InstanceType]) -> Vec<String> {
        v.iter().map(|t| t.name.clone()).collect()
    }

    #[test]
    fn cheapest_fit_first() {
        let types = catalogue();
        let req = Requirements {
            cpu: Some(2),
            memory_mb: Some(4096),
            ..Default::default()
        };
        let c = candidates(&types, &req).unwrap();
        assert_eq!(names(&c), ["c.large", "c.xlarge"]);
        assert_eq!(choose(&types, &req).unwrap().name, "c.large");
    }

    #[test]
    fn gpu_count_zero_excludes_gpu_types() {
        let types = catalogue();
        let req = Requirements {
            cpu: Some(4),
            ..Default::default()
        };
        // g4dn.xlarge has 8 vCPUs in this catalogue and would fit by size alone.
        assert_eq!(names(&candidates(&types, &req).unwrap()), ["c.xlarge"]);
        let err = choose(
            &types,
            &Requirements {
                cpu: Some(64),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.label(), "NoInstanceTypeFits");
        assert!(err.to_string().contains("no GPUs"), "{err}");
    }

    #[test]
    fn gpu_vendor_model_memory() {
        let types = catalogue();
        let t4 = Requirements {
            gpu_count: 1,
            gpu_vendor: Some("nvidia".into()),
            gpu_model: Some("t4".into()),
            ..Default::default()
        };
        assert_eq!(
            names(&candidates(&types, &t4).unwrap()),
            ["g4dn.xlarge", "g4dn.12xlarge"]
        );
        let two = Requirements { gpu_count: 2, ..t4 };
        assert_eq!(names(&candidates(&types, &two).unwrap()), ["g4dn.12xlarge"]);

        // "A100" is a word of "A100-SXM4-40GB"; "A1000" is not the same word.
        let a100 = Requirements {
            gpu_count: 1,
            gpu_model: Some("A100".into()),
            ..Default::default()
        };
        assert_eq!(choose(&types, &a100).unwrap().name, "p4d.24xlarge");
        let a10 = Requirements {
            gpu_count: 1,
            gpu_model: Some("A10".into()),
            ..Default::default()
        };
        assert!(choose(&types, &a10).is_err());

        let big = Requirements {
            gpu_count: 1,
            gpu_memory_mb: Some(20000),
            ..Default::default()
        };
        assert_eq!(names(&candidates(&types, &big).unwrap()), ["p4d.24xlarge"]);

        let amd = Requirements {
            gpu_count: 1,
            gpu_vendor: Some("AMD".into()),
            ..Default::default()
        };
        assert!(choose(&types, &amd).is_err());
    }

    #[test]
    fn any_gpu_cheapest() {
        let types = catalogue();
        let any = Requirements {
            gpu_count: 1,
            ..Default::default()
        };
        assert_eq!(choose(&types, &any).unwrap().name, "a1000.box");
    }

    #[test]
    fn explicit_type_wins() {
        let types = catalogue();
        // Explicit beats the other requirements, even ones it does not meet.
        let req = Requirements {
            instance_type: Some("p3.2xlarge".into()),
            cpu: Some(1000),
            ..Default::default()
        };
        assert_eq!(names(&candidates(&types, &req).unwrap()), ["p3.2xlarge"]);
        let folded = Requirements {
            instance_type: Some("P3.2XLARGE".into()),
            ..Default::default()
        };
        assert_eq!(choose(&types, &folded).unwrap().name, "p3.2xlarge");
    }

    #[test]
    fn unknown_explicit_type() {
        let types = catalogue();
        let req = Requirements {
            instance_type: Some("g4dn.xlarg".into()),
            ..Default::default()
        };
        let err = choose(&types, &req).unwrap_err();
        assert_eq!(err.label(), "UnknownInstanceType");
        let msg = err.to_string();
        assert!(
            msg.starts_with("instance type \"g4dn.xlarg\" is not offered"),
            "{msg}"
        );
        // Same family first, then the cheapest others; capped.
        assert!(
            msg.contains("offered: g4dn.xlarge, g4dn.12xlarge, c.small"),
            "{msg}"
        );
        assert!(msg.ends_with("and 2 more"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn ordering_is_deterministic() {
        let types = vec![
            cpu("unpriced-small", 2, 4096, None),
            cpu("unpriced-big", 8, 4096, None),
            cpu("b", 4, 8192, Some(0.1)),
            cpu("a", 4, 8192, Some(0.1)),
            cpu("smaller-same-price", 2, 8192, Some(0.1)),
            cpu("pricey", 2, 4096, Some(1.0)),
        ];
        let c = candidates(&types, &Requirements::default()).unwrap();
        assert_eq!(
            names(&c),
            [
                "smaller-same-price",
                "a",
                "b",
                "pricey",
                "unpriced-small",
                "unpriced-big"
            ]
        );
    }

    #[test]
    fn disk_only_when_both_known() {
        let mut flavor = cpu("m1.small", 2, 4096, Some(0.05));
        flavor.disk_gb = Some(20);
        let ec2 = cpu("t3.medium", 2, 4096, Some(0.04));
        let types = vec![flavor, ec2];
        let req = Requirements {
            disk_gb: Some(50),
            ..Default::default()
        };
        assert_eq!(names(&candidates(&types, &req).unwrap()), ["t3.medium"]);
        let small = Requirements {
            disk_gb: Some(10),
            ..Default::default()
        };
        assert_eq!(
            names(&candidates(&types, &small).unwrap()),
            ["t3.medium", "m1.small"]
        );
    }

    #[test]
    fn no_fit_message_names_closest() {
        let types = catalogue();
        let req = Requirements {
            gpu_count: 2,
            gpu_vendor: Some("NVIDIA".into()),
            gpu_model: Some("A100".into()),
            gpu_memory_mb: Some(80000),
            ..Default::default()
        };
        let msg = choose(&types, &req).unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "no instance type has 2 NVIDIA A100 GPUs with >= 80000 MB each; closest: \
                 p4d.24xlarge (64 vCPU, 262144 MB, 8x NVIDIA A100-SXM4-40GB 40960 MB: too little GPU memory)"
            ),
            "{msg}"
        );
        assert!(!msg.contains('\n'));

        let sized = Requirements {
            cpu: Some(4),
            memory_mb: Some(1 << 20),
            ..Default::default()
        };
        let msg = choose(&types, &sized).unwrap_err().to_string();
        assert!(
            msg.starts_with("no instance type has >= 4 vCPUs, >= 1048576 MB memory and no GPUs;"),
            "{msg}"
        );

        let msg = choose(&[], &sized).unwrap_err().to_string();
        assert!(
            msg.ends_with("closest: none (the cloud offers no instance types)"),
            "{msg}"
        );
    }

    #[test]
    fn model_word_match() {
        assert!(model_matches("A100-SXM4-40GB", "a100"));
        assert!(model_matches("Tesla T4", "T4"));
        assert!(model_matches("H100", "H100"));
        assert!(model_matches("A100-SXM4-40GB", "A100-SXM4"));
        assert!(!model_matches("A1000", "A100"));
        assert!(!model_matches("A100", "A10"));
        assert!(!model_matches("RTX4090", "T4"));
    }
}
