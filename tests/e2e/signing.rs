//! Signed plugins end to end, through the real `medic` binary: keys made
//! with `medic plugins keygen`, components signed with `medic plugins
//! sign`, accepted by `medic check` and `medic plugins verify`; unsigned,
//! wrongly signed, changed and mismatched components refused with the
//! component, the reason and the fix. And in a serving agent: a refused
//! replacement is recorded while the last good version keeps serving, a
//! signed one is taken (also when its signature lands after it), and a
//! version whose key is no longer trusted stops.

use crate::agent::{Running, install, new_build_of, send_manual};
use crate::support::workspace;
use medic_agent::audit::journal::{AuditRecord, Filter, RecordKind};
use medic_sandbox::content_hash;
use medic_sandbox::signature::PublicKey;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn medic(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `medic` in `dir`, which must succeed; its standard output.
fn medic_ok(dir: &Path, args: &[&str]) -> String {
    let out = medic(dir, args);
    assert!(
        out.status.success(),
        "medic {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `medic` in `dir`, which must refuse with exit 1; its standard error.
fn medic_refuses(dir: &Path, args: &[&str]) -> String {
    let out = medic(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "medic {args:?} did not refuse: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// A key pair made by `medic plugins keygen` in `dir/keys`.
struct Key {
    secret: PathBuf,
    public: PathBuf,
    id: String,
}

fn keygen(dir: &Path, name: &str) -> Key {
    let out = medic_ok(
        dir,
        &["plugins", "keygen", "--out", &format!("keys/{name}")],
    );
    let public = dir.join(format!("keys/{name}.pub"));
    let key = PublicKey::parse(&std::fs::read_to_string(&public).unwrap()).unwrap();
    assert!(
        out.contains(&format!("key id      {}", key.key_id())),
        "{out}"
    );
    assert!(
        out.contains(&format!("trusted_keys = [\"{key}\"]")),
        "{out}"
    );
    Key {
        secret: dir.join(format!("keys/{name}.key")),
        public,
        id: key.key_id(),
    }
}

/// `medic plugins sign --key KEY COMPONENT`.
fn sign(dir: &Path, key: &Key, component: &Path) {
    let out = medic_ok(
        dir,
        &[
            "plugins",
            "sign",
            "--key",
            key.secret.to_str().unwrap(),
            component.to_str().unwrap(),
        ],
    );
    assert!(out.contains(&format!("(key {})", key.id)), "{out}");
}

fn signature_of(component: &Path) -> PathBuf {
    medic_sandbox::signature::signature_path(component)
}

/// A folder with `plugins/fixture-noop.wasm` (unsigned) and a policy
/// running it on manual events; `agent_extra` goes into `[agent]`.
fn noop_layout(dir: &Path, agent_extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(
        workspace().join("target/plugins/fixture-noop.wasm"),
        dir.join("plugins/fixture-noop.wasm"),
    )
    .unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"[agent]
state_dir = "state"
plugin_dir = "plugins"
{agent_extra}

[plugins.fixture-noop]
component = "fixture-noop.wasm"
grants = {{ fs-read = ["/tmp"] }}

[[plugins.fixture-noop.triggers]]
kind = "manual"
"#
        ),
    )
    .unwrap();
    policy
}

#[test]
fn keygen_then_sign_then_check_accepts_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ops = keygen(root, "ops");
    let mode = std::fs::metadata(&ops.secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is its owner's only");

    // keygen never overwrites a key.
    let before = std::fs::read(&ops.secret).unwrap();
    let stderr = medic_refuses(root, &["plugins", "keygen", "--out", "keys/ops"]);
    assert!(stderr.contains("keys/ops.key exists"), "{stderr}");
    assert_eq!(std::fs::read(&ops.secret).unwrap(), before);

    let policy = noop_layout(root, "trusted_keys = [\"keys/ops.pub\"]");
    let component = root.join("plugins/fixture-noop.wasm");
    // Unsigned: refused, with the command that fixes it.
    let stderr = medic_refuses(root, &["check", "--policy", "policy.toml"]);
    assert!(
        stderr.contains("policy.toml:6:1: plugin `fixture-noop`: "),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "is unsigned: there is no {} beside it, and a signature is required",
            signature_of(&component).display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("fix: sign it with a key the policy trusts: medic plugins sign --key"),
        "{stderr}"
    );

    sign(root, &ops, &component);
    let signature = std::fs::read_to_string(signature_of(&component)).unwrap();
    let hash = content_hash(&std::fs::read(&component).unwrap());
    assert!(
        signature.contains(&format!(
            "trusted comment: file:fixture-noop.wasm sha256:{hash}"
        )),
        "{signature}"
    );
    let out = medic_ok(root, &["check", "--policy", policy.to_str().unwrap()]);
    assert!(out.contains(&format!("signed by {}", ops.id)), "{out}");

    // verify: by key file, by key line, and as the policy's agent would.
    let line = std::fs::read_to_string(&ops.public)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    for trust in [
        vec!["--key", "keys/ops.pub"],
        vec!["--key", &line],
        vec!["--policy", "policy.toml"],
        vec!["--policy", "policy.toml", "--plugin", "fixture-noop"],
    ] {
        let args = [
            &["plugins", "verify"][..],
            &trust,
            &["plugins/fixture-noop.wasm"],
        ]
        .concat();
        let out = medic_ok(root, &args);
        assert!(
            out.contains(&format!("signed by key {}", ops.id)),
            "{args:?}: {out}"
        );
        assert!(
            out.contains("trusted comment  file:fixture-noop.wasm sha256:"),
            "{out}"
        );
    }
    // The minisign tool reads medic's keys and signatures, where it is
    // installed.
    if let Ok(out) = Command::new("minisign")
        .args(["-V", "-p"])
        .arg(&ops.public)
        .arg("-m")
        .arg(&component)
        .output()
    {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[test]
fn check_and_verify_refuse_what_no_trusted_key_signed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ops = keygen(root, "ops");
    let other = keygen(root, "other");
    let policy = noop_layout(root, "trusted_keys = [\"keys/ops.pub\"]");
    let component = root.join("plugins/fixture-noop.wasm");
    let original = std::fs::read(&component).unwrap();
    let signature = signature_of(&component);
    let panicker = root.join("plugins/fixture-panicker.wasm");
    std::fs::copy(
        workspace().join("target/plugins/fixture-panicker.wasm"),
        &panicker,
    )
    .unwrap();

    type Setup<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Setup, String)> = vec![
        (
            "signed by a key the policy does not trust",
            Box::new(|| sign(root, &other, &component)),
            format!(
                "is signed by key {}, which is not trusted for it (trusted: {})",
                other.id, ops.id
            ),
        ),
        (
            "one byte changed after signing",
            Box::new(|| {
                sign(root, &ops, &component);
                let mut bytes = original.clone();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                std::fs::write(&component, bytes).unwrap();
            }),
            format!(
                "does not match its signature {}: the signature by trusted key {} was made for other bytes",
                signature.display(),
                ops.id
            ),
        ),
        (
            "the signature of another component",
            Box::new(|| {
                sign(root, &ops, &panicker);
                std::fs::copy(signature_of(&panicker), &signature).unwrap();
            }),
            "does not match its signature".to_string(),
        ),
        (
            "a signature that is not one",
            Box::new(|| {
                std::fs::write(&signature, "untrusted comment: x\nnot a signature\n").unwrap()
            }),
            "has a signature that is not a valid minisign signature".to_string(),
        ),
        (
            "no signature",
            Box::new(|| {
                let _ = std::fs::remove_file(&signature);
            }),
            "is unsigned".to_string(),
        ),
    ];
    for (what, setup, expected) in cases {
        std::fs::write(&component, &original).unwrap();
        setup();
        let hash = content_hash(&std::fs::read(&component).unwrap());
        let stderr = medic_refuses(root, &["check", "--policy", policy.to_str().unwrap()]);
        let head = format!(
            "policy.toml:6:1: plugin `fixture-noop`: {} (sha256 {}) {expected}",
            component.display(),
            &hash[..12]
        );
        assert!(
            stderr.contains(&head),
            "{what}: expected {head:?} in {stderr}"
        );
        assert!(stderr.contains("fix: "), "{what}: {stderr}");
        let stderr = medic_refuses(
            root,
            &[
                "plugins",
                "verify",
                "--policy",
                "policy.toml",
                "plugins/fixture-noop.wasm",
            ],
        );
        // Paths as given: relative here.
        let reason = expected.split(" /").next().unwrap();
        assert!(
            stderr.starts_with("refused: plugins/fixture-noop.wasm (sha256 ")
                && stderr.contains(reason),
            "{what}: {stderr}"
        );
        // The agent refuses to start on it.
        let stderr = medic_refuses(root, &["run", "--policy", "policy.toml"]);
        assert!(stderr.contains(&expected), "{what}: {stderr}");
    }

    // With require_signatures = false, an unsigned component loads, and one
    // signed by an untrusted key is still refused.
    let policy = noop_layout(
        root,
        "trusted_keys = [\"keys/ops.pub\"]\nrequire_signatures = false",
    );
    let _ = std::fs::remove_file(&signature);
    let out = medic_ok(root, &["check", "--policy", policy.to_str().unwrap()]);
    assert!(
        out.contains("unsigned (require_signatures = false)"),
        "{out}"
    );
    let out = medic_ok(
        root,
        &[
            "plugins",
            "verify",
            "--policy",
            "policy.toml",
            "plugins/fixture-noop.wasm",
        ],
    );
    assert!(
        out.contains("requires no signature: the agent would load it"),
        "{out}"
    );
    sign(root, &other, &component);
    let stderr = medic_refuses(root, &["check", "--policy", policy.to_str().unwrap()]);
    assert!(stderr.contains("which is not trusted for it"), "{stderr}");
}

/// Every record of the agent's journal.
fn records(agent: &Running) -> Vec<AuditRecord> {
    agent.ctx.journal.list(&Filter::default()).unwrap()
}

/// Wait (up to the suite's patience) for a record after `after` matching `pred`.
fn wait_for_record(
    agent: &Running,
    after: u64,
    what: &str,
    pred: impl Fn(&AuditRecord) -> bool,
) -> AuditRecord {
    let deadline = Instant::now() + crate::support::PATIENCE;
    loop {
        let all = records(agent);
        if let Some(found) = all.iter().find(|r| r.seq > after && pred(r)) {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no record {what} within {:?}: {:#?}",
            crate::support::PATIENCE,
            all.iter()
                .map(|r| format!("{} {:?} {}", r.seq, r.kind, r.summary))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_seq(agent: &Running) -> u64 {
    records(agent).last().map_or(0, |r| r.seq)
}

/// Send a manual event and return the hash of the component that ran it.
fn served_hash(agent: &Running, root: &Path, subject: &str) -> String {
    send_manual(&root.join("state"), "fixture-noop", subject);
    let run = agent.wait_for_run(&format!("for {subject}"), |r| {
        r.detail["event"]["subject"] == subject
    });
    assert_eq!(run.status.as_str(), "healthy", "{run:#?}");
    run.detail["hash"].as_str().unwrap().to_string()
}

/// How a replacement is signed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Replacement {
    /// By the trusted key; the component lands before its signature.
    SignedAfter,
    /// By the trusted key; the signature lands first.
    SignedBefore,
    /// No signature: the old one is removed first.
    Unsigned,
    /// By a key the policy does not trust.
    WrongKey,
    /// By the trusted key, then one byte changed.
    Tampered,
    /// With the trusted key's signature of another build.
    OtherSignature,
}

impl Replacement {
    fn good(self) -> bool {
        matches!(self, Self::SignedAfter | Self::SignedBefore)
    }

    /// What the rejection of this replacement says.
    fn refusal(self) -> &'static str {
        match self {
            Self::Unsigned => "is unsigned",
            Self::WrongKey => "which is not trusted for it",
            Self::Tampered | Self::OtherSignature => "does not match its signature",
            Self::SignedAfter | Self::SignedBefore => unreachable!(),
        }
    }
}

#[test]
fn hot_reload_takes_signed_builds_and_refuses_the_others_while_the_last_good_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ops = keygen(root, "ops");
    let other = keygen(root, "other");
    let policy = noop_layout(root, "trusted_keys = [\"keys/ops.pub\"]");
    let plugins = root.join("plugins");
    let staging = root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let v1 = std::fs::read(plugins.join("fixture-noop.wasm")).unwrap();
    sign(root, &ops, &plugins.join("fixture-noop.wasm"));
    let agent = Running::start(&policy);
    let mut serving = content_hash(&v1);
    assert_eq!(served_hash(&agent, root, "start"), serving);

    const BAD: [Replacement; 4] = [
        Replacement::Unsigned,
        Replacement::WrongKey,
        Replacement::Tampered,
        Replacement::OtherSignature,
    ];
    let staged = staging.join("fixture-noop.wasm");
    let mut outcomes = Vec::new();
    for n in 0..20 {
        let kind = match n % 2 {
            0 if n % 4 == 0 => Replacement::SignedAfter,
            0 => Replacement::SignedBefore,
            _ => BAD[(n / 2) % BAD.len()],
        };
        let mut bytes = new_build_of(&v1, &format!("build-{n}"));
        std::fs::write(&staged, &bytes).unwrap();
        let _ = std::fs::remove_file(signature_of(&staged));
        match kind {
            Replacement::SignedAfter | Replacement::SignedBefore | Replacement::Tampered => {
                sign(root, &ops, &staged)
            }
            Replacement::WrongKey => sign(root, &other, &staged),
            Replacement::OtherSignature => {
                std::fs::write(&staged, new_build_of(&v1, &format!("other-{n}"))).unwrap();
                sign(root, &ops, &staged);
                std::fs::write(&staged, &bytes).unwrap();
            }
            Replacement::Unsigned => {}
        }
        if kind == Replacement::Tampered {
            // Not an ASCII change, which could make another build's tag.
            let last = bytes.len() - 1;
            bytes[last] ^= 0x80;
        }
        let hash = content_hash(&bytes);
        let signature = std::fs::read(signature_of(&staged)).ok();
        let before = last_seq(&agent);
        if kind == Replacement::Unsigned {
            std::fs::remove_file(signature_of(&plugins.join("fixture-noop.wasm"))).unwrap();
        }
        let install_signature = || {
            if let Some(signature) = &signature {
                install(&plugins, "fixture-noop.wasm.minisig", signature);
            }
        };
        if kind == Replacement::SignedAfter {
            install(&plugins, "fixture-noop.wasm", &bytes);
            install_signature();
        } else {
            install_signature();
            install(&plugins, "fixture-noop.wasm", &bytes);
        }
        if kind.good() {
            let loaded = wait_for_record(&agent, before, &format!("loading build {n}"), |r| {
                r.kind == RecordKind::PluginLoaded && r.summary.contains(&hash[..12])
            });
            assert!(
                loaded
                    .summary
                    .ends_with(&format!("loaded, signed by {}", ops.id)),
                "{}",
                loaded.summary
            );
            assert_eq!(loaded.detail["signer"]["key_id"], ops.id.as_str());
            serving = hash.clone();
            wait_until_serving(&agent, Some(&serving));
        } else {
            let rejected = wait_for_record(&agent, before, &format!("rejecting build {n}"), |r| {
                r.kind == RecordKind::PluginRejected && r.summary.contains(&hash[..12])
            });
            assert!(
                rejected.summary.contains(kind.refusal()),
                "build {n} ({kind:?}): {}",
                rejected.summary
            );
        }
        assert_eq!(
            served_hash(&agent, root, &format!("after build {n}")),
            serving,
            "build {n} ({kind:?}): the wrong version serves"
        );
        outcomes.push((n, kind, hash));
    }

    let all = records(&agent);
    for (n, kind, hash) in &outcomes {
        let about = |k: RecordKind| {
            all.iter()
                .filter(|r| r.kind == k && r.summary.contains(&hash[..12]))
                .count()
        };
        if kind.good() {
            assert_eq!(about(RecordKind::PluginLoaded), 1, "build {n} ({kind:?})");
        } else {
            assert_eq!(
                about(RecordKind::PluginLoaded),
                0,
                "build {n} ({kind:?}) loaded"
            );
            assert!(
                about(RecordKind::PluginRejected) >= 1,
                "build {n} ({kind:?})"
            );
        }
    }
    let loads = all
        .iter()
        .filter(|r| r.kind == RecordKind::PluginLoaded)
        .count();
    assert_eq!(loads, 1 + 10, "the first load and the ten good builds");
    assert!(
        all.iter().all(|r| r.kind != RecordKind::PluginRemoved),
        "nothing stopped"
    );
    // Every run ran on a whole version that was loaded: the first one or
    // a good build.
    let good: std::collections::HashSet<String> = std::iter::once(content_hash(&v1))
        .chain(
            outcomes
                .iter()
                .filter(|(_, kind, _)| kind.good())
                .map(|(_, _, hash)| hash.clone()),
        )
        .collect();
    let runs = agent.runs();
    assert_eq!(runs.len(), 21);
    assert!(
        runs.iter()
            .all(|r| good.contains(r.detail["hash"].as_str().unwrap())),
        "a refused build ran"
    );
    assert!(agent.ctx.journal.verify().unwrap().is_ok());
    agent.stop();
}

#[test]
fn a_component_installed_before_its_signature_is_taken_when_the_signature_lands() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ops = keygen(root, "ops");
    let policy = noop_layout(root, "trusted_keys = [\"keys/ops.pub\"]");
    let component = root.join("plugins/fixture-noop.wasm");
    let v1 = std::fs::read(&component).unwrap();
    sign(root, &ops, &component);
    let agent = Running::start(&policy);
    let hash1 = content_hash(&v1);
    assert_eq!(served_hash(&agent, root, "v1"), hash1);

    // The new build is copied in place; its signature is not there yet.
    let v2 = new_build_of(&v1, "v2");
    let hash2 = content_hash(&v2);
    let before = last_seq(&agent);
    std::fs::write(&component, &v2).unwrap();
    let rejected = wait_for_record(&agent, before, "rejecting v2 without its signature", |r| {
        r.kind == RecordKind::PluginRejected && r.summary.contains(&hash2[..12])
    });
    assert!(
        rejected.summary.contains("does not match its signature"),
        "{}",
        rejected.summary
    );
    assert_eq!(served_hash(&agent, root, "meanwhile"), hash1);

    // Signed where it lies: the signature lands, and v2 is taken.
    let before = last_seq(&agent);
    sign(root, &ops, &component);
    let loaded = wait_for_record(&agent, before, "loading v2", |r| {
        r.kind == RecordKind::PluginLoaded && r.summary.contains(&hash2[..12])
    });
    assert!(
        loaded.summary.contains(&format!("signed by {}", ops.id)),
        "{}",
        loaded.summary
    );
    wait_until_serving(&agent, Some(&hash2));
    assert_eq!(served_hash(&agent, root, "v2"), hash2);
    agent.stop();
}

#[test]
fn a_plugin_whose_key_is_no_longer_trusted_stops_until_signed_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ops = keygen(root, "ops");
    let next = keygen(root, "next");
    let policy = noop_layout(root, "trusted_keys = [\"keys/ops.pub\"]");
    let component = root.join("plugins/fixture-noop.wasm");
    sign(root, &ops, &component);
    let agent = Running::start(&policy);
    let hash = content_hash(&std::fs::read(&component).unwrap());
    assert_eq!(served_hash(&agent, root, "trusted"), hash);

    // The policy trusts another key now: the serving version stops.
    let before = last_seq(&agent);
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace("keys/ops.pub", "keys/next.pub")).unwrap();
    let stopped = wait_for_record(&agent, before, "stopping the plugin", |r| {
        r.kind == RecordKind::PluginRemoved
    });
    assert_eq!(
        stopped.summary,
        format!(
            "stopped: the version serving is signed by key {}, which the policy no longer trusts",
            ops.id
        )
    );
    wait_until_serving(&agent, None);

    // Signed with the new key, it serves again.
    let before = last_seq(&agent);
    sign(root, &next, &component);
    let loaded = wait_for_record(&agent, before, "loading it again", |r| {
        r.kind == RecordKind::PluginLoaded
    });
    assert!(
        loaded.summary.ends_with(&format!("signed by {}", next.id)),
        "{}",
        loaded.summary
    );
    wait_until_serving(&agent, Some(&hash));
    assert_eq!(served_hash(&agent, root, "trusted again"), hash);
    agent.stop();
}

/// Wait (up to the suite's patience) until the agent's status shows
/// `fixture-noop` served by the build with hash `hash`, or not served
/// (`None`). The journal records a new build before the dispatcher swaps
/// it in: an event sent in between still runs the old one.
fn wait_until_serving(agent: &Running, hash: Option<&str>) {
    let deadline = Instant::now() + crate::support::PATIENCE;
    loop {
        let status = medic_agent::dispatch::read_status(&agent.ctx.store);
        let serving = status.and_then(|s| {
            s.plugins
                .into_iter()
                .find(|p| p.name == "fixture-noop")
                .map(|p| p.hash)
        });
        if serving.as_deref() == hash {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fixture-noop is served by {serving:?}, not {hash:?}, after {:?}",
            crate::support::PATIENCE
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
