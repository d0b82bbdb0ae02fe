//! The lab: a simulated WSUS hierarchy, so that the WSUS pack can be run,
//! demonstrated and tested with no Windows server at hand.
//!
//! A lab is a folder holding an upstream and a downstream server (replica
//! or autonomous). Their databases live in one embedded store (`lab.redb`)
//! whose tables follow SUSDB's names (`tbUpdate`, `tbDeployment`,
//! `tbLanguage`, `tbConfigurationA`/`C`, ...), prefixed with the server.
//! The downstream server, the one the agent runs on, also has what a real
//! one has on disk: a content folder (`WSUS/WsusContent/<2 hex>/<SHA1>.<ext>`,
//! real files with real POSIX ACLs for the principals that stand in for
//! `NETWORK SERVICE` and `Users`), `LogFiles/SoftwareDistribution.log`, and
//! its Application and System event logs as JSON-lines journals.
//!
//! What cannot exist on Linux is simulated here: the WSUS server itself
//! (`sync`), its services (`server`), and the ways it breaks (`faults`).
//! Several processes may use a lab at once (the agent, `medic lab fault`,
//! `medic lab sync`): the store is opened in multi-writer mode.
//!
//! The modules: [`model`] (the tables' rows), [`catalog`] (the seeded
//! update catalog), [`content`] (the content folder and its ACLs),
//! [`logs`] (the event journals and `SoftwareDistribution.log`),
//! [`server`] (each server's updates, approvals, services, configuration),
//! [`sync`] (a synchronization), [`faults`] (the fault injector),
//! [`status`] (what `medic lab status` shows), and [`backend`]: the
//! downstream server seen through `medic-backends`' traits, what the
//! agent's `fs`, `services` and `wsus` calls act on when a policy selects
//! the lab.

pub mod backend;
pub mod catalog;
pub mod content;
pub mod faults;
pub mod logs;
pub mod model;
pub mod server;
pub mod status;
pub mod sync;
pub mod upstream;

use logs::Logs;
use medic_backends::PrincipalMap;
pub use model::{Server, UpdateState};
use model::{ServiceRow, ServiceState, StartupType, SyncMode, SyncRecord};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The lab's store, inside the lab folder.
pub const DATABASE_FILE: &str = "lab.redb";

/// Principals the lab maps Windows names to unless told otherwise: users
/// and groups every Debian-like system has.
pub const DEFAULT_PRINCIPALS: [(&str, &str); 2] =
    [("NETWORK SERVICE", "user:nobody"), ("Users", "group:users")];

