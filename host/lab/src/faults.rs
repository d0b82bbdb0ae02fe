//! The fault injector: breaks the lab the way real WSUS servers break, then
//! lets the downstream run its next synchronization, so that everything a
//! real server writes when it meets the fault (events 364, 10021, 7036,
//! 7040, `SoftwareDistribution.log` lines) is written by the same code
//! that writes it in normal operation.

use super::logs::reasons;
use super::model::{ServiceState, StartupType, SyncRecord, UpdateStatus};
use super::server::{UpdateQuery, UpdateWriter, target_group};
use super::{Lab, LabError, LabResult, Server, UpdateState, catalog, table_name, tables};
use redb::{ReadableTable, TableDefinition};

/// A way a WSUS server breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `NETWORK SERVICE` and `Users` lose Read on the content root.
    ContentRootRead,
    /// `Users` alone loses Read on the content root: both need it.
    ContentUsersRead,
    /// `NETWORK SERVICE` loses full control of `WsusContent` and below.
    ContentFullControl,
    /// BITS is stopped and does not start again on demand.
    BitsStopped,
    /// BITS is idle: stopped with demand start, as it leaves itself when
    /// it has no jobs. Not a fault: nothing may "repair" it.
    BitsIdle,
    /// BITS is disabled (and so stopped).
    BitsDisabled,
    /// The upstream was rebuilt without two retired products, leaving
    /// failed downloads downstream (and a few transient failures).
    UpstreamLostUpdates,
    /// A few downloads failed while the upstream was overloaded (HTTP
    /// 503). Not a fault to repair: the next sync downloads them.
    TransientOutage,
    /// The upstream's languages shrank to English after approvals existed.
    LanguageShrink,
    /// A proxy between the servers strips the HTTP Range header.
    HttpRange,
    /// The downstream reaches its upstream through a proxy whose stored
    /// password no longer works (it expired): HTTP 407, `ProxyError`.
    ProxyPasswordExpired,
    /// `UpstreamServerName` holds a name that does not resolve:
    /// `UssNotFound`.
    UpstreamNameTypo,
    /// The upstream keeps update files on Microsoft Update while the
    /// downstream stores them locally: the files it asks for are not there.
    StorageMismatch,
}

impl Fault {
    pub const ALL: [Fault; 13] = [
        Self::ContentRootRead,
        Self::ContentUsersRead,
        Self::ContentFullControl,
        Self::BitsStopped,
        Self::BitsIdle,
        Self::BitsDisabled,
        Self::UpstreamLostUpdates,
        Self::TransientOutage,
        Self::LanguageShrink,
        Self::HttpRange,
        Self::ProxyPasswordExpired,
        Self::UpstreamNameTypo,
        Self::StorageMismatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ContentRootRead => "content-root-read",
            Self::ContentUsersRead => "content-users-read",
            Self::ContentFullControl => "content-full-control",
            Self::BitsStopped => "bits-stopped",
            Self::BitsIdle => "bits-idle",
            Self::BitsDisabled => "bits-disabled",
            Self::UpstreamLostUpdates => "upstream-lost-updates",
            Self::TransientOutage => "transient-outage",
            Self::LanguageShrink => "language-shrink",
            Self::HttpRange => "http-range",
            Self::ProxyPasswordExpired => "proxy-password-expired",
            Self::UpstreamNameTypo => "upstream-name-typo",
            Self::StorageMismatch => "storage-mismatch",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::ContentRootRead => {
                "NETWORK SERVICE and Users lose Read on the content root: downloads fail with 364 `Access is denied.` and 10012"
            }
            Self::ContentUsersRead => {
                "Users alone loses Read on the content root (NETWORK SERVICE keeps it): downloads fail all the same, with 364 and 10012"
            }
            Self::ContentFullControl => {
                "NETWORK SERVICE loses full control of WsusContent and everything in it: downloads fail with 364 `Access is denied.` and 10012"
            }
            Self::BitsStopped => {
                "BITS stops (7036) and does not start again when WSUS needs it (the lab's stand-in for a crashed BITS): downloads fail with 364"
            }
            Self::BitsIdle => {
                "not a fault: BITS goes idle, stopped with demand start as it leaves itself without jobs; downloads start it again, and nothing may repair it"
            }
            Self::BitsDisabled => {
                "BITS stops (7036) and is set to Disabled (7040): downloads fail with 364"
            }
            Self::UpstreamLostUpdates => {
                "the upstream is rebuilt without Windows Server 2012 R2 and Office 2013: their approved downloads fail (364, HTTP 404) and the sync fails (GetUpdateData, 10021)"
            }
            Self::TransientOutage => {
                "not a fault: three downloads fail while the upstream is overloaded (364, HTTP 503); the upstream still has them, and the next sync downloads them"
            }
            Self::LanguageShrink => {
                "the upstream drops every language but English: its approvals for the others turn inactive there, and the replica shows fewer approved updates"
            }
            Self::HttpRange => {
                "a proxy strips the Range header: downloads fail with 364 and the Range message"
            }
            Self::ProxyPasswordExpired => {
                "the downstream reaches its upstream through a proxy, whose stored password expired: the proxy answers 407 and the sync fails (ProxyError, 10021)"
            }
            Self::UpstreamNameTypo => {
                "UpstreamServerName is mistyped: the name does not resolve and the sync fails (UssNotFound, 10021)"
            }
            Self::StorageMismatch => {
                "the upstream keeps update files on Microsoft Update while the downstream stores them locally: downloads fail (364, HTTP 404)"
            }
        }
    }

    pub fn parse(name: &str) -> Result<Self, LabError> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                LabError::Invalid(format!(
                    "unknown fault `{name}`; the lab knows {}",
                    Self::ALL.map(Fault::name).join(", ")
                ))
            })
    }
}

