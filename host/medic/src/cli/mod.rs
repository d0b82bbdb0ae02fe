//! The command line: argument parsing, logging set-up, and the verbs.
//! This is the edge of the program, where errors become messages and exit
//! codes.

use crate::catalog::Catalog;
use anyhow::{Context, Result, bail};
use medic_agent::audit::Store;
use medic_agent::audit::journal::{RecordKind, RecordStatus};
use medic_agent::audit::state::StateStore;
use medic_agent::policy::{LogFormat, Policy, PolicyErrors, ServingPolicy};
use medic_agent::units::{parse_duration, parse_size};
use medic_backends::Backends;
use medic_sandbox::{
    EventRecord, Grants, Limits, LoadedPlugin, Mode, RunReport, RunRequest, RunResult, Runtime,
    RuntimeConfig, SettingValue, Settings, Status, new_id,
};

mod audit;
mod dev;
mod lab;
mod project;
mod sign;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "medic",
    version,
    about = "Auto-remediation agent: policy-driven, sandboxed WebAssembly plugins that diagnose and repair a system"
)]
pub struct Cli {
    /// Log format on standard error [default: the policy's
    /// `agent.log_format` for `run`, else human].
    #[arg(long, global = true, value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,

    /// Log filter (tracing syntax), e.g. `info` or `medic=debug`.
    #[arg(long, global = true, env = "MEDIC_LOG", default_value = "warn")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch, dispatch and remediate as the policy says.
    Run(PolicyArgs),
    /// Validate a policy and every plugin it names; report every problem
    /// with file, line and fix; exit 1 if there is any.
    Check(PolicyArgs),
    /// List and filter the audit journal, or verify its hash chain.
    Audit(AuditArgs),
    /// Hand a manual event to the running agent, which applies its policy
    /// to it as to any other event.
    Send(SendArgs),
    /// Show what the agent has loaded and is doing, and whether it runs:
    /// exit 0 running, 3 not running, 1 no agent ever ran with this state
    /// directory.
    Status(StateArgs),
    /// Apply a plan waiting for approval: re-run the plugin in enforce mode
    /// on the same event.
    Approve(DecisionArgs),
    /// Drop a plan waiting for approval.
    Reject(DecisionArgs),
    /// Make a plugin project (Rust, Python or JavaScript) in a new folder:
    /// source, tests against a fake host, a policy and a README.
    New(project::NewArgs),
    /// Build a plugin project into a component (dist/NAME.wasm),
    /// installing what the build needs where it can.
    Build(project::BuildArgs),
    /// Build a plugin project and run its plugin as its policy says, then
    /// again on every change to its sources.
    Dev(dev::DevArgs),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Run a plugin once on one event and print the outcome and every host
    /// call it made.
    Trigger(Box<TriggerArgs>),
    /// The lab: a simulated WSUS hierarchy to run the WSUS pack against.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Install, control and run the agent as a Windows service.
    #[command(subcommand)]
    Service(crate::service::ServiceCommand),
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The policy file.
    #[arg(long, short, env = "MEDIC_POLICY")]
    pub policy: PathBuf,
}

