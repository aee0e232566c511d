//! Real cloud peers for kelp's tests, started on 127.0.0.1 only.
//!
//! - [`start_moto`]: moto's EC2 server (`moto_server`, from the `moto[server]` PyPI
//!   package; `.ci/run` installs it into /var/tmp/kelp-venv) with a small catalogue of
//!   AMIs written here. Found via `KELP_MOTO_SERVER`, then
//!   `/var/tmp/kelp-venv/bin/moto_server`, then PATH; when it is missing,
//!   [`start_moto`] returns None with a note, or panics when `KELP_REQUIRE_MOTO` is set.
//! - [`oidc::Checkin`]: the EGI Check-in stand-in, an OIDC provider served in-process.
#![forbid(unsafe_code)]

pub mod oidc;
pub mod openstack;
pub mod proxy;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Canonical's AWS account (owner of the Ubuntu images).
pub const CANONICAL_OWNER: &str = "099720109477";
/// moto's default account, the owner of images registered "by us".
pub const SELF_ACCOUNT: &str = "123456789012";
/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// A running moto_server, killed on drop.
pub struct Moto {
    child: Child,
    /// The port moto listens on, on 127.0.0.1.
    pub port: u16,
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KELP_MOTO_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let venv = PathBuf::from("/var/tmp/kelp-venv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}

/// An AMI of the test catalogue, in moto's `MOTO_AMIS_PATH` format.
fn ami(id: &str, name: &str, owner: &str, created: &str, arch: &str) -> serde_json::Value {
    serde_json::json!({
        "ami_id": id,
        "name": name,
        "owner_id": owner,
        "creation_date": created,
        "state": "available",
        "public": true,
        "architecture": arch,
        "virtualization_type": "hvm",
        "root_device_type": "ebs",
        "root_device_name": "/dev/sda1",
        "image_type": "machine",
        "hypervisor": "xen",
        "description": name,
    })
}

/// The newest Canonical Ubuntu 24.04 amd64 image of the catalogue: the default.
pub const NOBLE_NEWEST: &str = "ami-0c0ffee000000002";

/// Like AWS: several Ubuntu builds and releases, an arm64 build, a non-LTS release
/// newer than the LTS ones, and a look-alike of a Canonical name from another account.
pub fn ami_catalogue() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let p = "ubuntu/images/hvm-ssd-gp3/ubuntu";
        let amis = serde_json::json!([
            ami(
                "ami-0c0ffee000000001",
                &format!("{p}-noble-24.04-amd64-server-20250110"),
                CANONICAL_OWNER,
                "2025-01-10T08:00:00.000Z",
                "x86_64"
            ),
            ami(
                NOBLE_NEWEST,
                &format!("{p}-noble-24.04-amd64-server-20250301"),
                CANONICAL_OWNER,
                "2025-03-01T08:00:00.000Z",
                "x86_64"
            ),
            ami(
                "ami-0c0ffee000000003",
                "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20250305",
                CANONICAL_OWNER,
                "2025-03-05T08:00:00.000Z",
                "x86_64"
            ),
            ami(
                "ami-0c0ffee000000004",
                &format!("{p}-plucky-25.04-amd64-server-20250420"),
                CANONICAL_OWNER,
                "2025-04-20T08:00:00.000Z",
                "x86_64"
            ),
            ami(
                "ami-0c0ffee000000005",
                &format!("{p}-noble-24.04-amd64-server-20250601"),
                "111122223333",
                "2025-06-01T08:00:00.000Z",
                "x86_64"
            ),
            ami(
                "ami-0c0ffee000000006",
                &format!("{p}-noble-24.04-arm64-server-20250501"),
                CANONICAL_OWNER,
                "2025-05-01T08:00:00.000Z",
                "arm64"
            ),
            ami(
                "ami-0c0ffee000000007",
                "kelp-gpu-node-v1",
                SELF_ACCOUNT,
                "2025-01-01T00:00:00.000Z",
                "x86_64"
            ),
            ami(
                "ami-0c0ffee000000008",
                "kelp-gpu-node-v2",
                SELF_ACCOUNT,
                "2025-02-01T00:00:00.000Z",
                "x86_64"
            ),
        ]);
        let path = std::env::temp_dir().join(format!("kelp-ec2-amis-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec_pretty(&amis).unwrap()).unwrap();
        path
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh moto_server, or None (with a note) when it is not installed.
pub async fn start_moto() -> Option<Moto> {
    let Some(bin) = moto_binary() else {
        if std::env::var_os("KELP_REQUIRE_MOTO").is_some() {
            panic!(
                "moto_server not found (KELP_MOTO_SERVER, /var/tmp/kelp-venv/bin, PATH) \
                 and KELP_REQUIRE_MOTO is set"
            );
        }
        eprintln!("note: moto_server not found; skipping this EC2 test");
        return None;
    };
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_AMIS_PATH", ami_catalogue())
        .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            // Listening is not serving: wait for a real answer.
            let req = "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
            let mut buf = Vec::new();
            if s.write_all(req.as_bytes()).await.is_ok()
                && s.read_to_end(&mut buf).await.is_ok()
                && buf.starts_with(b"HTTP/")
            {
                return Some(moto);
            }
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
