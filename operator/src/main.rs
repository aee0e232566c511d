//! `kelp`: the kelp operator and its command-line tools.
#![forbid(unsafe_code)]

use std::io::Write;

use clap::{Parser, Subcommand};

/// kelp deploys AI modules onto GPU machines in OpenStack, EC2 and EGI FedCloud
/// clouds, the Kubernetes way.
#[derive(Parser, Debug)]
#[command(name = "kelp", version, about, long_about = None)]
struct Cli {
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
        }
    }
    Ok(())
}
