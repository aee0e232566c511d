//! `kelp`: the kelp operator and its command-line tools.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kelp_operator::cli;

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
        #[arg(long, conflicts_with = "helm")]
        reference: bool,
        /// Print the Helm chart's CRD template (helm/kelp/templates/crds.yaml) instead.
        #[arg(long)]
        helm: bool,
    },
    /// Run the operator: the Module, Cluster and Deployment controllers, against the
    /// cluster of `--kubeconfig`, else $KUBECONFIG, else the in-cluster service account.
    /// The CRDs must be installed (`kelp crds | kubectl apply -f -`). Ctrl-C (SIGINT) or
    /// SIGTERM stops it after in-flight reconciles finish.
    Run {
        /// Kubeconfig file of the cluster to run against.
        #[arg(long, env = "KELP_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Where to serve /healthz (alive) and /readyz (caches synced) for the kubelet's
        /// probes.
        #[arg(long, env = "KELP_HEALTH_ADDRESS", default_value = "0.0.0.0:8081")]
        health_address: std::net::SocketAddr,
        /// Run the controllers only while holding the leader Lease, so that several
        /// replicas can run (one reconciles, the others wait). `--leader-election=false`
        /// for a single replica.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        leader_election: bool,
        /// Name of the leader Lease, in the operator's namespace (KELP_NAMESPACE, else
        /// POD_NAMESPACE, else kelp-system).
        #[arg(long, default_value = "kelp-operator")]
        lease_name: String,
        /// Seconds a leader's Lease lasts without renewal.
        #[arg(long, default_value_t = 15, value_name = "SECONDS")]
        lease_duration: u64,
        /// Seconds before expiry the leader renews its Lease (and the clock skew between
        /// replicas that is tolerated).
        #[arg(long, default_value_t = 5, value_name = "SECONDS")]
        lease_renew_grace: u64,
        /// Log as JSON lines instead of text (the filter comes from RUST_LOG, default info).
        #[arg(long)]
        log_json: bool,
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
        /// Log as JSON lines instead of text (the filter comes from RUST_LOG, default info).
        #[arg(long)]
        log_json: bool,
        /// Where to serve the web console (port 0: any free port). Default
        /// 127.0.0.1:8090, or any free port when that one is taken.
        #[arg(long)]
        console_listen: Option<std::net::SocketAddr>,
        /// Log in through this OIDC provider instead of serving one local user; kelp dev
        /// then makes each user's namespace at their first login.
        #[command(flatten)]
        oidc: OidcArgs,
    },
    /// The web console for researchers: the module catalogue, a deploy form with prices,
    /// live Deployments, TOSCA import, and the AI4OS dashboard's "deploy on your own
    /// cloud" link (`/configure?...`). Users log in with EGI Check-in (OIDC), and every
    /// request is made as them through impersonation; or `--dev-user` serves one local
    /// user with the kubeconfig's own credentials. See docs/console.md.
    Console {
        /// Where to listen.
        #[arg(long, env = "KELP_CONSOLE_LISTEN", default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// The URL users reach the console at (the OIDC redirect URI is
        /// `<public-url>/callback`); default `http://<listen>`.
        #[arg(long, env = "KELP_CONSOLE_PUBLIC_URL")]
        public_url: Option<String>,
        /// Kubeconfig of the cluster; else $KUBECONFIG, else the in-cluster service account.
        #[arg(long, env = "KELP_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Serve this one user without a login, with the kubeconfig's own credentials.
        #[arg(long, value_name = "NAME", conflicts_with = "issuer")]
        dev_user: Option<String>,
        /// The dev user's namespace.
        #[arg(short = 'n', long, default_value = "default", requires = "dev_user")]
        namespace: String,
        #[command(flatten)]
        oidc: OidcArgs,
        /// A namespace whose Modules every user may deploy (the shared catalogue).
        #[arg(long, env = "KELP_CONSOLE_CATALOGUE_NAMESPACE")]
        catalogue_namespace: Option<String>,
        /// Offer the simulated cloud in the deploy form.
        #[arg(long)]
        allow_sim: bool,
        /// Log as JSON lines instead of text (the filter comes from RUST_LOG, default info).
        #[arg(long)]
        log_json: bool,
    },
    /// List, show and render the built-in recipes and your own recipe files (node
    /// recipes render cloud-init user-data, workload recipes Kubernetes objects). Works
    /// offline.
    Recipe {
        /// A recipe file of your own to add to the catalog (as the operator would load it
        /// from a recipe ConfigMap; a same-named built-in is replaced). Repeatable.
        #[arg(long = "recipe-file", global = true, value_name = "FILE")]
        recipe_files: Vec<PathBuf>,
        #[command(subcommand)]
        command: RecipeCommand,
    },
    /// Module tools: convert AI4OS marketplace metadata into Module manifests.
    Module {
        #[command(subcommand)]
        command: ModuleCommand,
    },
    /// EGI FedCloud tools: the site catalogue (sites, Keystone endpoints, the project of
    /// each VO). Works offline.
    Egi {
        #[command(subcommand)]
        command: EgiCommand,
    },
    /// Show what applying kelp manifests would do, before anything is created: for each
    /// Cluster pool the instance type, its size, the machines now and after, the price
    /// and the action; for each Deployment the Cluster and pool it would land on. Offline
    /// for Clusters on the sim cloud; with --kubeconfig, the clouds of the others are
    /// asked for their types and prices, with the Secrets read from that cluster, and
    /// what is already there counts. Nothing is written.
    Plan {
        /// A manifest file, or a directory of them (.yaml, .yml, .json). Repeatable.
        #[arg(
            short = 'f',
            long = "filename",
            required = true,
            value_name = "FILE_OR_DIR"
        )]
        files: Vec<PathBuf>,
        /// Kubeconfig of the cluster the manifests are for.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The namespace of manifests that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: PlanOutput,
    },
    /// Import deployments made for other tools as kelp manifests.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ImportCommand {
    /// Print the Module, Cluster, Deployment and Secret templates that do what the
    /// Infrastructure Manager would do with a TOSCA template (and its children, as the
    /// IM Dashboard combines them), as YAML for `kubectl apply -f -`. Works offline.
    Tosca {
        /// The main template (e.g. simple-node-disk.yml).
        template: PathBuf,
        /// A child template laid over it (e.g. ai4eoscvm.yaml). Repeatable, in order.
        #[arg(long = "child", value_name = "TEMPLATE")]
        children: Vec<PathBuf>,
        /// An input value, NAME=VALUE, typed per the input's type and checked against its
        /// constraints; `kelp.cloud=URL` says where the machines run. Repeatable.
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// The namespace of the manifests.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlanOutput {
    Table,
    Json,
}

