//! kelp's own check of rendered user-data: `cloud-init schema` validates the values of
//! the keys it knows but says nothing about a key it does not know, so a misspelt
//! `packges:` would be ignored on the machine. kelp refuses any top-level key that is
//! not in [`KNOWN_CLOUD_CONFIG_KEYS`].

use serde_yaml_ng::Value;

use crate::CLOUD_CONFIG_HEADER;

/// The top-level `#cloud-config` keys kelp accepts: those of the cloud-init modules
/// that matter on the Ubuntu/Debian machines kelp starts (every key the built-in
/// recipes use, plus the common ones a user recipe may need). Each is a key of
/// cloud-init's own schema. Sorted; documented in `docs/recipes.md`.
///
/// Deliberately left out: deprecated spellings (`apt_update`, `apt_upgrade`,
/// `apt_reboot_if_required`, `ca-certs`, `grub-dpkg`), other distributions' package
/// managers (`yum_repos`, `zypper`, `apk_repos`, `rh_subscription`, `spacewalk`),
/// configuration-management agents (`chef`, `puppet`, `salt_minion`, `mcollective`,
/// `landscape`), and keys that change cloud-init itself (`cloud_init_modules`,
/// `cloud_config_modules`, `cloud_final_modules`, `vendor_data`, `reporting`,
/// `merge_how`, `merge_type`): kelp merges the parts of all recipes itself.
pub const KNOWN_CLOUD_CONFIG_KEYS: &[&str] = &[
    "allow_public_ssh_keys",
    "ansible",
    "apt",
    "apt_pipelining",
    "bootcmd",
    "byobu_by_default",
    "ca_certs",
    "chpasswd",
    "device_aliases",
    "disable_ec2_metadata",
    "disable_root",
    "disable_root_opts",
    "disk_setup",
    "drivers",
    "fan",
    "final_message",
    "fqdn",
    "fs_setup",
    "groups",
    "growpart",
    "grub_dpkg",
    "hostname",
    "keyboard",
    "locale",
    "locale_configfile",
    "lxd",
    "manage_etc_hosts",
    "manage_resolv_conf",
    "mount_default_fields",
    "mounts",
    "no_ssh_fingerprints",
    "ntp",
    "package_reboot_if_required",
    "package_update",
    "package_upgrade",
    "packages",
    "password",
    "phone_home",
    "power_state",
    "prefer_fqdn_over_hostname",
    "preserve_hostname",
    "random_seed",
    "resize_rootfs",
    "resolv_conf",
    "rsyslog",
    "runcmd",
    "snap",
    "ssh",
    "ssh_authorized_keys",
    "ssh_deletekeys",
    "ssh_fp_console_blacklist",
    "ssh_genkeytypes",
    "ssh_import_id",
    "ssh_key_console_blacklist",
    "ssh_keys",
    "ssh_publish_hostkeys",
    "ssh_pwauth",
    "ssh_quiet_keygen",
    "swap",
    "timezone",
    "ubuntu_advantage",
    "ubuntu_pro",
    "user",
    "users",
    "wireguard",
    "write_files",
];

/// Whether `key` may appear at the top level of kelp's user-data.
pub fn is_known_cloud_config_key(key: &str) -> bool {
    KNOWN_CLOUD_CONFIG_KEYS.binary_search(&key).is_ok()
}

/// Why a user-data document is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// The text does not start with the `#cloud-config` line.
    #[error("user-data must start with the line #cloud-config")]
    MissingHeader,
    /// The text is not YAML.
    #[error("not YAML: {0}")]
    NotYaml(String),
    /// The document is YAML but not a mapping.
    #[error("a cloud-config must be a YAML mapping")]
    NotMapping,
    /// A top-level key that is not in [`KNOWN_CLOUD_CONFIG_KEYS`].
    #[error("unknown cloud-config key {key:?}{}", did_you_mean(.suggestion))]
    UnknownKey {
        /// The key as written (non-string keys in their YAML form).
        key: String,
        /// The closest known key, when one is close.
        suggestion: Option<String>,
    },
}

pub(crate) fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => " (not a cloud-init module key kelp accepts; see KNOWN_CLOUD_CONFIG_KEYS)".into(),
    }
}

/// Checks rendered user-data: the `#cloud-config` line, YAML, a mapping (an empty
/// document counts as an empty mapping), and every top-level key in
/// [`KNOWN_CLOUD_CONFIG_KEYS`]. The values are cloud-init's business
/// (`cloud-init schema --config-file`).
pub fn validate_user_data(text: &str) -> Result<(), UserDataError> {
    if !text.starts_with(CLOUD_CONFIG_HEADER) {
        return Err(UserDataError::MissingHeader);
    }
    let doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| UserDataError::NotYaml(e.to_string()))?;
    check_keys(&doc)
}

/// The key check of [`validate_user_data`] on a parsed document (one recipe part).
pub(crate) fn check_keys(doc: &Value) -> Result<(), UserDataError> {
    let map = match doc {
        Value::Null => return Ok(()),
        Value::Mapping(m) => m,
        _ => return Err(UserDataError::NotMapping),
    };
    for key in map.keys() {
        let text = match key {
            Value::String(s) => s.clone(),
            other => serde_yaml_ng::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if !matches!(key, Value::String(_)) || !is_known_cloud_config_key(&text) {
            return Err(UserDataError::UnknownKey {
                suggestion: closest(&text),
                key: text,
            });
        }
    }
    Ok(())
}

/// The known key closest to `key` by edit distance, when at most 2 edits away.
fn closest(key: &str) -> Option<String> {
    let key = key.to_ascii_lowercase().replace('-', "_");
    KNOWN_CLOUD_CONFIG_KEYS
        .iter()
        .map(|k| (distance(&key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_is_sorted_and_unique() {
        assert!(KNOWN_CLOUD_CONFIG_KEYS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn validation() {
        assert_eq!(validate_user_data("#cloud-config\n"), Ok(()));
        assert_eq!(validate_user_data("#cloud-config\n{}\n"), Ok(()));
        assert_eq!(
            validate_user_data("#cloud-config\npackages: [a]\nruncmd: [b]\n"),
            Ok(())
        );
        assert_eq!(
            validate_user_data("packages: [a]\n"),
            Err(UserDataError::MissingHeader)
        );
        assert!(matches!(
            validate_user_data("#cloud-config\npackages: [a\n"),
            Err(UserDataError::NotYaml(_))
        ));
        assert_eq!(
            validate_user_data("#cloud-config\n- runcmd\n"),
            Err(UserDataError::NotMapping)
        );
        let err = validate_user_data("#cloud-config\npackges: [a]\n").unwrap_err();
        assert_eq!(
            err,
            UserDataError::UnknownKey {
                key: "packges".into(),
                suggestion: Some("packages".into())
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown cloud-config key \"packges\" (did you mean \"packages\"?)"
        );
        let err = validate_user_data("#cloud-config\nkubernetes: {}\n").unwrap_err();
        assert!(
            err.to_string().contains("\"kubernetes\" (not a cloud-init"),
            "{err}"
        );
        assert!(matches!(
            validate_user_data("#cloud-config\n1: x\n"),
            Err(UserDataError::UnknownKey { key, .. }) if key == "1"
        ));
        assert!(matches!(
            validate_user_data("#cloud-config\nwrite-files: []\n"),
            Err(UserDataError::UnknownKey { suggestion: Some(s), .. }) if s == "write_files"
        ));
    }
}
