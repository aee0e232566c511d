//! `kelp run` as its own process, as a cluster runs it: a kubeconfig file, the namespace
//! from POD_NAMESPACE, a health port; its log lines are collected for assertions.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

pub struct KelpRun {
    pub child: tokio::process::Child,
    log: Arc<Mutex<String>>,
    /// The task reading stderr into `log`.
    reader: Option<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
    /// Port of /healthz, /readyz and /metrics on 127.0.0.1.
    pub health_port: u16,
}

fn unique() -> String {
    format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

impl KelpRun {
    /// Starts `kelp run` with `kubeconfig`, in namespace `namespace`, with `args` after
    /// `run` and `RUST_LOG=rust_log`.
    pub async fn start(kubeconfig: &str, namespace: &str, args: &[&str], rust_log: &str) -> Self {
        Self::start_with_env(kubeconfig, namespace, args, rust_log, &[]).await
    }

    /// [`KelpRun::start`] with extra environment variables.
    pub async fn start_with_env(
        kubeconfig: &str,
        namespace: &str,
        args: &[&str],
        rust_log: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("kelp-run-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(&path, kubeconfig).unwrap();
        let health_port = free_port();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["run", "--kubeconfig"])
            .arg(&path)
            .arg(format!("--health-address=127.0.0.1:{health_port}"))
            .args(args)
            .env("POD_NAMESPACE", namespace)
            .env("RUST_LOG", rust_log)
            .env_remove("KELP_NAMESPACE")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        KelpRun {
            child,
            log,
            reader: Some(reader),
            dir,
            health_port,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// GET `path` on the health port: (status code, body), None while nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.health_port, path).await
    }

    /// The value of the metric line starting with `series` (e.g. `kelp_leader{lease="kelp-operator"}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// `kill -9`.
    pub async fn kill(mut self) -> String {
        let _ = self.child.kill().await;
        self.drain().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.log()
    }

    /// SIGTERM, then waits for the exit; returns the log.
    pub async fn terminate(mut self) -> String {
        // SAFETY-free: a signal to our own child, through the kill command.
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        self.drain().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.log()
    }

    /// Waits (a little) until the process's last log lines are read: the exit can be
    /// seen before the pipe is drained.
    async fn drain(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test API server with kelp's CRDs and the `namespaces`, and an admin client for it.
pub async fn api_server(namespaces: &[&str]) -> (kelp_testapi::TestApiServer, kube::Client) {
    let server = kelp_testapi::TestApiServer::start().await.unwrap();
    let admin = kelp_operator::targets::client_from_kubeconfig(&server.kubeconfig())
        .await
        .unwrap();
    kelp_operator::dev::install_crds(&admin).await.unwrap();
    // Schedules the workloads of sim Clusters that join this server as `Existing`.
    kelp_operator::sim_kube::spawn_kubelet(admin.clone());
    for ns in namespaces {
        apply(
            &admin,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        )
        .await;
    }
    (server, admin)
}

/// Server-side applies every document of `yaml` (to `default` unless it names a namespace).
pub async fn apply(client: &kube::Client, yaml: &str) {
    for doc in kelp_crds::parse::documents(yaml).unwrap() {
        kelp_operator::dev::apply_manifest(client, "default", "test", &doc)
            .await
            .unwrap();
    }
}

/// An EC2 Cluster `name` on moto at `endpoint` with one T4 pool of `replicas`, on the
/// Kubernetes of `kubeconfig` (`Existing`), with its two Secrets.
pub fn ec2_cluster(
    name: &str,
    endpoint: &str,
    replicas: usize,
    (key_id, secret): (&str, &str),
    kubeconfig: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-aws}}\nstringData: {{accessKeyId: \"{key_id}\", secretAccessKey: \"{secret}\"}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-kubeconfig-in}}\nstringData:\n  value: {}\n---\n\
         apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  cloud:\n    ec2: {{region: us-east-1, endpointUrl: \"{endpoint}\", credentialsSecretRef: {{name: {name}-aws}}}}\n  kubernetes: {{mode: Existing, kubeconfigSecretRef: {{name: {name}-kubeconfig-in}}}}\n  nodePools:\n    - {{name: t4, replicas: {replicas}, machine: {{cpu: 4, gpu: {{count: 1, vendor: NVIDIA, model: T4}}}}}}\n",
        serde_json::to_string(kubeconfig).unwrap()
    )
}