/// The console's OIDC login (EGI Check-in) and its namespaces.
#[derive(clap::Args, Debug, Clone)]
struct OidcArgs {
    /// The OIDC issuer users log in with, e.g. EGI Check-in's
    /// https://aai.egi.eu/auth/realms/egi.
    #[arg(long = "oidc-issuer", id = "issuer", env = "KELP_OIDC_ISSUER")]
    issuer: Option<String>,
    /// The console's OIDC client ID.
    #[arg(
        long = "oidc-client-id",
        env = "KELP_OIDC_CLIENT_ID",
        default_value = "kelp-console"
    )]
    client_id: String,
    /// The client secret (for a confidential client; PKCE is used either way).
    #[arg(
        long = "oidc-client-secret",
        env = "KELP_OIDC_CLIENT_SECRET",
        hide_env_values = true
    )]
    client_secret: Option<String>,
    /// Scopes asked for (space-separated).
    #[arg(
        long = "oidc-scopes",
        env = "KELP_OIDC_SCOPES",
        default_value = "openid profile email eduperson_entitlement"
    )]
    scopes: String,
    /// A VO whose members may log in (repeatable; none: any user of the provider).
    #[arg(
        long = "allowed-vo",
        env = "KELP_CONSOLE_ALLOWED_VOS",
        value_delimiter = ','
    )]
    allowed_vos: Vec<String>,
    /// One namespace per user, or one per VO.
    #[arg(
        long,
        value_enum,
        env = "KELP_CONSOLE_NAMESPACE_MODE",
        default_value = "user"
    )]
    namespace_mode: NamespaceModeArg,
    /// The prefix of the users' (or VOs') namespaces.
    #[arg(long, env = "KELP_CONSOLE_NAMESPACE_PREFIX", default_value = "kelp-")]
    namespace_prefix: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum NamespaceModeArg {
    User,
    Vo,
}