/// Where to find the agent's state: its policy, or the folder itself.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The agent's policy (its `state_dir` is used).
    #[arg(long, short, env = "MEDIC_POLICY", conflicts_with = "state_dir")]
    pub policy: Option<PathBuf>,

    /// The agent's state directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub state: StateArgs,

    /// Only runs of this plugin.
    #[arg(long)]
    pub plugin: Option<String>,

    /// Only this status: healthy, remediated, failed, needs-approval (runs),
    /// loaded, rejected, removed, tripped, released, interrupted, repaired,
    /// lost.
    #[arg(long, value_parser = parse_record_status)]
    pub status: Option<RecordStatus>,

    /// Only this kind of record: run, plugin-loaded, plugin-rejected,
    /// plugin-removed, policy-rejected, flap-guard, approved, rejected, store.
    #[arg(long, value_parser = parse_record_kind)]
    pub kind: Option<RecordKind>,

    /// Only records from the last so long (e.g. 10m, 24h).
    #[arg(long)]
    pub since: Option<String>,

    /// Only the last N matching records.
    #[arg(long)]
    pub limit: Option<usize>,

    /// Verify the hash chain instead of listing; exit 1 if it is broken.
    #[arg(long)]
    pub verify: bool,

    /// Keep a damaged store aside and rebuild it from what can still be
    /// read; refused while an agent runs.
    #[arg(long, conflicts_with = "verify")]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// The run id, as `medic audit --status needs-approval` shows it.
    pub run: String,

    /// The agent's policy file.
    #[arg(long, short, env = "MEDIC_POLICY")]
    pub policy: PathBuf,

    /// Why (recorded with a rejection).
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The plugin the event is for.
    pub plugin: String,

    /// The event as JSON [default: a manual event].
    #[arg(long)]
    pub event: Option<String>,

    /// The subject of the default manual event.
    #[arg(long, default_value = "")]
    pub subject: String,

    /// Queue the event even when the plugin is not known to be served
    /// (with --state-dir: no agent has left a status there yet).
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Show a component's name, version, contract version, the capabilities
    /// it asks for, its suggested triggers, imports and exports.
    Inspect(InspectArgs),
    /// Make a signing key pair: PATH.key (secret, mode 600) and PATH.pub;
    /// print its key id and the policy line that trusts it.
    Keygen(sign::KeygenArgs),
    /// Sign components: write COMPONENT.minisig beside each (a detached
    /// minisign signature; `minisign -V` checks it too).
    Sign(sign::SignArgs),
    /// Check a component's signature against keys, or as a policy's agent
    /// would; print who signed it, or why it is refused (exit 1).
    Verify(sign::VerifyArgs),
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Where compiled components are cached [default: $XDG_CACHE_HOME/medic
    /// or ~/.cache/medic].
    #[arg(long, env = "MEDIC_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile without reading or writing the cache.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The component file (`.wasm`).
    pub component: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The component file (`.wasm`); with --policy, the name of one of its
    /// plugins.
    #[arg(value_name = "COMPONENT|PLUGIN")]
    pub component: PathBuf,

    /// Run the plugin named by the policy in this file, with exactly its
    /// table's grants, settings, limits and mode, and the policy's backend,
    /// checked as the agent checks it (signature included). The run's
    /// state is kept apart from the agent's (see --state-dir), and its
    /// compiled components are cached where the policy says.
    #[arg(
        long,
        short,
        conflicts_with_all = ["settings", "grants", "principals", "lab", "timeout", "memory", "fuel"]
    )]
    pub policy: Option<PathBuf>,

    /// The event as JSON, e.g. '{"kind": "system-event", "subject": "BITS",
    /// "fields": {"event-id": "364"}}' [default: a manual event].
    #[arg(long)]
    pub event: Option<String>,

    /// A plugin setting, `key=value` (repeatable).
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,

    /// A grant, `capability[=scope]` (repeatable): `fs-read=/srv/share`,
    /// `fs-write=/srv/share`, `services-read=BITS`, `services-control=BITS`,
    /// `wsus-read`, `wsus-updates`, `wsus-approvals`, `wsus-configure`,
    /// `wsus-sync`, `wsus-probe`. A policy grants the same as `grants = {
    /// fs-read = ["/srv/share"], services-control = ["BITS"], wsus =
    /// ["read", "sync"] }`.
    #[arg(long = "grant", value_name = "CAPABILITY[=SCOPE]")]
    pub grants: Vec<String>,

    /// Map a principal name plugins use to a local user or group, e.g.
    /// `"NETWORK SERVICE=user:www-data"` (repeatable); on Windows to a SID,
    /// `"WSUS Admins=sid:S-1-5-21-…"`.
    #[arg(long = "principal", value_name = "NAME=user:NAME|group:NAME|sid:SID")]
    pub principals: Vec<String>,

    /// Run against this lab's downstream server (its content folder,
    /// services and WSUS) instead of this machine.
    #[arg(long, conflicts_with = "principals")]
    pub lab: Option<PathBuf>,

    /// Record mutating calls as planned without executing them.
    #[arg(long, conflicts_with = "mode")]
    pub dry_run: bool,

    /// enforce, dry-run or approve [default: enforce, or with --policy the
    /// plugin's own mode].
    #[arg(long)]
    pub mode: Option<String>,

    /// Kill the run after this long (e.g. 500ms, 30s).
    #[arg(long, default_value = "30s")]
    pub timeout: String,

    /// Memory cap (e.g. 64MiB).
    #[arg(long, default_value = "64MiB")]
    pub memory: String,

    /// Fuel for the run (instructions, roughly); unlimited if unset.
    #[arg(long)]
    pub fuel: Option<u64>,

    /// Where the plugin's state is kept [default: $XDG_STATE_HOME/medic or
    /// ~/.local/state/medic].
    #[arg(long, env = "MEDIC_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Print the run report as JSON instead of text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Parse the command line, run the verb, and map the result to an exit
