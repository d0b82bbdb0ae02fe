//! The Linux example end to end, on a real systemd: medic runs as the
//! shipped service (`dist/linux/medic.service`, every hardening option in
//! force; a drop-in changes only where the binary and the policy are),
//! serving `examples/linux-services.toml` (its paths and unit names made
//! the test's), installed inside the namespace as an operator installs it.
//! Units fail; the journal wakes `unit-keeper`, which restarts the one that
//! can recover and leaves the one that keeps failing for a person after its
//! restarts, saying why from the journal.

use crate::namespace::{NamespacedSystemd, UnitDir, workspace};
use std::process::Command;

/// Fails its first start, saying why at `err`; runs from then on.
const RECOVERS: &str = "[Unit]\nDescription=medic example: recovers\n[Service]\nSyslogLevel=err\nExecStart=/bin/sh -c 'if [ -e /run/medic-recovers.ran ]; then exec sleep infinity; fi; touch /run/medic-recovers.ran; echo \"recovers: cannot open /etc/recovers.conf\" >&2; exit 3'\n";

/// Fails every start, saying why at `err`.
const KEEPS_FAILING: &str = "[Unit]\nDescription=medic example: keeps failing\n[Service]\nSyslogLevel=err\nExecStart=/bin/sh -c 'echo \"keeps-failing: port 8080 is taken\" >&2; exit 4'\n";

/// Where medic is installed inside the namespace (its `/run`, in memory):
/// the binary, the components, the key and the policy, as
/// `docs/linux.md` installs them under `/usr/local` and `/etc/medic`. The
/// workspace itself may be out of the hardened service's sight (under
/// `/tmp`, which `PrivateTmp=` replaces).
const INSTALLED: &str = "/run/medic-example";