impl OidcArgs {
    fn oidc(&self) -> Option<kelp_operator::console::auth::OidcConfig> {
        let issuer = self.issuer.clone()?;
        Some(kelp_operator::console::auth::OidcConfig {
            issuer,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            scopes: self.scopes.split_whitespace().map(String::from).collect(),
            allowed_vos: self.allowed_vos.clone(),
        })
    }

    fn mode(&self) -> kelp_operator::console::NamespaceMode {
        match self.namespace_mode {
            NamespaceModeArg::User => kelp_operator::console::NamespaceMode::User,
            NamespaceModeArg::Vo => kelp_operator::console::NamespaceMode::Vo,
        }
    }
}

#[derive(Subcommand, Debug)]
enum RecipeCommand {
    /// Print NAME, KIND, VERSION and DESCRIPTION of every built-in recipe.
    List,
    /// Print a recipe's inputs (name, type, default, required, description, enum
    /// values) as `#` comment lines, then its YAML source.
    Show {
        /// Recipe name (see `kelp recipe list`).
        name: String,
    },
    /// Render a recipe. A node recipe alone renders its #cloud-config for an example
    /// machine; --for-cluster prints the full merged user-data one machine of a pool
    /// gets. A workload recipe renders its Kubernetes objects as a YAML stream, for an
    /// example Deployment or, with --for-deployment, a real one. Secrets the operator
    /// generates (join token, CA, server URL) are <placeholders>.
    Render {
        /// Recipe name. Optional with --for-cluster (then it names the pool recipe that
        /// --input applies to) and with --for-deployment (default: its spec.recipe).
        name: Option<String>,
        /// An input value, NAME=VALUE, the value read as YAML: driverBranch=550 is the
        /// integer 550, driverBranch='"550"' the string "550". Repeatable.
        #[arg(long = "input", value_name = "NAME=VALUE")]
        input: Vec<String>,
        /// An input value given as JSON, NAME=JSON (e.g. 'secret={"name":"s","key":"k"}').
        #[arg(long = "input-json", value_name = "NAME=JSON")]
        input_json: Vec<String>,
        /// A Cluster manifest: print the merged user-data of one machine of --pool.
        #[arg(long, value_name = "FILE", conflicts_with = "for_deployment")]
        for_cluster: Option<PathBuf>,
        /// The node pool of the --for-cluster Cluster (`control-plane`: the separate
        /// control-plane machine).
        #[arg(long, value_name = "NAME", requires = "for_cluster")]
        pool: Option<String>,
        /// k3s role of the machine. Default: what the recipe requires, else agent; with
        /// --for-cluster, server for the spec.kubernetes.controlPlane.pool, else agent.
        #[arg(long, value_enum)]
        role: Option<Role>,
        /// GPUs per machine of the example pool (default: 1 for recipes requiring GPUs,
        /// else 0), or of the example workload.
        #[arg(long, value_name = "N")]
        gpus: Option<u32>,
        /// A Deployment manifest: render its workload recipe with the context the
        /// operator builds (needs --module and --cluster).
        #[arg(long, value_name = "FILE", requires_all = ["module", "cluster"])]
        for_deployment: Option<PathBuf>,
        /// The Module manifest the --for-deployment Deployment refers to.
        #[arg(long, value_name = "FILE", requires = "for_deployment")]
        module: Option<PathBuf>,
        /// The Cluster manifest the --for-deployment Deployment refers to.
        #[arg(long, value_name = "FILE", requires = "for_deployment")]
        cluster: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    Server,
    Agent,
}

#[derive(Subcommand, Debug)]
enum ModuleCommand {
    /// Convert an AI4OS module metadata file (ai4-metadata v2 `ai4-metadata.yml` or
    /// `.json`, or a v1 `metadata.json`) into a Module manifest printed on stdout.
    /// Unknown fields are warnings, invalid ones errors (exit status 1, nothing printed).
    Import {
        /// The metadata file.
        file: PathBuf,
        /// metadata.name (default: from the image name, else the title).
        #[arg(long)]
        name: Option<String>,
        /// metadata.namespace (default: none).
        #[arg(long)]
        namespace: Option<String>,
        /// Image REPOSITORY[:TAG], replacing the file's links.docker_image.
        #[arg(long, value_name = "REPOSITORY[:TAG]")]
        image: Option<String>,
        /// spec.image.gpuTag (default: `gpu` when resources.inference.gpu > 0 or a tag
        /// is `gpu`, else none).
        #[arg(long, value_name = "TAG")]
        gpu_tag: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum EgiCommand {
    /// List the EGI FedCloud sites kelp knows. With --vo: SITE, ENDPOINT and PROJECT of
    /// every site supporting the VO (exit status 1 when none does); without: every site
    /// with its VOs.
    Sites {
        /// A Virtual Organisation, e.g. vo.imagine-ai.eu.
        #[arg(long, value_name = "VO")]
        vo: Option<String>,
        /// A site file of your own (the fedcloud-catchall-operations `sites/*.yaml` form;
        /// a list of entries, one entry or a multi-document stream) laid over the shipped
        /// catalogue: an entry replaces the shipped one of the same gocdb name. Repeatable.
        #[arg(long = "file", value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Output format: table, or the site entries as YAML or JSON.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: EgiOutput,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EgiOutput {
    Table,
    Yaml,
    Json,
}

/// The client configuration of a kubeconfig file, naming the file in errors.
async fn config_from(path: &std::path::Path) -> anyhow::Result<kube::Config> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A client for a kubeconfig file that answers: errors name the server's URL.
async fn client_from(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let config = config_from(path).await?;
    let url = config.cluster_url.clone();
    let client = kube::Client::try_from(config)?;
    client.apiserver_version().await.map_err(|e| {
        anyhow::anyhow!(
            "the Kubernetes API at {url} does not answer: {}",
            kelp_operator::context::error_chain(&e)
        )
    })?;
    Ok(client)
}

/// Prints an offline command's outcome; on failure, only the errors (exit status 1).
fn emit(result: Result<cli::Outcome, cli::Failure>) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    match result {
        Ok(outcome) => {
            for w in &outcome.warnings {
                writeln!(err, "warning: {w}")?;
            }
            for n in &outcome.notes {
                writeln!(err, "note: {n}")?;
            }
            let mut out = std::io::stdout().lock();
            out.write_all(outcome.stdout.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Err(failure) => {
            for w in &failure.warnings {
                writeln!(err, "warning: {w}")?;
            }
            for e in &failure.errors {
                writeln!(err, "error: {e}")?;
            }
            err.flush()?;
            std::process::exit(1);
        }
    }
}

fn logging(json: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Crates that log their inputs, whatever RUST_LOG says: handlebars logs every helper's
    // parameters (the cluster CA and join token); the AWS SDK logs its credentials'
    // access key ID and the signed Authorization header at debug and trace.
    let quiet = [
        "handlebars",
        "aws_smithy_runtime",
        "aws_smithy_runtime_api",
        "aws_smithy_http",
        "aws_smithy_http_client",
        "aws_smithy_types",
        "aws_sigv4",
        "aws_runtime",
        "aws_sdk_ec2",
    ]
    .into_iter()
    .fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, target| t.with_target(target, LevelFilter::INFO),
    )
    .with_target("handlebars", LevelFilter::WARN);
    // No colour codes in log files and pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(quiet);
    if json {
        registry.with(layer.json().with_filter(filter)).init();
    } else {
        registry.with(layer.with_filter(filter)).init();
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
        Command::Crds { reference, helm } => {
            let text = if reference {
                kelp_crds::reference_markdown()
            } else if helm {
                kelp_crds::helm_template()
            } else {
                kelp_crds::crds_yaml()
            };
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Command::Recipe {
            recipe_files,
            command,
        } => {
            let catalog = match cli::recipe::catalog_with_files(&recipe_files) {
                Ok(c) => c,
                Err(f) => return emit(Err(f)),
            };
            emit(match command {
                RecipeCommand::List => Ok(cli::recipe::list(&catalog)),
                RecipeCommand::Show { name } => cli::recipe::show(&catalog, &name),
                RecipeCommand::Render {
                    name,
                    input,
                    input_json,
                    for_cluster,
                    pool,
                    role,
                    gpus,
                    for_deployment,
                    module,
                    cluster,
                } => cli::recipe::render(
                    &catalog,
                    &cli::recipe::RenderArgs {
                        name,
                        inputs: input,
                        inputs_json: input_json,
                        for_cluster,
                        pool,
                        role: role.map(|r| match r {
                            Role::Server => kelp_recipes::NodeRole::Server,
                            Role::Agent => kelp_recipes::NodeRole::Agent,
                        }),
                        gpus,
                        for_deployment,
                        module,
                        cluster,
                    },
                ),
            })
        }
        Command::Module {
            command:
                ModuleCommand::Import {
                    file,
                    name,
                    namespace,
                    image,
                    gpu_tag,
                },
        } => emit(cli::import::import(&cli::import::ImportArgs {
            file,
            name,
            namespace,
            image,
            gpu_tag,
        })),
        Command::Egi {
            command: EgiCommand::Sites { vo, files, output },
        } => emit(cli::egi::sites(&cli::egi::SitesArgs {
            vo,
            files,
            format: match output {
                EgiOutput::Table => cli::egi::Format::Table,
                EgiOutput::Yaml => cli::egi::Format::Yaml,
                EgiOutput::Json => cli::egi::Format::Json,
            },
        })),
        Command::Run {
            kubeconfig,
            health_address,
            leader_election,
            lease_name,
            lease_duration,
            lease_renew_grace,
            log_json,
        } => {
            logging(log_json);
            tokio::runtime::Runtime::new()?.block_on(async move {
                let env = kelp_operator::Environment::default();
                kelp_operator::health::serve(
                    health_address,
                    env.health.clone(),
                    env.metrics.clone(),
                )
                .await?;
                let config = match kubeconfig {
                    Some(path) => config_from(&path).await?,
                    None => kube::Config::infer().await?,
                };
                let url = config.cluster_url.clone();
                let client = kube::Client::try_from(config)?;
                let version = client.apiserver_version().await.map_err(|e| {
                    anyhow::anyhow!(
                        "the Kubernetes API at {url} does not answer: {}",
                        kelp_operator::context::error_chain(&e)
                    )
                })?;
                tracing::info!(server = %version.git_version, "kelp operator starting");
                if !leader_election {
                    kelp_operator::run(client, env, shutdown_signal()).await;
                    return Ok(());
                }
                let election = kelp_operator::leader::Election {
                    lease: lease_name,
                    namespace: env.config.namespace.clone(),
                    identity: kelp_operator::leader::identity(),
                    duration: std::time::Duration::from_secs(lease_duration),
                    grace: std::time::Duration::from_secs(lease_renew_grace),
                };
                let (health, metrics) = (env.health.clone(), env.metrics.clone());
                let outcome = kelp_operator::leader::lead(
                    client.clone(),
                    election,
                    health,
                    metrics,
                    shutdown_signal(),
                    move |stop| async move {
                        kelp_operator::run(client, env, stop).await;
                    },
                )
                .await?;
                if let kelp_operator::leader::Outcome::Lost(why) = outcome {
                    // Fail-stop: nothing of this process may reconcile any more.
                    tracing::error!(reason = %why, "lost the leader Lease; exiting");
                    std::process::exit(1);
                }
                Ok(())
            })
        }
        Command::Plan {
            files,
            kubeconfig,
            namespace,
            output,
        } => {
            let manifests = match cli::plan::read(&files, &namespace) {
                Ok(m) => m,
                Err(f) => return emit(Err(f)),
            };
            let format = match output {
                PlanOutput::Table => cli::plan::Format::Table,
                PlanOutput::Json => cli::plan::Format::Json,
            };
            let inputs = match kubeconfig {
                None => cli::plan::offline(manifests),
                Some(path) => tokio::runtime::Runtime::new()?.block_on(async move {
                    let client = client_from(&path).await?;
                    anyhow::Ok(cli::plan::gather(&client, manifests).await)
                })?,
            };
            let plan = cli::plan::plan(&inputs, k8s_openapi::jiff::Timestamp::now());
            emit(Ok(cli::plan::render(&plan, format)))
        }
        Command::Import {
            command:
                ImportCommand::Tosca {
                    template,
                    children,
                    inputs,
                    namespace,
                },
        } => emit(cli::tosca::import(&cli::tosca::ToscaArgs {
            template,
            children,
            inputs,
            namespace,
        })),
        #[cfg(feature = "dev")]
        Command::Dev {
            kubeconfig,
            port,
            log_json,
            console_listen,
            oidc,
        } => {
            logging(log_json);
            tokio::runtime::Runtime::new()?.block_on(async move {
                let (server, client) = kelp_operator::dev::start(port, &kubeconfig).await?;
                let path = std::fs::canonicalize(&kubeconfig).unwrap_or(kubeconfig);
                let console = kelp_operator::dev::console(
                    &server,
                    &client,
                    console_listen,
                    oidc.oidc(),
                    oidc.mode(),
                    &oidc.namespace_prefix,
                )
                .await?;
                println!(
                    "{}",
                    kelp_operator::dev::banner(&server.url(), &path, &console)
                );
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
        Command::Console {
            listen,
            public_url,
            kubeconfig,
            dev_user,
            namespace,
            oidc,
            catalogue_namespace,
            allow_sim,
            log_json,
        } => {
            logging(log_json);
            use kelp_operator::console::{AuthMode, ConsoleConfig};
            let auth = match (dev_user, oidc.oidc()) {
                (Some(user), _) => AuthMode::Dev { user, namespace },
                (None, Some(o)) => AuthMode::Oidc(o),
                (None, None) => anyhow::bail!(
                    "kelp console needs --oidc-issuer (the OIDC provider users log in with, e.g. EGI Check-in) or --dev-user NAME (one local user, no login)"
                ),
            };
            let config = ConsoleConfig {
                listen,
                public_url: public_url.unwrap_or_default(),
                auth,
                namespace_mode: oidc.mode(),
                namespace_prefix: oidc.namespace_prefix.clone(),
                catalogue_namespace,
                allow_sim,
            };
            tokio::runtime::Runtime::new()?.block_on(async move {
                let base = match kubeconfig {
                    Some(path) => config_from(&path).await?,
                    None => kube::Config::infer().await?,
                };
                kelp_operator::console::serve(config, base, None, shutdown_signal()).await
            })
        }
        #[cfg(not(feature = "dev"))]
        Command::Dev { .. } => anyhow::bail!(
            "this build of kelp has no `kelp dev`: it was built without the `dev` feature (the release image is); build with default features"
        ),
    }
}