/// Approve `updates` downstream (for their target group) with their
/// downloads failed, in `txn`.
/// Approve `updates` downstream and leave them in `state`: Failed when
/// BITS gave their download up (a fatal error such as HTTP 404), NotReady
/// when it keeps retrying (a transient one such as HTTP 503).
fn approve_in_state<'a>(
    txn: &redb::WriteTransaction,
    updates: impl Iterator<Item = &'a super::server::UpdateView>,
    state: UpdateState,
) -> LabResult<()> {
    let ds = Server::Downstream;
    let dep_t = table_name(ds, tables::DEPLOYMENT);
    let mut dep = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&dep_t))?;
    let status_t = table_name(ds, tables::UPDATE_STATUS);
    let mut status = txn.open_table(TableDefinition::<&str, u8>::new(&status_t))?;
    let row = UpdateStatus {
        state,
        declined: false,
    };
    for update in updates {
        dep.insert((update.id.as_str(), target_group(&update.meta)), 1)?;
        status.insert(update.id.as_str(), row.encode())?;
    }
    Ok(())
}

/// The lab fact that says BITS fails to start on demand (a crashed BITS);
/// cleared when BITS is started by a service control call.
pub(crate) const BITS_START_FAILS: &str = "bits_start_fails";

/// What an injection did.
#[derive(Debug, Clone)]
pub struct Injection {
    pub fault: Fault,
    /// What was broken, one line each.
    pub broken: Vec<String>,
    /// The synchronization that followed.
    pub sync: SyncRecord,
}

/// How many of the retired products' updates were approved just before the
/// upstream was rebuilt.
const ORPHANS: usize = 12;
/// How many other downloads the same outage interrupted.
const TRANSIENT: usize = 3;

impl Lab {
    /// Break the lab with `fault`, then run the downstream's next sync.
    pub fn inject(&self, fault: Fault) -> LabResult<Injection> {
        let broken = self.apply_fault(fault)?;
        let sync = self.sync()?;
        Ok(Injection {
            fault,
            broken,
            sync,
        })
    }