/// code: 0 success, 1 error, 2 a run that failed.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        end_quietly_on_broken_pipe();
    }
    let format = cli.log_format.unwrap_or_else(|| match &cli.command {
        // A policy with errors is reported by `run` itself.
        Command::Run(args) => match Policy::load_serving(&args.policy) {
            Ok(read) => read.policy.agent.log_format,
            _ => LogFormat::Human,
        },
        _ => LogFormat::Human,
    });
    let filter = match (&cli.command, std::env::var_os("MEDIC_LOG")) {
        // The agent logs what it does by default; one-shot verbs stay quiet.
        (Command::Run(_), None) if cli.log == "warn" => "info".to_string(),
        _ => cli.log.clone(),
    };
    // The service sets up its own log: a file and the event log.
    if !matches!(
        cli.command,
        Command::Service(crate::service::ServiceCommand::Run(_))
    ) {
        init_logging(format, &filter);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            say_error(format_args!("error: {e:#}"));
            ExitCode::from(1)
        }
    }
}

/// A one-shot verb whose output goes to a pipe that closes early (`medic
/// audit | head -1`) ends there, quietly, as `cat` or `grep` would: the
/// default action of SIGPIPE, which Rust's runtime sets to "ignore" so
/// that every write after the reader left would fail (and `println!`
/// panic). Everything such a verb writes to the store is committed before
/// its output is printed, and the store survives a kill at any point.
/// `medic run` keeps SIGPIPE ignored: it is a long-lived agent whose
/// standard output and error may be a pipe to a logger that restarts, and
/// a failed log write must cost that line, not the agent.
fn end_quietly_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default is
    // async-signal-safe and touches no memory of this program; no handler
    // of ours is replaced (the runtime only ignores SIGPIPE).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A message on standard error; a standard error that cannot be written
