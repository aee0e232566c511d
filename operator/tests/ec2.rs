//! Clusters on EC2, against moto's EC2 server on 127.0.0.1 (never AWS). The machines'
//! kubelets are played by a task that registers a Node for every running instance, as
//! the k3s agent in their user-data would.

mod common;

use std::time::Duration;

use common::*;
use kelp_cloud_drivers::{CloudDriver, MachineState, tags};
use kelp_crds::Cluster;

use common::kubelets::driver;

/// Registers a Ready Node for every running kelp instance, like a k3s agent joining.
fn kubelets(h: &Harness, endpoint: &str) -> tokio::task::JoinHandle<()> {
    common::kubelets::register(h.client.clone(), endpoint)
}

fn ec2_cluster(name: &str, endpoint: &str, t4: u32, a10g: u32) -> String {
    format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  cloud:
    ec2: {{region: us-east-1, endpointUrl: "{endpoint}", credentialsSecretRef: {{name: aws}}}}
  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: self-kubeconfig}}}}
  nodePools:
    - {{name: t4, replicas: {t4}, machine: {{cpu: 4, diskGB: 80, gpu: {{count: 1, vendor: NVIDIA, model: T4}}}}}}
    - {{name: a10g, replicas: {a10g}, machine: {{cpu: 4, gpu: {{count: 1, model: A10G}}}}}}
"#
    )
}

async fn secrets(h: &Harness) {
    h.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: aws}\nstringData: {accessKeyId: testing, secretAccessKey: testing}\n",
    )
    .await;
    h.apply_self_kubeconfig().await;
}

async fn instances(endpoint: &str, uid: &str) -> Vec<kelp_cloud_drivers::Machine> {
    let mut t = std::collections::BTreeMap::new();
    t.insert(tags::CLUSTER_UID.to_string(), uid.to_string());
    driver(endpoint).list(&t).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec2_cluster_with_two_gpu_pools_becomes_ready_scales_and_is_deleted() {
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let endpoint = moto.endpoint();
    let mut h = Harness::new().await;
    // Drift in the cloud is repaired at the resync; short here.
    h.env.config.resync = Duration::from_secs(1);
    h.start();
    secrets(&h).await;
    let kubelets = kubelets(&h, &endpoint);
    h.apply_yaml(&ec2_cluster("gpu", &endpoint, 2, 1)).await;
    let c = h.cluster_ready("gpu").await;
    let uid = kube::ResourceExt::uid(&c).unwrap();
    let st = c.status.unwrap();
    let t4 = st.node_pools.iter().find(|p| p.name == "t4").unwrap();
    let a10g = st.node_pools.iter().find(|p| p.name == "a10g").unwrap();
    assert!(
        t4.instance_type.as_deref().unwrap().starts_with("g4dn."),
        "{t4:?}"
    );
    assert!(
        a10g.instance_type.as_deref().unwrap().starts_with("g5."),
        "{a10g:?}"
    );
    assert!(t4.price_per_hour.is_some());

    // moto holds exactly the instances asked for, with kelp's tags and the rendered user-data.
    let found = instances(&endpoint, &uid).await;
    assert_eq!(found.len(), 3, "{found:?}");
    let d = driver(&endpoint);
    for m in &found {
        assert_eq!(m.tags[tags::MANAGED_BY], "kelp");
        assert_eq!(m.tags[tags::CLUSTER], "default/gpu");
        let pool = &m.tags[tags::POOL];
        let want = if pool == "t4" { "g4dn." } else { "g5." };
        assert!(m.instance_type.starts_with(want), "{m:?}");
        assert!(m.provider_id.starts_with("aws:///"), "{}", m.provider_id);
        let attr = d
            .client()
            .describe_instance_attribute()
            .instance_id(&m.id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let b64 = attr
            .user_data()
            .and_then(|v| v.value())
            .unwrap()
            .to_string();
        use base64::Engine;
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        assert!(
            text.contains("nvidia-container-toolkit") && text.contains(&h.server.url()),
            "agent joins the existing cluster"
        );
        if pool == "t4" {
            // machine.diskGB sizes the root volume.
            let filter = aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(&m.id)
                .build();
            let vols = d
                .client()
                .describe_volumes()
                .filters(filter)
                .send()
                .await
                .unwrap();
            let sizes: Vec<i32> = vols.volumes().iter().filter_map(|v| v.size()).collect();
            assert!(sizes.contains(&80), "root volume sizes {sizes:?}");
        }
    }

    // Scale: t4 down to 1, a10g up to 2.
    h.patch_spec::<Cluster>("gpu", serde_json::json!({"nodePools": [
        {"name": "t4", "replicas": 1, "machine": {"cpu": 4, "diskGB": 80, "gpu": {"count": 1, "vendor": "NVIDIA", "model": "T4"}}},
        {"name": "a10g", "replicas": 2, "machine": {"cpu": 4, "gpu": {"count": 1, "model": "A10G"}}},
    ]}))
    .await;
    h.cluster_ready("gpu").await;
    let found = instances(&endpoint, &uid).await;
    let count = |p: &str| {
        found
            .iter()
            .filter(|m| m.tags[tags::POOL] == p && m.state != MachineState::Terminating)
            .count()
    };
    assert_eq!((count("t4"), count("a10g")), (1, 2), "{found:?}");

    // An instance deleted out of band is replaced at the next resync.
    let victim = found
        .iter()
        .find(|m| m.tags[tags::POOL] == "a10g")
        .unwrap()
        .id
        .clone();
    d.delete(std::slice::from_ref(&victim)).await.unwrap();
    h.wait::<Cluster>("gpu", "replaced", |c| {
        c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.node_pools.iter().any(|p| {
                p.name == "a10g"
                    && p.machines.iter().all(|m| {
                        !m.provider_id
                            .as_deref()
                            .unwrap_or_default()
                            .ends_with(&victim)
                    })
                    && p.machines.len() == 2
            })
        })
    })
    .await;

    // Delete (one instance already terminated out of band: not an error): every
    // instance terminated, then the finalizer goes.
    let one = instances(&endpoint, &uid).await[0].id.clone();
    d.delete(std::slice::from_ref(&one)).await.unwrap();
    h.delete::<Cluster>("gpu").await;
    h.wait::<Cluster>("gpu", "gone", |c| c.is_none()).await;
    assert!(instances(&endpoint, &uid).await.is_empty());
    kubelets.abort();
    h.stop().await;
}

