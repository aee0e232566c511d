//! Secrets never reach the log, at any level: `kelp run` at `RUST_LOG=trace` runs the
//! Provision, Existing and EC2 flows, then its log is searched for every secret it handled
//! (the Cluster CA's and admin's private keys, the k3s join token, the kubeconfigs'
//! credentials, cloud credentials, storage passwords) and for their base64.

mod common;

use std::time::Duration;

use base64::Engine;
use common::process::KelpRun;
use kelp_crds::Cluster;
use kube::Api;

const NS: &str = "kelp-system";
const ACCESS_KEY_ID: &str = "AKIAKELPLOGSECRET017";
const SECRET_ACCESS_KEY: &str = "kelpLogSecret/AccessKey+0123456789abcdefXY";
const STORAGE_PASSWORD: &str = "s3cret pass";

/// Every form a secret could take in a log: as is, each line of it (PEM keys), and its
/// base64 (standard and URL-safe).
fn forms(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    for line in secret.lines() {
        let line = line.trim();
        if line.len() >= 16 && !line.starts_with("-----") {
            out.push(line.to_string());
        }
    }
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        let encoded = engine.encode(secret);
        out.push(encoded.trim_end_matches('=').to_string());
    }
    out.retain(|f| f.len() >= 8);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_is_logged_even_at_trace() {
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let endpoint = moto.endpoint();
    let (server, admin) = common::process::api_server(&[NS]).await;
    let apply = |yaml: String| {
        let admin = admin.clone();
        async move { common::process::apply(&admin, &yaml).await }
    };
    let op = KelpRun::start(
        &server.kubeconfig(),
        NS,
        &["--leader-election=false"],
        "trace",
    )
    .await;
    let kubelets = common::kubelets::register(admin.clone(), &endpoint);

    // Provision: kelp makes the CA, the admin certificate and the join token.
    apply(common::MODULE.to_string()).await;
    apply(common::SECRET.to_string()).await;
    apply(common::cluster("provisioned", 0, 1)).await;
    apply(common::deployment("detector", "provisioned", 1)).await;
    // EC2, with credentials from a Secret, on an Existing Kubernetes: a kubeconfig Secret
    // with the test server's admin token.
    apply(common::process::ec2_cluster(
        "on-ec2",
        &endpoint,
        1,
        (ACCESS_KEY_ID, SECRET_ACCESS_KEY),
        &server.kubeconfig(),
    ))
    .await;
    let clusters: Api<Cluster> = Api::namespaced(admin.clone(), "default");
    for _ in 0..900 {
        let ready = |name: &'static str| {
            let clusters = clusters.clone();
            async move { common::is_ready_cluster(&clusters.get(name).await.unwrap()) }
        };
        if ready("provisioned").await && ready("on-ec2").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in ["provisioned", "on-ec2"] {
        let c = clusters.get(name).await.unwrap();
        assert!(
            common::is_ready_cluster(&c),
            "{name}: {:#?}\n{}",
            c.status,
            op.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // Let a few resyncs and renders run at trace.
    tokio::time::sleep(Duration::from_secs(2)).await;
    kubelets.abort();
    let log = op.kill().await;
    if let Ok(path) = std::env::var("KELP_SECRETS_LOG") {
        std::fs::write(path, &log).unwrap();
    }
    assert!(
        log.len() > 10_000,
        "the trace log is there: {} bytes",
        log.len()
    );

    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(admin.clone(), "default");
    let pki =
        kelp_operator::targets::secret_data(&secrets.get("provisioned-kelp-pki").await.unwrap());
    let kubeconfig =
        kelp_operator::targets::secret_data(&secrets.get("provisioned-kubeconfig").await.unwrap());
    let mut secret_values: Vec<(String, String)> = vec![
        ("the Cluster CA's private key".into(), pki["ca.key"].clone()),
        ("the admin's private key".into(), pki["admin.key"].clone()),
        ("the k3s join token".into(), pki["token"].clone()),
        ("the EC2 access key ID".into(), ACCESS_KEY_ID.into()),
        ("the EC2 secret access key".into(), SECRET_ACCESS_KEY.into()),
        ("the storage password".into(), STORAGE_PASSWORD.into()),
        (
            "the API server's admin token".into(),
            server.admin_token().into(),
        ),
    ];
    // The provisioned Cluster's kubeconfig carries the admin key again, base64 inside YAML.
    let kc: serde_json::Value = serde_yaml_ng::from_str(&kubeconfig["value"]).unwrap();
    if let Some(key) = kc["users"][0]["user"]["client-key-data"].as_str() {
        secret_values.push(("the kubeconfig's client-key-data".into(), key.into()));
    }
    let mut found = Vec::new();
    for (what, value) in &secret_values {
        assert!(!value.is_empty(), "{what} is known");
        for form in forms(value) {
            if let Some(line) = log.lines().find(|l| l.contains(&form)) {
                found.push(format!(
                    "{what} ({} chars) in: {}",
                    form.len(),
                    &line[..line.len().min(300)]
                ));
                break;
            }
        }
    }
    assert!(
        found.is_empty(),
        "secrets in the trace log:\n{}",
        found.join("\n")
    );
}