    /// Break the lab with `fault` and nothing more (no sync follows): what
    /// was broken, one line each.
    pub fn apply_fault(&self, fault: Fault) -> LabResult<Vec<String>> {
        let ds = Server::Downstream;
        Ok(match fault {
            Fault::ContentRootRead => {
                let removed = self.revoke_root_read(false)?;
                vec![format!(
                    "{}: removed {removed} Read entries (NETWORK SERVICE, Users)",
                    self.content_dir().display()
                )]
            }
            Fault::ContentUsersRead => {
                let removed = self.revoke_root_read(true)?;
                vec![format!(
                    "{}: removed {removed} Read entry (Users)",
                    self.content_dir().display()
                )]
            }
            Fault::ContentFullControl => {
                let changed = self.revoke_full_control()?;
                vec![format!(
                    "{}: NETWORK SERVICE's entries removed from {changed} folders and files",
                    self.wsus_content().display()
                )]
            }
            Fault::BitsStopped => {
                self.set_fact(BITS_START_FAILS, "1")?;
                self.set_service_state(ds, "BITS", ServiceState::Stopped)?;
                vec!["BITS stopped, and will not start on demand until started by hand".into()]
            }
            Fault::BitsIdle => {
                self.set_service_state(ds, "BITS", ServiceState::Stopped)?;
                vec![format!(
                    "BITS idle: stopped, {}",
                    self.service(ds, "BITS")?.startup.scm_text()
                )]
            }
            Fault::BitsDisabled => {
                // Stopped first: the 7040 that says Disabled, which is what
                // triggers the repair, comes once both changes are made,
                // so an agent that reacts at once never sees half a fault.
                self.set_service_state(ds, "BITS", ServiceState::Stopped)?;
                self.set_startup(ds, "BITS", StartupType::Disabled, true)?;
                vec!["BITS stopped; BITS startup type set to Disabled".into()]
            }
            Fault::UpstreamLostUpdates => self.lose_upstream_products(ORPHANS, TRANSIENT)?,
            Fault::TransientOutage => self.transient_outage(TRANSIENT)?,
            Fault::LanguageShrink => self.shrink_languages()?,
            Fault::HttpRange => {
                self.set_fact("proxy_strips_range", "1")?;
                vec!["the proxy between the servers now strips the HTTP Range header".into()]
            }
            Fault::ProxyPasswordExpired => {
                use super::upstream::{PROXY_HOST, PROXY_PASSWORD_EXPIRED, PROXY_PORT};
                let port = PROXY_PORT.to_string();
                for (name, value) in [
                    ("ProxyName", PROXY_HOST),
                    ("ProxyServerPort", port.as_str()),
                    ("ProxyUserDomain", "LAB"),
                    ("ProxyUserName", "svc-wsus"),
                    ("HasProxyPassword", "1"),
                    ("UseProxy", "1"),
                ] {
                    self.set_config(ds, name, value, true)?;
                }
                self.set_fact(PROXY_PASSWORD_EXPIRED, "1")?;
                vec![format!(
                    "the downstream reaches its upstream through {PROXY_HOST}:{PROXY_PORT} as LAB\\svc-wsus, whose password expired on the proxy"
                )]
            }
            Fault::UpstreamNameTypo => {
                let typo = Server::Upstream.host_name().replace(".example", ".exmaple");
                self.set_config(ds, "UpstreamServerName", &typo, true)?;
                vec![format!(
                    "UpstreamServerName set to `{typo}`, which does not resolve"
                )]
            }
            Fault::StorageMismatch => {
                let txn = self.database().begin_write()?;
                {
                    let config_t = table_name(Server::Upstream, tables::CONFIG_C);
                    let mut config =
                        txn.open_table(TableDefinition::<&str, &str>::new(&config_t))?;
                    config.insert("HostOnMu", "1")?;
                }
                txn.commit()?;
                vec![
                    "the upstream now keeps update files on Microsoft Update; the downstream still stores them locally".into(),
                ]
            }
        })
    }

    /// Do by hand what an administrator does about `fault` where no plugin
    /// may: enter the proxy account's new password. Other faults have a
    /// plugin (or an approval) for their repair.
    pub fn mend_by_hand(&self, fault: Fault) -> LabResult<Vec<String>> {
        match fault {
            Fault::ProxyPasswordExpired => {
                self.set_fact(super::upstream::PROXY_PASSWORD_EXPIRED, "0")?;
                self.set_config(Server::Downstream, "HasProxyPassword", "1", true)?;
                Ok(vec![
                    "the proxy account's new password entered in the WSUS console (Options, Update Source and Proxy Server)".into(),
                ])
            }
            other => Err(LabError::Invalid(format!(
                "`{}` is mended by its plugin (or an operator's approval of its plan), not by hand",
                other.name()
            ))),
        }
    }

    /// Rebuild the upstream without the retired products, after up to
    /// `orphans` of their updates were approved downstream (their downloads
    /// then fail with HTTP 404) and while up to `transient` other approved
    /// downloads failed in the same outage (HTTP 503). The fault uses 12
    /// and 3; benchmarks use more.
    pub fn lose_upstream_products(
        &self,
        orphans: usize,
        transient: usize,
    ) -> LabResult<Vec<String>> {
        let orphans = self.about_to_be_approved(true, orphans)?;
        let transient = self.about_to_be_approved(false, transient)?;
        let upstream_retired: Vec<_> = self
            .updates(Server::Upstream, &UpdateQuery::default())?
            .into_iter()
            .filter(|u| catalog::RETIRED_PRODUCTS.contains(&u.meta.product))
            .collect();
        let txn = self.database().begin_write()?;
        {
            // Approved downstream just before the rebuild: BITS gave up on
            // the files the upstream no longer has (404 is fatal) and keeps
            // retrying the others (503 is transient)...
            approve_in_state(&txn, orphans.iter(), UpdateState::Failed)?;
            approve_in_state(&txn, transient.iter(), UpdateState::NotReady)?;
            // ...and the upstream rebuilt without the retired products.
            let mut writer = UpdateWriter::open(&txn, Server::Upstream)?;
            for update in &upstream_retired {
                writer.remove(&update.id)?;
            }
            drop(writer);
            let mut lab = txn.open_table(TableDefinition::<&str, &str>::new(tables::LAB))?;
            lab.insert("retired", "1")?;
        }
        txn.commit()?;
        // What BITS logged when those downloads failed.
        self.log_download_failures(&orphans, reasons::NOT_FOUND)?;
        self.log_download_failures(&transient, reasons::OVERLOADED)?;
        let products: Vec<&str> = catalog::RETIRED_PRODUCTS
            .iter()
            .map(|p| catalog::PRODUCTS[*p as usize])
            .collect();
        Ok(vec![
            format!(
                "upstream rebuilt without {}: {} updates gone",
                products.join(" and "),
                upstream_retired.len()
            ),
            format!(
                "{} of their updates had just been approved downstream: downloads failed (HTTP 404)",
                orphans.len()
            ),
            format!(
                "{} other downloads failed during the same outage (HTTP 503; the upstream still has them)",
                transient.len()
            ),
        ])
    }