async fn stalled_message(h: &Harness, name: &str) -> String {
    let c = h
        .wait::<Cluster>(name, "Stalled", |c| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| kelp_operator::conditions::is_true(&s.conditions, "Stalled"))
        })
        .await
        .unwrap();
    kelp_operator::conditions::get(&c.status.unwrap().conditions, "Stalled")
        .unwrap()
        .message
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ec2_input_stalls_with_the_problem_named_and_starts_nothing() {
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let endpoint = moto.endpoint();
    let mut h = Harness::new().await;
    h.start();
    secrets(&h).await;
    h.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: half}\nstringData: {accessKeyId: testing}\n")
        .await;
    let base = ec2_cluster("x", &endpoint, 1, 0);

    h.apply_yaml(
        &base
            .replace("name: x}", "name: no-secret}")
            .replace("{name: aws}", "{name: nope}"),
    )
    .await;
    let msg = stalled_message(&h, "no-secret").await;
    assert!(
        msg.contains("spec.cloud.ec2.credentialsSecretRef")
            && msg.contains("nope")
            && msg.contains("not found"),
        "{msg}"
    );

    h.apply_yaml(
        &base
            .replace("name: x}", "name: no-keys}")
            .replace("{name: aws}", "{name: half}"),
    )
    .await;
    let msg = stalled_message(&h, "no-keys").await;
    assert!(msg.contains("secretAccessKey"), "{msg}");

    // No endpoint: the region is refused before any request leaves the machine.
    h.apply_yaml(
        &base
            .replace("name: x}", "name: moon}")
            .replace(&format!("endpointUrl: \"{endpoint}\", "), "")
            .replace("region: us-east-1", "region: moon-1"),
    )
    .await;
    let msg = stalled_message(&h, "moon").await;
    assert!(msg.contains("moon-1"), "{msg}");

    // A typo of a region (moto answers such a region with HTTP 500): Stalled, naming
    // the field, and deleted without the cloud.
    h.apply_yaml(
        &base
            .replace("name: x}", "name: typo}")
            .replace("region: us-east-1", "region: eu-central-9"),
    )
    .await;
    let msg = stalled_message(&h, "typo").await;
    assert!(
        msg.contains("spec.cloud.ec2.region") && msg.contains("eu-central-9"),
        "{msg}"
    );
    h.delete::<Cluster>("typo").await;
    h.wait::<Cluster>("typo", "deleted", |c| c.is_none()).await;

    h.apply_yaml(&base.replace("name: x}", "name: no-ami}").replace(
        "- {name: t4, replicas: 1, machine:",
        "- {name: t4, replicas: 1, image: ami-0123456789abcdef0, machine:",
    ))
    .await;
    let msg = stalled_message(&h, "no-ami").await;
    assert!(msg.contains("ami-0123456789abcdef0"), "{msg}");

    // Nothing was started for any of them.
    let mut managed = std::collections::BTreeMap::new();
    managed.insert(tags::MANAGED_BY.to_string(), "kelp".to_string());
    assert!(driver(&endpoint).list(&managed).await.unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_run_instances_is_sent_never_doubles_instances() {
    use kelp_test_peers::proxy::{Fault, Proxy};
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    // moto starts the instances, but the operator never sees the answer.
    proxy.fail(
        "RunInstances",
        Fault::ForwardThenStall(Duration::from_secs(60)),
    );
    let mut h = Harness::new().await;
    secrets(&h).await;
    let kubelets = kubelets(&h, &moto.endpoint());
    h.apply_yaml(&ec2_cluster("crash", &proxy.endpoint(), 3, 0))
        .await;
    h.start();
    let uid = loop {
        let c = h.api::<Cluster>().get("crash").await.unwrap();
        if proxy.count("RunInstances") == 1 {
            break kube::ResourceExt::uid(&c).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..200 {
        if instances(&moto.endpoint(), &uid).await.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        instances(&moto.endpoint(), &uid).await.len(),
        3,
        "moto started the batch"
    );
    h.crash().await;

    // A new operator lists by tags first and adopts them (moto ignores ClientToken, so
    // the idempotency key alone would not have saved us).
    h.start();
    let c = h.cluster_ready("crash").await;
    assert_eq!(c.status.unwrap().ready.as_deref(), Some("3/3"));
    assert_eq!(
        instances(&moto.endpoint(), &uid).await.len(),
        3,
        "no duplicates"
    );
    assert_eq!(proxy.count("RunInstances"), 1, "{:?}", proxy.summary());
    kubelets.abort();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_with_a_bounded_number_of_calls() {
    use kelp_test_peers::proxy::{Fault, Proxy};
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    for _ in 0..2 {
        proxy.fail("RunInstances", Fault::Error(400, "RequestLimitExceeded"));
        proxy.fail("DescribeInstances", Fault::Error(503, "InternalError"));
        proxy.fail("DescribeInstances", Fault::Bare503);
    }
    proxy.fail("DescribeInstanceTypes", Fault::Error(503, "Unavailable"));
    let mut h = Harness::new().await;
    secrets(&h).await;
    let kubelets = kubelets(&h, &moto.endpoint());
    h.apply_yaml(&ec2_cluster("faulty", &proxy.endpoint(), 2, 1))
        .await;
    h.start();
    let c = h.cluster_ready("faulty").await;
    let uid = kube::ResourceExt::uid(&c).unwrap();
    assert_eq!(
        instances(&moto.endpoint(), &uid).await.len(),
        3,
        "converged, nothing doubled"
    );
    let calls = proxy.total();
    println!(
        "EC2 calls with 7 injected faults: {calls} {:?}",
        proxy.summary()
    );
    // Bounded: the reconciles while machines boot, each listing the pools, plus the
    // wake-up from each batch's pendingCreates record.
    assert!(calls < 120, "bounded: {calls} calls {:?}", proxy.summary());
    assert_eq!(
        proxy.count("RunInstances"),
        2 + 2,
        "two throttled, then one batch per pool"
    );
    kubelets.abort();
    h.stop().await;
}

/// EC2 lists new instances only after a while, and an EC2-compatible endpoint may drop
/// ClientToken: the proxy does both (new instances hidden for 1.5 s). kelp records each
/// batch before sending it and sends it once, with and without a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_lists_late_and_drops_client_token_gets_each_batch_once() {
    use kelp_test_peers::proxy::Proxy;
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    proxy.lag(Duration::from_millis(1500));
    let mut h = Harness::new().await;
    secrets(&h).await;
    let kubelets = kubelets(&h, &moto.endpoint());
    h.apply_yaml(&ec2_cluster("late", &proxy.endpoint(), 3, 0))
        .await;
    h.start();
    let c = h.cluster_ready("late").await;
    let uid = kube::ResourceExt::uid(&c).unwrap();
    assert_eq!(instances(&moto.endpoint(), &uid).await.len(), 3);
    assert_eq!(proxy.count("RunInstances"), 1, "{:?}", proxy.summary());

    // Scale up, and crash as soon as the batch is sent, then again while it is hidden.
    h.apply_yaml(&ec2_cluster("late", &proxy.endpoint(), 5, 0))
        .await;
    for _ in 0..400 {
        if proxy.count("RunInstances") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(proxy.count("RunInstances"), 2);
    // The proxy really hides the new batch from lists (moto already has it).
    assert_eq!(instances(&proxy.endpoint(), &uid).await.len(), 3);
    assert_eq!(instances(&moto.endpoint(), &uid).await.len(), 5);
    h.crash().await;
    h.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.crash().await;
    h.start();
    let c = h.cluster_ready_with("late", "5/5").await;
    assert!(c.status.unwrap().pending_creates.is_empty());
    assert_eq!(
        instances(&moto.endpoint(), &uid).await.len(),
        5,
        "no duplicates"
    );
    assert_eq!(proxy.count("RunInstances"), 2, "{:?}", proxy.summary());
    kubelets.abort();
    h.stop().await;
}

/// The values of the `<prefix>.<n>` parameters of one EC2 request.
fn values(params: &[(String, String)], prefix: &str) -> std::collections::BTreeSet<String> {
    params
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|(_, v)| v.clone())
        .collect()
}

/// Clusters of one account and region read the instance-type catalogue once between
/// them; a Cluster whose pools all name their type reads only those types; a named
/// type EC2 does not offer still stalls naming what it offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_share_one_catalogue_and_named_pools_read_only_their_types() {
    use kelp_test_peers::proxy::Proxy;
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    let endpoint = proxy.endpoint();
    let mut h = Harness::new().await;
    secrets(&h).await;
    let kubelets = kubelets(&h, &moto.endpoint());
    h.apply_yaml(&ec2_cluster("first", &endpoint, 1, 0)).await;
    h.apply_yaml(&ec2_cluster("second", &endpoint, 1, 0)).await;
    h.start();
    h.cluster_ready("first").await;
    h.cluster_ready("second").await;
    assert_eq!(
        (
            proxy.count("DescribeInstanceTypeOfferings"),
            proxy.count("DescribeInstanceTypes")
        ),
        (1, 1),
        "one catalogue read for both: {:?}",
        proxy.summary()
    );

    // Another access key: its own catalogue, of the named types alone.
    h.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: aws-named}\nstringData: {accessKeyId: named, secretAccessKey: testing}\n",
    )
    .await;
    let named = |name: &str, t4: &str| {
        format!(
            r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  cloud:
    ec2: {{region: us-east-1, endpointUrl: "{endpoint}", credentialsSecretRef: {{name: aws-named}}}}
  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: self-kubeconfig}}}}
  nodePools:
    - {{name: t4, replicas: 1, machine: {{instanceType: {t4}}}}}
    - {{name: a10g, replicas: 0, machine: {{instanceType: g5.xlarge}}}}