/// Install medic, the example's plugin and the development key into the
/// namespace, and the example policy with this test's units; the policy's
/// path inside.
fn install(systemd: &NamespacedSystemd) -> String {
    let workspace = workspace();
    let inside = systemd.root().join(INSTALLED.trim_start_matches('/'));
    std::fs::create_dir_all(inside.join("plugins")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_medic"), inside.join("medic")).unwrap();
    for file in ["unit-keeper.wasm", "unit-keeper.wasm.minisig"] {
        std::fs::copy(
            workspace.join("target/plugins").join(file),
            inside.join("plugins").join(file),
        )
        .unwrap();
    }
    std::fs::copy(
        workspace.join("target/signing/dev.pub"),
        inside.join("dev.pub"),
    )
    .unwrap();

    let source = std::fs::read_to_string(workspace.join("examples/linux-services.toml")).unwrap();
    let mut policy: toml::Table = source.parse().unwrap();
    let agent = policy["agent"].as_table_mut().unwrap();
    agent.insert("state_dir".into(), "/var/lib/medic".into());
    agent.insert("plugin_dir".into(), format!("{INSTALLED}/plugins").into());
    agent.insert(
        "trusted_keys".into(),
        toml::Value::Array(vec![format!("{INSTALLED}/dev.pub").into()]),
    );
    let units = toml::Value::Array(vec!["medic-recovers".into(), "medic-keeps-failing".into()]);
    let keeper = policy["plugins"]["unit-keeper"].as_table_mut().unwrap();
    keeper["grants"]
        .as_table_mut()
        .unwrap()
        .insert("services-control".into(), units.clone());
    let settings = keeper["settings"].as_table_mut().unwrap();
    settings.insert("units".into(), units.clone());
    settings.insert("max_restarts".into(), 2.into());
    for trigger in keeper["triggers"].as_array_mut().unwrap() {
        let trigger = trigger.as_table_mut().unwrap();
        if trigger["kind"].as_str() == Some("journal") {
            trigger.insert("unit".into(), units.clone());
        }
    }
    std::fs::write(
        inside.join("policy.toml"),
        toml::to_string(&policy).unwrap(),
    )
    .unwrap();
    format!("{INSTALLED}/policy.toml")
}

/// The runs of `unit-keeper` recorded so far, as `medic audit --json` has them.
fn runs(systemd: &NamespacedSystemd) -> Vec<serde_json::Value> {
    let state = systemd.root().join("var/lib/medic");
    if !state.join("medic.redb").exists() {
        return Vec::new();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args([
            "audit",
            "--state-dir",
            state.to_str().unwrap(),
            "--kind",
            "run",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "medic audit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Wait for `check`, or fail with what the journal and the audit say.
fn wait_for(systemd: &NamespacedSystemd, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + crate::namespace::PATIENCE;
    while !check() {
        if std::time::Instant::now() >= deadline {
            let journal = systemd.run(
                "journalctl",
                &["--no-pager", "-o", "short-monotonic", "-n", "300"],
            );
            panic!(
                "{what} not seen within {:?}\njournal:\n{}\nruns:\n{:#?}",
                crate::namespace::PATIENCE,
                String::from_utf8_lossy(&journal.stdout),
                runs(systemd)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn mentions(run: &serde_json::Value, text: &str) -> bool {
    run.to_string().contains(text)
}

#[test]
fn unit_keeper_keeps_units_running_under_the_shipped_hardened_service() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let policy = install(&systemd);
    let medic = format!("{INSTALLED}/medic");
    // Checked where it runs: its compile cache is under its state folder.
    let check = systemd.run(&medic, &["check", "--policy", &policy]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // medic as the shipped unit; the drop-in says where things are.
    let unit = std::fs::read_to_string(workspace().join("dist/linux/medic.service")).unwrap();
    systemd.install_unit(UnitDir::Admin, "medic.service", &unit);
    let drop_in = systemd.root().join("etc/systemd/system/medic.service.d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(
        drop_in.join("paths.conf"),
        format!(
            "[Unit]\nConditionPathExists=\n[Service]\nExecStartPre=\nExecStartPre={medic} check --policy {policy}\nExecStart=\nExecStart={medic} run --policy {policy} --log-format json\n"
        ),
    )
    .unwrap();
    systemd.install_unit(UnitDir::Vendor, "medic-recovers.service", RECOVERS);
    systemd.install_unit(
        UnitDir::Vendor,
        "medic-keeps-failing.service",
        KEEPS_FAILING,
    );
    systemd.systemctl(&["start", "medic.service"]);
    wait_for(&systemd, "the agent's first run (startup)", || {
        runs(&systemd).iter().any(|r| mentions(r, "startup"))
    });

    // Both fail (a simple service's start succeeds, then it exits); the
    // journal wakes the plugin.
    for unit in ["medic-recovers.service", "medic-keeps-failing.service"] {
        systemd.systemctl(&["start", unit]);
    }
    wait_for(&systemd, "medic-recovers running again", || {
        systemd.property("medic-recovers.service", "ActiveState") == "active"
    });
    wait_for(
        &systemd,
        "a run that restarted medic-recovers, saying why",
        || {
            runs(&systemd).iter().any(|r| {
                mentions(r, "medic-recovers had failed")
                    && mentions(r, "exit status 3")
                    && mentions(r, "remediated")
            })
        },
    );
    wait_for(&systemd, "medic-keeps-failing left for a person", || {
        runs(&systemd).iter().any(|r| {
            mentions(r, "medic-keeps-failing failed again") && mentions(r, "left for a person")
        })
    });
    let left = runs(&systemd)
        .into_iter()
        .find(|r| mentions(r, "left for a person"))
        .unwrap();
    assert!(
        mentions(&left, "port 8080 is taken"),
        "the unit's own words from the journal: {left}"
    );
    // Two restarts, then no more: systemd started it three times in all.
    let starts = systemd
        .run(
            "journalctl",
            &[
                "-u",
                "medic-keeps-failing.service",
                "-o",
                "cat",
                "--no-pager",
            ],
        )
        .stdout;
    let starts = String::from_utf8_lossy(&starts)
        .lines()
        .filter(|l| l.contains("port 8080 is taken"))
        .count();
    assert_eq!(starts, 3, "its first start and two restarts");
    assert_eq!(
        systemd.property("medic.service", "ActiveState"),
        "active",
        "the agent runs on"
    );
    systemd.systemctl(&["stop", "medic.service"]);
    assert_eq!(systemd.property("medic.service", "Result"), "success");
}
