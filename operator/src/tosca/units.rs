//! TOSCA `scalar-unit.size` values (`4 GB`, `2048 MB`, `20 GiB`) and the units kelp's
//! machine requirements are in: memory in MiB and disks in GiB, the units clouds give
//! their flavors and instance types in (the fields are named `memoryMB` and `diskGB`).

/// Bytes in one of each TOSCA size unit; the unit is case-insensitive (TOSCA 1.0 §3.2.6).
const UNITS: &[(&str, f64)] = &[
    ("b", 1.0),
    ("kb", 1e3),
    ("kib", 1024.0),
    ("mb", 1e6),
    ("mib", 1048576.0),
    ("gb", 1e9),
    ("gib", 1073741824.0),
    ("tb", 1e12),
    ("tib", 1099511627776.0),
];

/// The number of bytes of a size such as `4 GB` or `20GiB`.
pub fn bytes(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (a number and a unit, e.g. 4 GB)"))?;
    let unit = unit.trim().to_ascii_lowercase();
    if unit.is_empty() {
        return Err(format!(
            "{text:?} has no unit (B, kB, KiB, MB, MiB, GB, GiB, TB, TiB)"
        ));
    }
    UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, f)| n * f)
        .ok_or_else(|| {
            format!("{text:?}: unknown size unit (B, kB, KiB, MB, MiB, GB, GiB, TB, TiB)")
        })
}

/// A size in MiB, rounded up (so that a minimum is never undercut).
pub fn mib(text: &str) -> Result<i64, String> {
    Ok((bytes(text)? / 1048576.0).ceil() as i64)
}

/// A size in GiB, rounded up.
pub fn gib(text: &str) -> Result<i64, String> {
    Ok((bytes(text)? / 1073741824.0).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(bytes("4 GB").unwrap(), 4e9);
        assert_eq!(bytes("20GiB").unwrap(), 20.0 * 1073741824.0);
        assert_eq!(bytes("2048 MB").unwrap(), 2.048e9);
        assert_eq!(bytes("1 TiB").unwrap(), 1099511627776.0);
        assert_eq!(bytes("0.5 gb").unwrap(), 5e8);
        assert_eq!(bytes("512 B").unwrap(), 512.0);
    }

    #[test]
    fn memory_and_disk_round_up_to_whole_units() {
        assert_eq!(mib("4 GB").unwrap(), 3815);
        assert_eq!(mib("2048 MB").unwrap(), 1954);
        assert_eq!(mib("4096 MiB").unwrap(), 4096);
        assert_eq!(mib("8 GiB").unwrap(), 8192);
        assert_eq!(gib("20 GiB").unwrap(), 20);
        assert_eq!(gib("50 GB").unwrap(), 47);
        assert_eq!(gib("0 GiB").unwrap(), 0);
    }

    #[test]
    fn bad_sizes_say_why() {
        assert!(bytes("4").unwrap_err().contains("no unit"));
        assert!(bytes("four GB").unwrap_err().contains("not a size"));
        assert!(bytes("4 GQ").unwrap_err().contains("unknown size unit"));
    }
}