"#
        )
    };
    h.apply_yaml(&named("named", "g4dn.xlarge")).await;
    let c = h.cluster_ready("named").await;
    let st = c.status.unwrap();
    let t4 = st.node_pools.iter().find(|p| p.name == "t4").unwrap();
    assert_eq!(t4.instance_type.as_deref(), Some("g4dn.xlarge"));
    assert_eq!(t4.price_per_hour, Some(0.526));
    let described = proxy.params("DescribeInstanceTypes");
    assert_eq!(described.len(), 2, "{:?}", proxy.summary());
    assert_eq!(
        values(&described[1], "InstanceType"),
        ["g4dn.xlarge", "g5.xlarge"].map(String::from).into(),
        "the named types only"
    );
    let offerings = proxy.params("DescribeInstanceTypeOfferings");
    assert_eq!(offerings.len(), 2);
    assert!(
        offerings[1].contains(&("Filter.1.Name".into(), "instance-type".into())),
        "{:?}",
        offerings[1]
    );

    // A type EC2 does not offer: the whole catalogue is read for the message.
    h.apply_yaml(&named("typo", "g4dn.xlarg")).await;
    let msg = stalled_message(&h, "typo").await;
    assert!(
        msg.contains("instance type \"g4dn.xlarg\" is not offered by this cloud; offered: g4dn.")
            && msg.contains(" more"),
        "{msg}"
    );
    // The narrow read (g5.xlarge is offered, the typo is not), then the whole one.
    let described = proxy.params("DescribeInstanceTypes");
    assert_eq!(described.len(), 4, "{:?}", proxy.summary());
    assert_eq!(
        values(&described[2], "InstanceType"),
        ["g5.xlarge".to_string()].into()
    );
    assert!(values(&described[3], "InstanceType").is_empty());
    kubelets.abort();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelp_plan_asks_ec2_for_its_types_and_prices_and_creates_nothing() {
    use kelp_test_peers::proxy::Proxy;
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    // Every EC2 request goes through the proxy, which records its Action.
    let proxy = Proxy::start(moto.port).await;
    let endpoint = proxy.endpoint();
    let h = Harness::new().await;
    secrets(&h).await;
    let written_before = h.server.store().resource_version();
    let dir = std::env::temp_dir().join(format!("kelp-plan-ec2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (kc, manifest) = (dir.join("kubeconfig"), dir.join("cluster.yaml"));
    std::fs::write(&kc, h.server.kubeconfig()).unwrap();
    std::fs::write(&manifest, ec2_cluster("planned", &endpoint, 2, 0)).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["plan", "-o", "json", "-f"])
        .arg(&manifest)
        .arg("--kubeconfig")
        .arg(&kc)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &plan["clusters"][0];
    assert_eq!(c["cloud"], "ec2");
    assert_eq!(c["exists"], false);
    let t4 = &c["pools"][0];
    // The cheapest type with a T4, 4 vCPUs and room for an 80 GB disk, from moto's
    // catalogue; its price from kelp's EC2 table.
    assert_eq!(t4["instanceType"], "g4dn.xlarge", "{c}");
    assert_eq!(t4["gpus"], 1);
    assert_eq!(
        (t4["now"].as_u64(), t4["after"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(t4["action"], "create 2");
    let price = t4["pricePerHour"].as_f64().unwrap();
    assert!((price - 2.0 * 0.526).abs() < 0.01, "{price}");
    assert_eq!(c["pools"][1]["action"], "none");
    // Read-only: EC2 saw only Describe calls, and the API server no write at all.
    let actions = proxy.summary();
    assert!(
        !actions.is_empty() && actions.keys().all(|a| a.starts_with("Describe")),
        "{actions:?}"
    );
    assert_eq!(
        h.server.store().resource_version(),
        written_before,
        "kelp plan wrote to the API server"
    );
    // Nothing was started.
    let listed = driver(&moto.endpoint())
        .list(&kelp_cloud_drivers::kelp_selector())
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_falls_back_from_a_full_sim_cluster_to_ec2_and_stays_there() {
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let endpoint = moto.endpoint();
    let mut h = Harness::new().await;
    secrets(&h).await;
    let kubelets = kubelets(&h, &endpoint);
    h.start();
    h.apply_yaml(MODULE).await;
    // The preferred Cluster: the sim, with no A100 left.
    h.apply_yaml(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: sim-a100}
spec:
  cloud: {sim: {latencyMs: 1, capacity: {A100: 0}}}
  nodePools:
    - {name: a100, replicas: 0, autoscaling: {minReplicas: 0, maxReplicas: 2, scaleDownDelaySeconds: 1}, machine: {gpu: {count: 1, model: A100}}}
"#,
    )
    .await;
    h.apply_yaml(&format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: aws-a100}}
spec:
  cloud:
    ec2: {{region: us-east-1, endpointUrl: "{endpoint}", credentialsSecretRef: {{name: aws}}}}
  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: self-kubeconfig}}}}
  nodePools:
    - {{name: a100, replicas: 0, autoscaling: {{minReplicas: 0, maxReplicas: 1}}, machine: {{gpu: {{count: 1, model: A100}}}}}}