/// to is no reason to panic.
fn say_error(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

fn parse_record_status(text: &str) -> Result<RecordStatus, String> {
    RecordStatus::parse(text).ok_or_else(|| {
        format!("`{text}`: expected healthy, remediated, failed, needs-approval, loaded, rejected, removed, tripped, released, interrupted, repaired or lost")
    })
}

fn parse_record_kind(text: &str) -> Result<RecordKind, String> {
    RecordKind::parse(text).ok_or_else(|| {
        let kinds: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("`{text}`: expected one of {}", kinds.join(", "))
    })
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}`: expected human or json")),
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A log line that cannot be written (standard error is a closed pipe)
    // is dropped, not reported on that same standard error with a panic.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours_wanted(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether the log may be coloured: only on a terminal, so that a log
/// redirected to a file or a pipe holds no escape codes, and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colours_wanted(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => agent_run(&args),
        Command::Check(args) => check(&args),
        Command::Audit(args) if args.repair => audit::repair(&args.state),
        Command::Audit(args) => audit::audit(&args),
        Command::Send(args) => send(&args),
        Command::Status(args) => audit::status(&args),
        Command::Approve(args) => {
            let report = medic_agent::decisions::approve(&args.policy, &args.run, &Catalog)?;
            print!("{}", report_text(&report));
            Ok(if report.status() == Status::Failed {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Reject(args) => {
            medic_agent::decisions::reject(&args.policy, &args.run, &args.reason)?;
            println!("run {} rejected", args.run);
            Ok(ExitCode::SUCCESS)
        }
        Command::New(args) => project::new(&args),
        Command::Build(args) => project::build(&args),
        Command::Dev(args) => dev::dev(&args),
        Command::Plugins(PluginsCommand::Inspect(args)) => inspect(&args),
        Command::Plugins(PluginsCommand::Keygen(args)) => sign::keygen(&args),
        Command::Plugins(PluginsCommand::Sign(args)) => sign::sign(&args),
        Command::Plugins(PluginsCommand::Verify(args)) => sign::verify(&args),
        Command::Trigger(args) => trigger(&args),
        Command::Lab(command) => lab::run(command),
        Command::Service(command) => crate::service::run(command),
    }
}

fn default_dir(env: &str, fallback: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(fallback)))
        .unwrap_or_else(std::env::temp_dir)
        .join("medic")
}

fn runtime(cache: &CacheArgs) -> Result<Runtime> {
    let cache_dir = if cache.no_cache {
        None
    } else {
        Some(
            cache
                .cache_dir
                .clone()
                .unwrap_or_else(|| default_dir("XDG_CACHE_HOME", ".cache")),
        )
    };
    Ok(Runtime::new(&RuntimeConfig {
        cache_dir,
        ..RuntimeConfig::default()
    })?)
}

fn agent_run(args: &PolicyArgs) -> Result<ExitCode> {
    let agent = medic_agent::Agent::load(&args.policy, Arc::new(Catalog))?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(agent.serve(stop_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// This machine's files and services (and no WSUS server), with the
/// principal mappings of `--principal`.
#[cfg(not(windows))]
fn this_machine(mappings: &[String]) -> Result<Backends> {
    let mut principals = medic_backends::PrincipalMap::default();
    for mapping in mappings {
        principals
            .insert_spec(mapping)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("--principal {mapping}"))?;
    }
    Ok(Backends::local(principals))
}

/// This machine's files and services (and no WSUS server), with the
/// principal mappings of `--principal`.
#[cfg(windows)]
fn this_machine(mappings: &[String]) -> Result<Backends> {
    let mut principals = medic_backends::windows::ntfs::SidMap::default();
    for mapping in mappings {
        principals
            .insert_spec(mapping)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("--principal {mapping}"))?;
    }
    Ok(medic_backends::windows::backends(
        medic_backends::windows::WindowsConfig {
            principals,
            wsus: false,
        },
    )?)
}

/// Completes on Ctrl-C, or on SIGTERM where there is one.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check(args: &PolicyArgs) -> Result<ExitCode> {
    match medic_agent::check(&args.policy, &Catalog) {
        Ok(medic_agent::Checked { policy, plugins }) => {
            println!("{}: ok", policy.file.display());
            for plugin in plugins {
                let signature = match (&plugin.signer, plugin.policy.trust.keys.is_empty()) {
                    (Some(signer), _) => format!(", signed by {}", signer.key_id),
                    (None, false) => ", unsigned (require_signatures = false)".to_string(),
                    (None, true) => String::new(),
                };
                println!(
                    "  {} {} ({}), {} mode, {} trigger(s), grants: {}{signature}",
                    plugin.policy.name,
                    plugin.loaded.info.version,
                    &plugin.loaded.hash[..12],
                    plugin.policy.mode.as_str(),
                    plugin.policy.triggers.len(),
                    plugin.policy.grants.describe().join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say_error(format_args!("{e}"));
            Ok(ExitCode::from(1))
        }
    }
}

/// The state directory named by `--state-dir`, or by the policy's
/// `state_dir`.
pub(crate) fn state_dir(args: &StateArgs) -> Result<PathBuf> {
    match (&args.state_dir, &args.policy) {
        (Some(dir), _) => Ok(dir.clone()),
        (None, Some(policy)) => Ok(Policy::load_serving(policy)?.policy.agent.state_dir),
        (None, None) => bail!("give --policy or --state-dir"),
    }
}

fn send(args: &SendArgs) -> Result<ExitCode> {
    let event = match &args.event {
        Some(json) => EventRecord::from_json(json)?,
        None => EventRecord::manual(&args.subject),
    };
    let dir = match (&args.state.state_dir, &args.state.policy) {
        (None, Some(file)) => {
            let ServingPolicy { policy, set_aside } = Policy::load_serving(file)?;
            let names: Vec<&str> = policy.plugins.iter().map(|p| p.name.as_str()).collect();
            if let Some(aside) = set_aside.iter().find(|s| s.plugin == args.plugin)
                && !args.force
            {
                bail!(
                    "the policy's table for `{}` has problems, so the agent does not serve it:\n{}\n(or give --force to queue it anyway)",
                    args.plugin,
                    PolicyErrors(aside.errors.clone())
                );
            }
            if !args.force && !names.contains(&args.plugin.as_str()) {
                bail!(
                    "the policy {} names no plugin `{}`; it names {}",
                    policy.file.display(),
                    args.plugin,
                    listed(&names)
                );
            }
            policy.agent.state_dir
        }
        _ => {
            let dir = state_dir(&args.state)?;
            if !args.force {
                served_here(&dir, &args.plugin)?;
            }
            dir
        }
    };
    let path = medic_agent::triggers::inbox::send(
        &dir,
        &medic_agent::triggers::inbox::InboxRequest {
            plugin: args.plugin.clone(),
            event,
        },
    )
    .with_context(|| format!("cannot write to the inbox in {}", dir.display()))?;
    println!("queued for `{}`: {}", args.plugin, path.display());
    Ok(ExitCode::SUCCESS)
}

/// Names for a message: `a, b` or "none".
fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether the agent using `dir` serves `plugin`, by the last status it
/// left there; an error that says why not. The store is only read: a
/// folder without one is not given one.
fn served_here(dir: &std::path::Path, plugin: &str) -> Result<()> {
    let force = "give --policy to check against the policy, or --force to queue it anyway";
    let status = match Store::open_existing(dir) {
        Ok(store) => medic_agent::dispatch::read_status(&store),
        Err(medic_agent::audit::StoreError::Missing { .. }) => None,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the agent's status in {}", dir.display()));
        }
    };
    let Some(status) = status else {
        bail!(
            "no agent has left a status in {}, so whether it serves `{plugin}` is unknown; {force}",
            dir.display()
        );
    };
    if status.plugins.iter().any(|p| p.name == plugin) {
        return Ok(());
    }
    if let Some(disabled) = status.disabled.iter().find(|d| d.name == plugin) {
        bail!(
            "the agent using {} does not serve `{plugin}`: {}; {force}",
            dir.display(),
            disabled.reason
        );
    }
    let names: Vec<&str> = status.plugins.iter().map(|p| p.name.as_str()).collect();
    bail!(
        "the agent using {} does not serve `{plugin}`; it serves {}; {force}",
        dir.display(),
        listed(&names)
    )
}

fn inspect(args: &InspectArgs) -> Result<ExitCode> {
    let runtime = runtime(&args.cache)?;
    let plugin = runtime.load_file(&args.component)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspect_json(&plugin))?);
    } else {
        print!("{}", inspect_text(&plugin));
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect_json(plugin: &LoadedPlugin) -> serde_json::Value {
    serde_json::json!({
        "name": plugin.info.name,
        "version": plugin.info.version,
        "description": plugin.info.description,
        "contract": format!("{}@{}", medic_sandbox::contract::PACKAGE, plugin.contract.version),
        "hash": plugin.hash,
        "size": plugin.size,
        "capabilities": plugin.info.capabilities.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "policy_grants": Grants::none().policy_line(&plugin.info.capabilities),
        "grant_flags": medic_sandbox::host::grants::grant_flags(&plugin.info.capabilities),
        "triggers": plugin.info.triggers.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "imports": plugin.contract.imports,
        "exports": plugin.contract.exports,
    })
}

fn inspect_text(plugin: &LoadedPlugin) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items.join(", ")
        }
    };
    // What it asks for, as a policy and `medic trigger` grant it.
    let capabilities = &plugin.info.capabilities;
    let grants = if capabilities.is_empty() {
        String::new()
    } else {
        format!(
            "  in a policy {}\n  on trigger  {}\n",
            Grants::none().policy_line(capabilities),
            medic_sandbox::host::grants::grant_flags(capabilities)
        )
    };
    format!(
        "name          {}\nversion       {}\ndescription   {}\ncontract      {}@{}\nsha256        {}\nsize          {} bytes\ncapabilities  {}\n{grants}triggers      {}\nimports       {}\nexports       {}\n",
        plugin.info.name,
        plugin.info.version,
        plugin.info.description,
        medic_sandbox::contract::PACKAGE,
        plugin.contract.version,
        plugin.hash,
        plugin.size,
        list(
            plugin
                .info
                .capabilities
                .iter()
                .map(|c| c.to_string())
                .collect()
        ),
        list(plugin.info.triggers.iter().map(|t| t.to_string()).collect()),
        list(plugin.contract.imports.clone()),
        list(plugin.contract.exports.clone()),
    )
}

fn trigger(args: &TriggerArgs) -> Result<ExitCode> {
    let mode = match (&args.mode, args.dry_run) {
        (_, true) => Some(Mode::DryRun),
        (Some(mode), false) => Some(
            Mode::parse(mode)
                .with_context(|| format!("--mode {mode}: expected enforce, dry-run or approve"))?,
        ),
        (None, false) => None,
    };
    let event = match &args.event {
        Some(json) => EventRecord::from_json(json)?,
        None => EventRecord::manual(""),
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_dir("XDG_STATE_HOME", ".local/state"));
    let state = StateStore::new(Store::open(&state_dir)?);
    let report = match &args.policy {
        Some(policy) => {
            let name = args.component.to_string_lossy();
            let prepared = medic_agent::by_hand::prepare(policy, &name, &Catalog)?;
            let request = prepared.request(event, mode, Some(state));
            prepared.runtime.run(&prepared.loaded, request)
        }
        None => trigger_component(args, event, mode.unwrap_or_default(), state)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report_text(&report));
    }
    Ok(if report.status() == Status::Failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Run a component file with what the command line grants and sets.
fn trigger_component(
    args: &TriggerArgs,
    event: EventRecord,
    mode: Mode,
    state: StateStore,
) -> Result<RunReport> {
    let mut grants = Grants::none();
    for spec in &args.grants {
        grants
            .add_spec(spec)
            .with_context(|| format!("--grant {spec}"))?;
    }
    let settings = parse_settings(&args.settings)?;
    let timeout = parse_duration(&args.timeout)
        .map_err(anyhow::Error::msg)
        .and_then(|t| Ok(Limits::check_timeout(t)?))
        .with_context(|| format!("--timeout {}", args.timeout))?;
    let memory_bytes = parse_size(&args.memory)
        .map_err(anyhow::Error::msg)
        .and_then(|m| Ok(Limits::check_memory(m)?))
        .with_context(|| format!("--memory {}", args.memory))?;
    let limits = Limits {
        timeout,
        memory_bytes,
        fuel: args.fuel,
        ..Limits::default()
    };
    let runtime = runtime(&args.cache)?;
    let plugin = runtime.load_file_within(&args.component, limits.memory_bytes)?;
    plugin.check_grants(&grants)?;
    Ok(runtime.run(
        &plugin,
        RunRequest {
            run_id: new_id("run"),
            event: event.completed(),
            mode,
            grants: Arc::new(grants),
            limits,
            settings: Arc::new(settings),
            backends: match &args.lab {
                Some(root) => medic_lab::backend::backends(
                    medic_lab::Lab::open(root)?,
                    medic_lab::Server::Downstream,
                ),
                None => this_machine(&args.principals)?,
            },
            state: Some(Arc::new(state)),
            own_effects: None,
        },
    ))
}

/// `key=value` pairs into a settings map; a key given twice is an error.
/// A value that reads as a TOML value (`30`, `true`, `["Users", "x"]`) is
/// typed as the same value in a policy would be; anything else is text.
pub fn parse_settings(pairs: &[String]) -> Result<Settings> {
    let mut settings = Settings::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--setting {pair}: expected KEY=VALUE"))?;
        let typed = toml::from_str::<toml::Table>(&format!("value = {value}"))
            .ok()
            .and_then(|mut table| table.remove("value"));
        let value = match typed {
            Some(typed) => medic_agent::policy::setting_value(&typed),
            None => SettingValue::Text(value.to_string()),
        };
        if settings.insert(key.trim().to_string(), value).is_some() {
            bail!("--setting {key} is given twice");
        }
    }
    Ok(settings)
}

/// A run report for a terminal.
pub fn report_text(report: &RunReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plugin   {} {} (sha256 {}) in {} mode",
        report.plugin,
        report.version,
        &report.hash[..12.min(report.hash.len())],
        report.mode.as_str()
    );
    let _ = writeln!(
        out,
        "event    {} {} from {:?}, subject {:?}",
        report.event.id, report.event.kind, report.event.source, report.event.subject
    );
    let _ = writeln!(out, "calls    {}", report.calls.len());
    for (n, call) in report.calls.iter().enumerate() {
        let status = match (&call.error, call.denied, call.mutating, call.applied) {
            (Some(_), true, _, _) => "DENIED",
            (Some(_), false, _, _) => "error",
            (None, _, true, true) if call.changed => "applied",
            (None, _, true, true) => "no change",
            (None, _, true, false) => "planned",
            (None, _, false, _) => "ok",
        };
        let result = call.error.as_deref().unwrap_or(&call.result);
        let _ = writeln!(
            out,
            "  {:>3}. {} {} -> [{status}] {result}",
            n + 1,
            call.function,
            call.args
        );
    }
    for log in &report.logs {
        let _ = writeln!(out, "log      {:<5} {}", log.level, log.message);
    }
    if report.dropped_logs > 0 {
        let _ = writeln!(out, "log      ({} more lines dropped)", report.dropped_logs);
    }
    match &report.result {
        RunResult::Completed(outcome) => {
            let _ = writeln!(out, "outcome  {}: {}", outcome.status, outcome.summary);
            for action in &outcome.actions {
                let _ = writeln!(
                    out,
                    "  - {} {} {} ({})",
                    action.verb,
                    action.target,
                    action.detail,
                    if action.applied { "applied" } else { "planned" }
                );
            }
        }
        RunResult::Failed(failure) => {
            let _ = writeln!(out, "outcome  failed: {failure}");
        }
    }
    let _ = writeln!(out, "took     {:.3} ms", report.duration_us as f64 / 1000.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        assert!(colours_wanted(true, None));
        assert!(colours_wanted(true, Some("".into())));
        assert!(!colours_wanted(true, Some("1".into())));
        assert!(!colours_wanted(false, None));
        assert!(!colours_wanted(false, Some("1".into())));
    }

    #[test]
    fn settings_are_typed_as_in_a_policy_and_text_otherwise() {
        let pairs: Vec<String> = [
            "path=/srv/share",
            "count=30",
            "recursive=true",
            r#"readers=["Users", "NETWORK SERVICE"]"#,
            "pattern=[0-9]+",
            "mixed=[1, 2]",
        ]
        .map(String::from)
        .into();
        let settings = parse_settings(&pairs).unwrap();
        assert_eq!(settings["path"], SettingValue::Text("/srv/share".into()));
        assert_eq!(settings["count"], SettingValue::Integer(30));
        assert_eq!(settings["recursive"], SettingValue::Boolean(true));
        assert_eq!(
            settings["readers"],
            SettingValue::TextList(vec!["Users".into(), "NETWORK SERVICE".into()])
        );
        assert_eq!(settings["pattern"], SettingValue::Text("[0-9]+".into()));
        assert_eq!(settings["mixed"], SettingValue::Text("[1,2]".into()));
        assert!(parse_settings(&["a=1".into(), "a=2".into()]).is_err());
    }
}
