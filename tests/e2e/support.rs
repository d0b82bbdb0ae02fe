//! Shared helpers: where the built components are, one runtime for the
//! suite, and run requests with sensible defaults.

use medic_backends::{Backends, PrincipalMap};
use medic_sandbox::EventRecord;
use medic_sandbox::Grants;
use medic_sandbox::Mode;
use medic_sandbox::{Limits, LoadedPlugin, RunReport, RunRequest, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How long a test waits for a state before it fails: long, so that the
/// suite passes on a loaded machine; a passing test waits only as long as
/// the state takes.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// A component built by `cargo xtask plugins`.
pub fn component(name: &str) -> PathBuf {
    let path = workspace()
        .join("target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first with `cargo xtask plugins` (or run the suite with `cargo xtask test`)",
        path.display()
    );
    path
}

/// One runtime for the whole suite, with a compile cache under target/.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(&RuntimeConfig {
            cache_dir: Some(workspace().join("target/test-cache")),
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

pub fn load(name: &str) -> LoadedPlugin {
    runtime().load_file(&component(name)).unwrap()
}

/// A run request builder.
pub struct Run {
    pub grants: Grants,
    pub settings: medic_sandbox::Settings,
    pub mode: Mode,
    pub limits: Limits,
    pub principals: PrincipalMap,
    pub state: Option<medic_agent::audit::state::StateStore>,
}

impl Default for Run {
    fn default() -> Self {
        Self {
            grants: Grants::none(),
            settings: medic_sandbox::Settings::new(),
            mode: Mode::Enforce,
            limits: Limits::default(),
            principals: PrincipalMap::default(),
            state: None,
        }
    }
}

impl Run {
    pub fn grant(mut self, spec: &str) -> Self {
        self.grants.add_spec(spec).unwrap();
        self
    }

    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// A list setting, as a policy's array of strings gives it.
    pub fn setting_list(mut self, key: &str, items: &[&str]) -> Self {
        self.settings.insert(
            key.into(),
            medic_sandbox::SettingValue::TextList(items.iter().map(|i| i.to_string()).collect()),
        );
        self
    }

    pub fn with_state(mut self, state: medic_agent::audit::state::StateStore) -> Self {
        self.state = Some(state);
        self
    }

    pub fn principal(mut self, mapping: &str) -> Self {
        self.principals.insert_spec(mapping).unwrap();
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn request(self) -> RunRequest {
        RunRequest {
            run_id: medic_sandbox::new_id("test"),
            event: EventRecord::manual("test").completed(),
            mode: self.mode,
            grants: Arc::new(self.grants),
            limits: self.limits,
            settings: Arc::new(self.settings),
            backends: Backends::local(self.principals),
            state: self
                .state
                .map(|s| Arc::new(s) as Arc<dyn medic_sandbox::PluginState>),
            own_effects: None,
        }
    }

    /// Load `plugin`, check grants, run it once.
    pub fn on(self, plugin: &LoadedPlugin) -> RunReport {
        self.on_subject(plugin, "test")
    }

    /// [`Run::on`], with a manual event about `subject`.
    pub fn on_subject(self, plugin: &LoadedPlugin, subject: &str) -> RunReport {
        let mut request = self.request();
        request.event = EventRecord::manual(subject).completed();
        plugin.check_grants(&request.grants).unwrap();
        runtime().run(plugin, request)
    }
}

/// A real `medic run` on a policy, its log appended to `agent.log` beside
/// the policy; killed (SIGKILL) when dropped, so a failing test leaves no
/// agent behind.
pub struct MedicRun(std::process::Child);

impl MedicRun {
    pub fn start(policy: &Path) -> Self {
        Self::start_with(policy, |_| {})
    }

    /// Start it with its command changed first (its environment, say).
    pub fn start_with(policy: &Path, change: impl FnOnce(&mut std::process::Command)) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(policy.with_file_name("agent.log"))
            .unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_medic"));
        command
            .args(["run", "--policy"])
            .arg(policy)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        change(&mut command);
        Self(command.spawn().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Ask it to stop (SIGTERM), as a service manager does, and wait until
    /// it has.
    #[cfg(unix)]
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill has no memory effects; the pid is our own child's,
        // not yet waited for.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not stop within {PATIENCE:?} of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for MedicRun {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The run records in the store of `state` (none while there is no
/// store to read).
pub fn run_records(state: &Path) -> Vec<medic_agent::audit::journal::AuditRecord> {
    use medic_agent::audit::journal::{Filter, Journal, RecordKind};
    let Ok(store) = medic_agent::audit::Store::open(state) else {
        return Vec::new();
    };
    Journal::new(store)
        .list(&Filter {
            kind: Some(RecordKind::Run),
            ..Filter::default()
        })
        .unwrap_or_default()
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves none behind.
pub struct KillOnDrop<'a>(pub &'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