"#
    ))
    .await;
    h.apply_yaml(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {name: fish}
spec:
  moduleRef: {name: yolov8}
  placement: {clusters: [{name: sim-a100}, {name: aws-a100}]}
"#,
    )
    .await;
    let d = h
        .wait::<kelp_crds::Deployment>("fish", "Ready on aws-a100", |d| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                s.cluster.as_deref() == Some("aws-a100")
                    && kelp_operator::conditions::is_true(&s.conditions, "Ready")
            })
        })
        .await
        .unwrap();
    let st = d.status.unwrap();
    let entry = |name: &str| {
        st.placement
            .iter()
            .find(|e| e.cluster == name)
            .unwrap()
            .clone()
    };
    let sim = entry("sim-a100");
    assert_eq!(
        (sim.result, sim.reason.as_str()),
        (kelp_crds::PlacementResult::Skipped, "InsufficientCapacity"),
        "{sim:?}"
    );
    assert!(sim.message.contains("pool a100: no capacity"), "{sim:?}");
    let aws = entry("aws-a100");
    assert_eq!(aws.result, kelp_crds::PlacementResult::Running, "{aws:?}");
    // One A100 machine on EC2, grown from demand.
    let aws_uid = h
        .api::<Cluster>()
        .get("aws-a100")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let on_ec2 = instances(&endpoint, &aws_uid).await;
    assert_eq!(on_ec2.len(), 1, "{on_ec2:?}");
    assert_eq!(on_ec2[0].instance_type, "p4d.24xlarge");
    // The moves were told as Events.
    let events = events(&h, "fish").await;
    assert!(
        events.iter().any(|(_, reason, note, _)| reason == "Moving"
            && note.contains("from Cluster sim-a100 to Cluster aws-a100")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(_, reason, _, _)| reason == "Moved"),
        "{events:?}"
    );
    // Capacity appears on the sim: the Deployment stays where it runs.
    h.patch_spec::<Cluster>(
        "sim-a100",
        serde_json::json!({"cloud": {"sim": {"latencyMs": 1, "capacity": {"A100": 4}}}}),
    )
    .await;
    h.wait::<Cluster>("sim-a100", "its new generation seen", |c| {
        c.and_then(|c| c.status.as_ref())
            .is_some_and(|s| s.observed_generation == Some(2))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = h.api::<kelp_crds::Deployment>().get("fish").await.unwrap();
    let st = d.status.unwrap();
    assert_eq!(st.cluster.as_deref(), Some("aws-a100"));
    let sim_cluster = h.api::<Cluster>().get("sim-a100").await.unwrap();
    let a100 = &sim_cluster.status.unwrap().node_pools[0];
    assert_eq!(
        a100.machines.len(),
        0,
        "no demand left on the sim: {a100:?}"
    );
    kubelets.abort();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec2_pool_that_follows_demand_grows_in_one_run_instances() {
    use kelp_test_peers::proxy::Proxy;
    let Some(moto) = kelp_test_peers::start_moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    let endpoint = proxy.endpoint();
    let mut h = Harness::new().await;
    secrets(&h).await;
    let kubelets = kubelets(&h, &moto.endpoint());
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(&format!(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {{name: aws-auto}}
spec:
  cloud:
    ec2: {{region: us-east-1, endpointUrl: "{endpoint}", credentialsSecretRef: {{name: aws}}}}
  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: self-kubeconfig}}}}
  nodePools:
    - {{name: t4, replicas: 0, autoscaling: {{minReplicas: 0, maxReplicas: 4}}, machine: {{cpu: 4, gpu: {{count: 1, model: T4}}}}}}
"#
    ))
    .await;
    h.cluster_ready_with("aws-auto", "0/0").await;
    h.apply_yaml(
        r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Deployment
metadata: {name: fish}
spec: {moduleRef: {name: yolov8}, clusterRef: {name: aws-auto}, replicas: 3}
"#,
    )
    .await;
    let c = h.cluster_ready_with("aws-auto", "3/3").await;
    let pool = &c.status.unwrap().node_pools[0];
    assert_eq!(
        pool.demand.as_deref(),
        Some("3 machine(s) of type g4dn.xlarge for 3 replica(s) needing 1 GPU each (bounds 0..4)")
    );
    assert_eq!(proxy.count("RunInstances"), 1, "{:?}", proxy.summary());
    let uid = h
        .api::<Cluster>()
        .get("aws-auto")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(instances(&moto.endpoint(), &uid).await.len(), 3);
    h.deployment_ready("fish").await;
    kubelets.abort();
    h.stop().await;
}
