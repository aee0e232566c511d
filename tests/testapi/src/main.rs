//! `kelp-testapi`: runs the Kubernetes-API test server until interrupted.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;

/// A Kubernetes-API test server for kelp development and CI (HTTPS with its own CA,
/// tokens and RBAC, in memory). Not for production use.
#[derive(Parser, Debug)]
#[command(name = "kelp-testapi", version, about)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    address: IpAddr,
    /// Write a kubeconfig for the server to this path.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch events kept for resuming watches.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = kelp_testapi::Config {
        history: args.history,
        bookmark_interval: std::time::Duration::from_secs(args.bookmark_seconds.max(1)),
    };
    let server =
        kelp_testapi::TestApiServer::start_with(config, SocketAddr::new(args.address, args.port))
            .await?;
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, server.kubeconfig())?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("kelp-testapi listening on {}", server.url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