    /// `count` updates just approved downstream whose downloads failed
    /// while the upstream was overloaded (HTTP 503): the upstream still has
    /// them, BITS counts a 503 as a transient error and retries (the update
    /// stays NotReady), and the next sync downloads them ("This issue will
    /// resolve itself the next time the downstream server synchronizes",
    /// the article).
    fn transient_outage(&self, count: usize) -> LabResult<Vec<String>> {
        let transient = self.about_to_be_approved(false, count)?;
        let txn = self.database().begin_write()?;
        approve_in_state(&txn, transient.iter(), UpdateState::NotReady)?;
        txn.commit()?;
        self.log_download_failures(&transient, reasons::OVERLOADED)?;
        Ok(vec![format!(
            "{} downloads failed while the upstream was overloaded (HTTP 503; it still has them)",
            transient.len()
        )])
    }

    /// Up to `count` downstream updates not approved yet (in English or
    /// language-neutral), of the retired products or of the others.
    fn about_to_be_approved(
        &self,
        retired: bool,
        count: usize,
    ) -> LabResult<Vec<super::server::UpdateView>> {
        let unapproved = self.updates(
            Server::Downstream,
            &UpdateQuery {
                state: Some(UpdateState::NotReady),
                approved: Some(false),
                declined: Some(false),
            },
        )?;
        Ok(unapproved
            .into_iter()
            .filter(|u| {
                catalog::RETIRED_PRODUCTS.contains(&u.meta.product) == retired
                    && u.meta.language <= 1
            })
            .take(count)
            .collect())
    }

    /// Event 364 with `reason` for each of `updates` (up to the number a
    /// pass writes).
    fn log_download_failures(
        &self,
        updates: &[super::server::UpdateView],
        reason: &str,
    ) -> LabResult<()> {
        for update in updates.iter().take(super::sync::MAX_DOWNLOAD_EVENTS) {
            self.log_download_failure(update, reason)?;
        }
        Ok(())
    }

    fn shrink_languages(&self) -> LabResult<Vec<String>> {
        let before = self.approval_tally(Server::Downstream)?;
        let txn = self.database().begin_write()?;
        let dropped;
        {
            let lang_t = table_name(Server::Upstream, tables::LANGUAGE);
            let mut lang = txn.open_table(TableDefinition::<&str, bool>::new(&lang_t))?;
            let names: Vec<String> = lang
                .iter()?
                .filter_map(|r| r.ok())
                .filter(|(k, v)| k.value() != "en" && v.value())
                .map(|(k, _)| k.value().to_string())
                .collect();
            for name in &names {
                lang.insert(name.as_str(), false)?;
            }
            dropped = names;
            // The upstream's approvals of updates in a dropped language
            // stay, inactive, on the upstream: `wsusutil
            // listinactiveapprovals` lists them there.
            let dep_t = table_name(Server::Upstream, tables::DEPLOYMENT);
            let mut dep = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&dep_t))?;
            let meta_t = table_name(Server::Upstream, tables::UPDATE);
            let meta = txn.open_table(TableDefinition::<&str, &[u8]>::new(&meta_t))?;
            let mut deactivate = Vec::new();
            for row in dep.iter()? {
                let (key, _) = row?;
                let (id, group) = key.value();
                let language = meta
                    .get(id)?
                    .and_then(|m| super::model::UpdateMeta::decode(m.value()))
                    .map(|m| catalog::language_name(m.language).to_string())
                    .unwrap_or_default();
                if dropped.contains(&language) {
                    deactivate.push((id.to_string(), group.to_string()));
                }
            }
            for (id, group) in &deactivate {
                dep.insert((id.as_str(), group.as_str()), 0)?;
            }
        }
        txn.commit()?;
        Ok(vec![format!(
            "upstream languages shrunk to en (dropped {}); downstream had {} active approvals",
            if dropped.is_empty() {
                "none: already English only".to_string()
            } else {
                dropped.join(", ")
            },
            before.active
        )])
    }
}