/// Errors of the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0} is not a lab: it has no {DATABASE_FILE}; create one with `medic lab init {0}`")]
    NotALab(PathBuf),
    #[error("{0} already holds a lab; remove it first or pick another folder")]
    Exists(PathBuf),
    #[error("{0} is not empty: a lab is made in an empty or missing folder; pick another")]
    NotEmpty(PathBuf),
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("lab store: {0}")]
    Database(#[from] redb::Error),
    #[error("the lab store holds something it cannot read: {0}")]
    Corrupt(String),
    #[error("principal mapping: {0}")]
    Principal(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The lab does not model this.
    #[error("{0}")]
    Unsupported(String),
    /// The upstream (or the proxy to it) cannot be reached.
    #[error("the upstream server cannot be reached: {0}")]
    Unreachable(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for LabError {
            fn from(e: $t) -> Self {
                Self::Database(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type LabResult<T> = Result<T, LabError>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |cause| LabError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Table names, as SUSDB names them where it has one.
pub mod tables {
    /// Update metadata (`UpdateMeta`), keyed by update id.
    pub const UPDATE: &str = "tbUpdate";
    /// File download state and declined flag (`UpdateStatus`).
    pub const UPDATE_STATUS: &str = "tbUpdateStatus";
    /// Approvals: (update id, target group) -> 1 active, 0 inactive.
    pub const DEPLOYMENT: &str = "tbDeployment";
    /// Language short name -> enabled (`tbLanguage.Enabled`).
    pub const LANGUAGE: &str = "tbLanguage";
    /// Product and classification names by index.
    pub const PRODUCT: &str = "tbProduct";
    pub const CLASSIFICATION: &str = "tbClassification";
    /// Server settings: `SyncToMu`, `UpstreamServerName`, `ReplicaMode`.
    pub const CONFIG_A: &str = "tbConfigurationA";
    /// Server settings: `BitsDownloadPriorityForeground`, ...
    pub const CONFIG_C: &str = "tbConfigurationC";
    /// The lab's services (not in SUSDB: the Service Control Manager's).
    pub const SERVICE: &str = "tbService";
    /// Synchronizations, keyed by start time (JSON `SyncRecord`).
    pub const SYNC_HISTORY: &str = "tbSyncHistory";
    /// Facts about the lab itself (not a server's): mode, seed, principals,
    /// the network between the servers.
    pub const LAB: &str = "lab/tbLab";
}

/// The name of `table` of `server` in the store.
pub(crate) fn table_name(server: Server, table: &str) -> String {
    format!("{}/{table}", server.key())
}

/// How to create a lab.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Replica or autonomous downstream.
    pub mode: SyncMode,
    /// Updates the upstream has.
    pub upstream_updates: u64,
    /// Of those, how many the downstream knows (the first ones); `None`: all.
    pub downstream_updates: Option<u64>,
    /// Write the downstream's content files (off for store-only benchmarks).
    pub content_files: bool,
    /// Catalog seed.
    pub seed: u64,
    /// Windows principal -> local principal spec.
    pub principals: Vec<(String, String)>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            mode: SyncMode::Replica,
            upstream_updates: 3000,
            downstream_updates: None,
            content_files: true,
            seed: 1,
            principals: DEFAULT_PRINCIPALS
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }
}

/// An open lab.
#[derive(Clone)]
pub struct Lab {
    root: PathBuf,
    db: Arc<redb::Database>,
    mode: SyncMode,
    seed: u64,
    principal_specs: Vec<(String, String)>,
    principals: PrincipalMap,
    logs: Logs,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("root", &self.root)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Where the downstream server keeps things, under the lab folder.
pub mod layout {
    pub const CONTENT_DIR: &str = "downstream/WSUS";
    pub const WSUS_CONTENT: &str = "downstream/WSUS/WsusContent";
    pub const LOG_DIR: &str = "downstream/LogFiles";
    pub const SOFTWARE_DISTRIBUTION_LOG: &str = "downstream/LogFiles/SoftwareDistribution.log";
    pub const EVENT_LOG_DIR: &str = "downstream/EventLog";
}

impl Lab {
    fn open_database(path: &Path, create: bool) -> LabResult<redb::Database> {
        let builder = {
            let mut b = redb::Builder::new();
            b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
            b
        };
        Ok(if create {
            builder.create(path)?
        } else {
            builder.open(path)?
        })
    }

    /// Open the lab in `root`.
    pub fn open(root: &Path) -> LabResult<Self> {
        let db_path = root.join(DATABASE_FILE);
        if !db_path.is_file() {
            return Err(LabError::NotALab(root.to_path_buf()));
        }
        let root = std::fs::canonicalize(root).map_err(io_err(root))?;
        let db = Self::open_database(&db_path, false)?;
        let facts = read_lab_facts(&db)?;
        let get = |key: &str| {
            facts
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| LabError::Corrupt(format!("lab fact `{key}` is missing")))
        };
        let mode = match get("mode")?.as_str() {
            "replica" => SyncMode::Replica,
            "autonomous" => SyncMode::Autonomous,
            other => return Err(LabError::Corrupt(format!("unknown lab mode `{other}`"))),
        };
        let seed = get("seed")?
            .parse()
            .map_err(|_| LabError::Corrupt("lab seed".into()))?;
        let principal_specs: Vec<(String, String)> = facts
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("principal:")?.to_string(), v.clone())))
            .collect();
        Self::assemble(root, db, mode, seed, principal_specs)
    }

    fn assemble(
        root: PathBuf,
        db: redb::Database,
        mode: SyncMode,
        seed: u64,
        principal_specs: Vec<(String, String)>,
    ) -> LabResult<Self> {
        let mut principals = PrincipalMap::default();
        for (name, spec) in &principal_specs {
            principals
                .insert(name, spec)
                .map_err(|e| LabError::Principal(format!("{name}: {e}")))?;
        }
        let logs = Logs::new(
            root.join(layout::EVENT_LOG_DIR),
            root.join(layout::SOFTWARE_DISTRIBUTION_LOG),
            Server::Downstream.host_name(),
        );
        Ok(Self {
            root,
            db: Arc::new(db),
            mode,
            seed,
            principal_specs,
            principals,
            logs,
        })
    }

    /// Create a lab in `root` (an empty or missing folder), seeded with a
    /// catalog, approvals, downloaded content and a first successful sync.
    ///
    /// All or nothing: the lab is built in a hidden folder beside `root`
    /// and renamed into place once complete, so a failure (or a kill) part
    /// way leaves no half lab at `root` to block the next attempt; on a
    /// failure the hidden folder, and any parent folder made for it, is
    /// removed.
    pub fn init(root: &Path, options: &InitOptions) -> LabResult<Self> {
        if root.join(DATABASE_FILE).exists() {
            return Err(LabError::Exists(root.to_path_buf()));
        }
        let root = match std::fs::read_dir(root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(LabError::NotEmpty(root.to_path_buf()));
                }
                std::fs::canonicalize(root).map_err(io_err(root))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::path::absolute(root).map_err(io_err(root))?
            }
            Err(e) => return Err(io_err(root)(e)),
        };
        let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
            return Err(LabError::Invalid(format!(
                "{} cannot hold a lab: name a folder",
                root.display()
            )));
        };
        let made_parents = create_parents(parent)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let building = parent.join(format!(
            ".{}.partial-{}-{nanos}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if let Err(e) = std::fs::create_dir(&building) {
            for dir in made_parents.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(io_err(&building)(e));
        }
        let built = Self::build(&building, options)
            .and_then(|lab| {
                // Closed before the move, opened again where it lands.
                drop(lab);
                std::fs::rename(&building, &root).map_err(|cause| match cause.kind() {
                    std::io::ErrorKind::DirectoryNotEmpty => LabError::NotEmpty(root.clone()),
                    _ => io_err(&root)(cause),
                })
            })
            .and_then(|()| Self::open(&root));
        if built.is_err() {
            let _ = std::fs::remove_dir_all(&building);
            for dir in made_parents.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        built
    }

    /// Build a complete lab in the folder `root`, which exists and is
    /// empty.
    fn build(root: &Path, options: &InitOptions) -> LabResult<Self> {
        for dir in [layout::WSUS_CONTENT, layout::LOG_DIR, layout::EVENT_LOG_DIR] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let root = std::fs::canonicalize(root).map_err(io_err(root))?;
        let db = Self::open_database(&root.join(DATABASE_FILE), true)?;
        let lab = Self::assemble(
            root,
            db,
            options.mode,
            options.seed,
            options.principals.clone(),
        )?;
        lab.seed_store(options)?;
        // A server always has its logs, even before anything goes wrong.
        for log in [logs::EventLog::Application, logs::EventLog::System] {
            let path = lab.event_log(log);
            std::fs::File::create(&path).map_err(io_err(&path))?;
        }
        lab.write_log_line(
            "Info",
            "WsusService.1",
            "WsusService.OnStart",
            "WSUS service started",
        )?;
        lab.prepare_content_folders()?;
        if options.content_files {
            lab.write_ready_content()?;
        }
        for server in Server::ALL {
            let now = medic_backends::now_ms();
            lab.record_sync(server, &SyncRecord::begun(now))?;
        }
        Ok(lab)
    }

    fn seed_store(&self, options: &InitOptions) -> LabResult<()> {
        let upstream_count = options.upstream_updates;
        let downstream_count = options
            .downstream_updates
            .unwrap_or(upstream_count)
            .min(upstream_count);
        let txn = self.db.begin_write()?;
        {
            let mut lab = txn.open_table(TableDefinition::<&str, &str>::new(tables::LAB))?;
            lab.insert("mode", options.mode.name())?;
            lab.insert("seed", options.seed.to_string().as_str())?;
            lab.insert("published", upstream_count.to_string().as_str())?;
            lab.insert("proxy_strips_range", "0")?;
            lab.insert("foreground_loaded", "0")?;
            for (name, spec) in &options.principals {
                lab.insert(format!("principal:{name}").as_str(), spec.as_str())?;
            }
        }
        for server in Server::ALL {
            let count = match server {
                Server::Upstream => upstream_count,
                Server::Downstream => downstream_count,
            };
            let name = |t: &str| table_name(server, t);
            let (product_t, class_t, lang_t, a_t, c_t, svc_t) = (
                name(tables::PRODUCT),
                name(tables::CLASSIFICATION),
                name(tables::LANGUAGE),
                name(tables::CONFIG_A),
                name(tables::CONFIG_C),
                name(tables::SERVICE),
            );
            let mut products = txn.open_table(TableDefinition::<u8, &str>::new(&product_t))?;
            for (i, p) in catalog::PRODUCTS.iter().enumerate() {
                products.insert(i as u8, *p)?;
            }
            let mut classes = txn.open_table(TableDefinition::<u8, &str>::new(&class_t))?;
            for (i, c) in catalog::CLASSIFICATIONS.iter().enumerate() {
                classes.insert(i as u8, *c)?;
            }
            let mut languages = txn.open_table(TableDefinition::<&str, bool>::new(&lang_t))?;
            for l in catalog::LANGUAGES {
                languages.insert(l, true)?;
            }
            let mut config_a = txn.open_table(TableDefinition::<&str, &str>::new(&a_t))?;
            let downstream = server == Server::Downstream;
            config_a.insert("SyncToMu", if downstream { "0" } else { "1" })?;
            config_a.insert(
                "UpstreamServerName",
                if downstream {
                    Server::Upstream.host_name()
                } else {
                    ""
                },
            )?;
            config_a.insert(
                "ReplicaMode",
                if downstream && options.mode == SyncMode::Replica {
                    "1"
                } else {
                    "0"
                },
            )?;
            let mut config_c = txn.open_table(TableDefinition::<&str, &str>::new(&c_t))?;
            config_c.insert("BitsDownloadPriorityForeground", "0")?;
            config_c.insert("DownloadExpressPackages", "0")?;
            config_c.insert("HostOnMu", "0")?;
            for (name, default) in upstream::PROXY_CONFIG {
                config_c.insert(name, default)?;
            }
            let mut services = txn.open_table(TableDefinition::<&str, u8>::new(&svc_t))?;
            for (service, _) in model::SERVICES {
                let startup = if service == "BITS" {
                    StartupType::Manual
                } else {
                    StartupType::Automatic
                };
                let row = ServiceRow {
                    state: ServiceState::Running,
                    startup,
                };
                services.insert(service, row.encode())?;
            }
            drop((products, classes, languages, config_a, config_c, services));
            let mut writer = server::UpdateWriter::open(&txn, server)?;
            for index in 0..count {
                let (id, meta) = catalog::update(options.seed, index);
                let approved = approved_at_seed(options.seed, index, &meta);
                let state = if server == Server::Upstream || approved {
                    UpdateState::Ready
                } else {
                    UpdateState::NotReady
                };
                writer.insert(&id, &meta, state, approved.then_some(true))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The lab folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Replica or autonomous.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The downstream's `ContentDir` (the folder holding `WsusContent`).
    pub fn content_dir(&self) -> PathBuf {
        self.root.join(layout::CONTENT_DIR)
    }

    pub fn wsus_content(&self) -> PathBuf {
        self.root.join(layout::WSUS_CONTENT)
    }

    pub fn software_distribution_log(&self) -> PathBuf {
        self.root.join(layout::SOFTWARE_DISTRIBUTION_LOG)
    }

    pub fn event_log(&self, log: logs::EventLog) -> PathBuf {
        self.logs.event_log_path(log)
    }

    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Write one event to the downstream's `log`.
    pub(crate) fn write_event(
        &self,
        log: logs::EventLog,
        id: u32,
        level: logs::Level,
        source: &str,
        message: &str,
    ) -> LabResult<()> {
        let path = self.event_log(log);
        self.logs
            .event(log, id, level, source, message)
            .map_err(io_err(&path))
    }

    /// Write one `SoftwareDistribution.log` line.
    pub(crate) fn write_log_line(
        &self,
        level: &str,
        thread: &str,
        component: &str,
        message: &str,
    ) -> LabResult<()> {
        let path = self.software_distribution_log();
        self.logs
            .software_distribution(level, thread, component, message)
            .map_err(io_err(&path))
    }

    /// Windows principal names mapped to this system's users and groups.
    pub fn principals(&self) -> &PrincipalMap {
        &self.principals
    }

    pub fn principal_specs(&self) -> &[(String, String)] {
        &self.principal_specs
    }

    pub(crate) fn database(&self) -> &redb::Database {
        &self.db
    }

    /// A lab-wide fact.
    pub(crate) fn fact(&self, key: &str) -> LabResult<Option<String>> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(TableDefinition::<&str, &str>::new(tables::LAB)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(key)?.map(|v| v.value().to_string()))
    }

    pub(crate) fn set_fact(&self, key: &str, value: &str) -> LabResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(TableDefinition::<&str, &str>::new(tables::LAB))?;
            table.insert(key, value)?;
        }
        txn.commit()?;
        Ok(())
    }
}

