//! The container image `operator/image/build.sh` writes without a container engine: its
//! OCI layout and config, exactly the files it holds, and the binary running from its
//! root filesystem as user 65532 (with Debian's podman where it can run containers,
//! else chroot into the unpacked layer).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::Digest;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let data = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&data)),
        hex,
        "blob {digest} matches its digest"
    );
    data
}

fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let layout = dir.join("kelp-oci");
    let archive = dir.join("kelp.oci.tar");
    let out = Command::new(repo("operator/image/build.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_kelp"))
        .arg("--out")
        .arg(&layout)
        .args(["--tag", "kelp:test"])
        .arg("--archive")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (layout, archive)
}

#[test]
fn the_image_holds_kelp_its_libraries_and_ca_certificates_and_runs_as_65532() {
    let dir = std::env::temp_dir().join(format!("kelp-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (layout, archive) = build(&dir);

    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "kelp:test"
    );
    let manifest: Value =
        serde_json::from_slice(&blob(&layout, entry["digest"].as_str().unwrap())).unwrap();
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/kelp"]));
    assert_eq!(c["Cmd"], serde_json::json!(["run"]));
    assert_eq!(config["os"], "linux");

    // One layer; its uncompressed digest is the config's diff_id.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let gz = blob(&layout, layers[0]["digest"].as_str().unwrap());
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar_bytes))),
        config["rootfs"]["diff_ids"][0].as_str().unwrap()
    );
    let mut files = BTreeSet::new();
    let mut tar = tar::Archive::new(&tar_bytes[..]);
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.header().uid().unwrap(), 0);
        if entry.header().entry_type().is_file() {
            files.insert(entry.path().unwrap().to_string_lossy().into_owned());
        }
    }
    // Only kelp, the libraries it loads, the CA bundle and the user database: no shell,
    // no package manager, no second binary (the test API server is not a file of its own).
    let executables: Vec<&String> = files.iter().filter(|f| f.contains("bin/")).collect();
    assert_eq!(executables, vec!["usr/local/bin/kelp"], "{files:#?}");
    for f in [
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/group",
    ] {
        assert!(files.contains(f), "{f} missing: {files:#?}");
    }
    assert!(
        files.iter().any(|f| f.ends_with("/libc.so.6")),
        "{files:#?}"
    );
    let others: Vec<&String> = files
        .iter()
        .filter(|f| !f.starts_with("etc/") && !f.starts_with("lib") && *f != "usr/local/bin/kelp")
        .collect();
    assert!(others.is_empty(), "unexpected files: {others:?}");
    let passwd =
        std::fs::read_to_string(layout.with_extension("rootfs").join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");

    // The same inputs give the same image.
    let again = dir.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let (layout2, _) = build(&again);
    let index2: Value =
        serde_json::from_slice(&std::fs::read(layout2.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index2["manifests"][0]["digest"], entry["digest"],
        "the build is reproducible"
    );

    run_it(&layout, &archive);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kelp --version` and `kelp run --help` from the image, as user 65532.
fn run_it(layout: &Path, archive: &Path) {
    let version = format!("kelp {}", env!("CARGO_PKG_VERSION"));
    if Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        // podman takes the archive as an image...
        let load = Command::new("podman")
            .args(["load", "-i"])
            .arg(archive)
            .output()
            .unwrap();
        assert!(
            load.status.success(),
            "podman load: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        let loaded = String::from_utf8_lossy(&load.stdout).into_owned();
        let image = loaded
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("podman load said: {loaded}"))
            .trim()
            .to_string();
        let inspect = Command::new("podman")
            .args([
                "image",
                "inspect",
                "--format",
                "{{.Config.User}} {{json .Config.Entrypoint}}",
            ])
            .arg(&image)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&inspect.stdout).trim(),
            "65532:65532 [\"/usr/local/bin/kelp\"]"
        );
        // ...and runs it where this machine lets it run containers.
        let run = Command::new("podman")
            .args(["run", "--rm", &image, "--version"])
            .output()
            .unwrap();
        let _ = Command::new("podman").args(["rmi", "-f", &image]).output();
        if run.status.success() {
            assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), version);
            return;
        }
        eprintln!(
            "note: podman cannot run containers here ({}); running the image's root filesystem with chroot",
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    let rootfs = layout.with_extension("rootfs");
    let chroot = |args: &[&str]| {
        // From the host: the image has no chroot (nor anything but kelp).
        Command::new(if Path::new("/usr/sbin/chroot").exists() {
            "/usr/sbin/chroot"
        } else {
            "/usr/bin/chroot"
        })
        .arg("--userspec=65532:65532")
        .arg(&rootfs)
        .arg("/usr/local/bin/kelp")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin")
        .output()
    };
    match chroot(&["--version"]) {
        Ok(out) if out.status.success() => {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), version);
            let help = chroot(&["run", "--help"]).unwrap();
            assert!(String::from_utf8_lossy(&help.stdout).contains("--health-address"));
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("Operation not permitted") => {
            eprintln!("note: chroot needs root; the image's layout and config were checked");
        }
        other => panic!("kelp does not run from the image's root filesystem: {other:?}"),
    }
}

/// The image's binary is built without the `dev` feature, and that build links none of
/// the test API server (nor `kelp dev`), as cargo resolves it.
#[test]
fn the_release_build_links_no_test_server() {
    let tree = |features: &[&str]| {
        let out = Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "-p",
                "kelp-operator",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(features)
            .current_dir(repo(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(tree(&[]).contains("kelp-testapi"), "the dev build has it");
    let release = tree(&["--no-default-features"]);
    assert!(!release.contains("kelp-testapi"), "{release}");
    let script = std::fs::read_to_string(repo("operator/image/build.sh")).unwrap();
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    for (name, text) in [("build.sh", script), ("Dockerfile", dockerfile)] {
        assert!(
            text.lines()
                .any(|l| l.contains("cargo build --release") && l.contains("--no-default-features")),
            "{name} builds the release binary without the dev feature"
        );
    }
}
