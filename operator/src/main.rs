//! `kelp`: the kelp operator and its command-line tools.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kelp deploys AI modules onto GPU machines in OpenStack, EC2 and EGI FedCloud
/// clouds, the Kubernetes way.
#[derive(Parser, Debug)]
#[command(name = "kelp", version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines instead of text (the log filter comes from RUST_LOG, default info).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions of Module, Cluster and Deployment as one
    /// multi-document YAML stream, ready for `kubectl apply -f -`.
    Crds {
        /// Print the Markdown field reference (docs/api-reference.md) instead.
        #[arg(long)]
        reference: bool,
    },
    /// Run the operator: the Module, Cluster and Deployment controllers, against the
    /// cluster of `--kubeconfig`, else $KUBECONFIG, else the in-cluster service account.
    /// The CRDs must be installed (`kelp crds | kubectl apply -f -`). Ctrl-C (SIGINT) or
    /// SIGTERM stops it after in-flight reconciles finish.
    Run {
        /// Kubeconfig file of the cluster to run against.
        #[arg(long, env = "KELP_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
    /// Everything on this machine: starts kelp's Kubernetes-API test server, installs the
    /// CRDs, runs the operator with the simulated cloud, writes a kubeconfig and prints
    /// what to try next. Everything is in memory and simulated.
    Dev {
        /// Where to write the kubeconfig for kubectl.
        #[arg(long, default_value = "kelp-dev.kubeconfig")]
        kubeconfig: PathBuf,
        /// Port of the API server on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

fn logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { reference } => {
            let text = if reference {
                kelp_crds::reference_markdown()
            } else {
                kelp_crds::crds_yaml()
            };
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Command::Run { kubeconfig } => {
            logging(cli.log_json);
            tokio::runtime::Runtime::new()?.block_on(async move {
                let client = match kubeconfig {
                    Some(path) => {
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                        kelp_operator::targets::client_from_kubeconfig(&text)
                            .await
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                    }
                    None => kube::Client::try_default().await?,
                };
                let version = client.apiserver_version().await?;
                tracing::info!(server = %version.git_version, "kelp operator starting");
                kelp_operator::run(
                    client,
                    kelp_operator::Environment::default(),
                    shutdown_signal(),
                )
                .await;
                Ok(())
            })
        }
        Command::Dev { kubeconfig, port } => {
            logging(cli.log_json);
            tokio::runtime::Runtime::new()?.block_on(async move {
                let (server, client) = kelp_operator::dev::start(port, &kubeconfig).await?;
                let path = std::fs::canonicalize(&kubeconfig).unwrap_or(kubeconfig);
                println!("{}", kelp_operator::dev::banner(&server.url(), &path));
                kelp_operator::run(
                    client,
                    kelp_operator::Environment::default(),
                    shutdown_signal(),
                )
                .await;
                server.shutdown().await;
                Ok(())
            })
        }
    }
}