/// Create `dir` and its missing parents; the folders made, outermost
/// first.
fn create_parents(dir: &Path) -> LabResult<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect();
    let mut made = Vec::new();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(&d) {
            Ok(()) => made.push(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                for d in made.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
                return Err(io_err(&d)(e));
            }
        }
    }
    Ok(made)
}

/// Whether update `index` is approved when the lab is created: every
/// update the automatic approval rule takes, and one in five of the rest.
fn approved_at_seed(seed: u64, index: u64, meta: &model::UpdateMeta) -> bool {
    catalog::auto_approved(meta) || (seed ^ index.wrapping_mul(0x9e37_79b9)).is_multiple_of(5)
}

fn read_lab_facts(db: &redb::Database) -> LabResult<Vec<(String, String)>> {
    let txn = db.begin_read()?;
    let table = txn.open_table(TableDefinition::<&str, &str>::new(tables::LAB))?;
    let mut facts = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        facts.push((k.value().to_string(), v.value().to_string()));
    }
    Ok(facts)
}

/// A small lab in a temporary folder, for unit tests.
#[cfg(test)]
pub(crate) fn small_lab(mode: SyncMode) -> (tempfile::TempDir, Lab) {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::init(
        &dir.path().join("lab"),
        &InitOptions {
            mode,
            upstream_updates: 300,
            ..InitOptions::default()
        },
    )
    .unwrap();
    (dir, lab)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(principal: &str) -> InitOptions {
        InitOptions {
            upstream_updates: 50,
            principals: vec![
                ("NETWORK SERVICE".into(), "user:nobody".into()),
                ("Users".into(), principal.into()),
            ],
            ..InitOptions::default()
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_init_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/lab");
        for _ in 0..20 {
            let error = Lab::init(&root, &options("user:medic-no-such-user")).unwrap_err();
            assert!(matches!(error, LabError::Principal(_)), "{error}");
            assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
        }
        // Into an empty folder that exists: it stays when the init fails.
        std::fs::create_dir_all(&root).unwrap();
        for _ in 0..5 {
            Lab::init(&root, &options("user:medic-no-such-user")).unwrap_err();
            assert_eq!(listing(dir.path()), ["a"]);
            assert!(listing(&root).is_empty());
        }
        let lab = Lab::init(&root, &options("group:users")).unwrap();
        assert_eq!(lab.root(), std::fs::canonicalize(&root).unwrap());
        assert!(root.join(DATABASE_FILE).is_file());
        assert!(lab.wsus_content().is_dir());
        assert_eq!(listing(root.parent().unwrap()), ["lab"]);
        drop(lab);
        let error = Lab::init(&root, &options("group:users")).unwrap_err();
        assert!(matches!(error, LabError::Exists(_)), "{error}");
        Lab::open(&root).unwrap();
    }

    #[test]
    fn a_lab_is_made_only_where_it_can_be_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Under a file: nothing can be made.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let error = Lab::init(&file.join("lab"), &options("group:users")).unwrap_err();
        assert!(matches!(error, LabError::Io { .. }), "{error}");
        assert_eq!(listing(dir.path()), ["file"]);
        // A folder with something in it is not taken over.
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("notes.txt"), "mine").unwrap();
        let error = Lab::init(&full, &options("group:users")).unwrap_err();
        assert!(matches!(error, LabError::NotEmpty(_)), "{error}");
        assert!(error.to_string().contains("not empty"), "{error}");
        assert_eq!(listing(&full), ["notes.txt"]);
        assert_eq!(listing(dir.path()), ["file", "full"]);
    }
}
