//! `medic lab`: create a lab, show it, synchronize it, break it.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use medic_lab::faults::Fault;
use medic_lab::model::{SyncMode, SyncRecord, SyncResult};
use medic_lab::{InitOptions, Lab};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create a lab: an upstream and a downstream WSUS server with a
    /// catalog, approvals, downloaded content and logs.
    Init(InitArgs),
    /// Show both servers: services, last sync, updates by state,
    /// approvals, languages, content permissions.
    Status(StatusArgs),
    /// Synchronize the downstream with the upstream and download what is
    /// approved; exit 2 if the sync or a download fails.
    Sync(LabArgs),
    /// Break the lab the way real servers break, then run its next sync.
    Fault(FaultArgs),
    /// Do by hand what an administrator does about a fault that no plugin
    /// may mend (a proxy account's new password).
    Mend(MendArgs),
}

#[derive(Debug, Args)]
pub struct MendArgs {
    #[command(flatten)]
    pub lab: LabArgs,

    /// The fault to mend by hand.
    pub kind: String,
}

#[derive(Debug, Args)]
pub struct LabArgs {
    /// The lab folder.
    #[arg(long, env = "MEDIC_LAB", default_value = "lab")]
    pub lab: PathBuf,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to create the lab in (empty or missing).
    pub dir: PathBuf,

    /// The downstream is an autonomous server [default: a replica].
    #[arg(long, conflicts_with = "replica")]
    pub autonomous: bool,

    /// The downstream is a replica of the upstream (the default).
    #[arg(long)]
    pub replica: bool,

    /// Updates in the upstream's catalog.
    #[arg(long, default_value_t = 3000)]
    pub updates: u64,

    /// Catalog seed (the same seed gives the same catalog).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Map a Windows principal to a local user or group (repeatable)
    /// [default: "NETWORK SERVICE=user:nobody", "Users=group:users"].
    #[arg(long = "principal", value_name = "NAME=user:NAME|group:NAME")]
    pub principals: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub lab: LabArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FaultArgs {
    #[command(flatten)]
    pub lab: LabArgs,

    /// The fault; `--list` shows them.
    #[arg(required_unless_present = "list")]
    pub kind: Option<String>,

    /// List the faults the lab can inject.
    #[arg(long)]
    pub list: bool,
}

pub fn run(command: LabCommand) -> Result<ExitCode> {
    match command {
        LabCommand::Init(args) => init(&args),
        LabCommand::Status(args) => {
            let lab = Lab::open(&args.lab.lab)?;
            let status = lab.status()?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Sync(args) => {
            let lab = Lab::open(&args.lab)?;
            let record = lab.sync()?;
            println!("{}", sync_line(&record));
            Ok(sync_exit(&record))
        }
        LabCommand::Fault(args) => fault(&args),
        LabCommand::Mend(args) => {
            let fault = Fault::parse(&args.kind)?;
            let lab = Lab::open(&args.lab.lab)?;
            for line in lab.mend_by_hand(fault)? {
                println!("mended {}: {line}", fault.name());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init(args: &InitArgs) -> Result<ExitCode> {
    let mut options = InitOptions {
        mode: if args.autonomous {
            SyncMode::Autonomous
        } else {
            SyncMode::Replica
        },
        upstream_updates: args.updates,
        seed: args.seed,
        ..InitOptions::default()
    };
    for mapping in &args.principals {
        let (name, spec) = mapping
            .split_once('=')
            .with_context(|| format!("--principal {mapping}: expected NAME=user:NAME"))?;
        options
            .principals
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name.trim()));
        options
            .principals
            .push((name.trim().to_string(), spec.trim().to_string()));
    }
    let lab = Lab::init(&args.dir, &options)?;
    let status = lab.status()?;
    println!(
        "created a lab in {}: {} (upstream) and {} ({})",
        lab.root().display(),
        medic_lab::Server::Upstream.host_name(),
        medic_lab::Server::Downstream.host_name(),
        lab.mode().name()
    );
    print!("{}", status.render());
    println!(
        "\nlogs:    {}\n         {}\n         {}",
        lab.software_distribution_log().display(),
        lab.event_log(medic_lab::logs::EventLog::Application)
            .display(),
        lab.event_log(medic_lab::logs::EventLog::System).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn fault(args: &FaultArgs) -> Result<ExitCode> {
    if args.list {
        for fault in Fault::ALL {
            println!("{:<22} {}", fault.name(), fault.description());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let fault = Fault::parse(args.kind.as_deref().unwrap_or_default())?;
    let lab = Lab::open(&args.lab.lab)?;
    let injection = lab.inject(fault)?;
    println!("injected {}:", fault.name());
    for line in &injection.broken {
        println!("  {line}");
    }
    println!(
        "then the downstream synchronized: {}",
        sync_line(&injection.sync)
    );
    Ok(ExitCode::SUCCESS)
}

fn sync_line(record: &SyncRecord) -> String {
    match record.result {
        SyncResult::Succeeded if record.download_failures > 0 => format!(
            "sync succeeded ({} new updates, {} files downloaded), but {} downloads FAILED: {}",
            record.imported,
            record.downloaded,
            record.download_failures,
            record
                .first_download_failure
                .as_deref()
                .unwrap_or("no reason given")
        ),
        SyncResult::Succeeded => format!(
            "sync succeeded ({} new updates, {} files downloaded)",
            record.imported, record.downloaded
        ),
        SyncResult::Failed => format!(
            "sync FAILED ({}): {}",
            record.error.as_deref().unwrap_or("no SynchronizationError"),
            record.reason.as_deref().unwrap_or("no reason given")
        ),
        SyncResult::Canceled => "sync canceled".into(),
    }
}

fn sync_exit(record: &SyncRecord) -> ExitCode {
    if record.result == SyncResult::Succeeded && record.download_failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
