//! Running the real `sms-relay` binary: commands against a database, a scratch directory, the
//! simulator's journal, background relays and signals.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
};

use sms_relay::store::presence_name;
use uuid::Uuid;

use super::{TestApp, within};

/// `sms-relay` against `app`'s database, with debug logs, no config file and the webhooks on a
/// free port.
pub fn sms_relay(app: &TestApp) -> Command {
    sms_relay_at(&app.url)
}

/// `sms-relay` against the database at `url` (see [`sms_relay`]).
pub fn sms_relay_at(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sms-relay"));
    against(&mut cmd, url);
    cmd
}

/// [`sms_relay`] with this host's clock moved by `offset` (libfaketime's syntax, e.g. `-60s`)
/// for the relay alone, through the `faketime` command (Debian package `faketime`).
pub fn sms_relay_with_clock(app: &TestApp, offset: &str) -> Command {
    let mut cmd = Command::new("faketime");
    cmd.args(["-f", offset, env!("CARGO_BIN_EXE_sms-relay")]);
    against(&mut cmd, &app.url);
    cmd
}

fn against(cmd: &mut Command, url: &str) {
    cmd.env("DATABASE_URL", url)
        .env_remove("SMS_RELAY_CONFIG")
        .env("SMS_RELAY__WEBHOOKS__LISTEN", "127.0.0.1:0")
        .env("SMS_RELAY__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
}

/// A local address no one listens on now (`127.0.0.1:<port>`), for a listener of the relay's.
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Runs `cmd` to completion.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run sms-relay")
}

/// Lossy text of a command's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A temporary directory for one test's config, logs and journal; removed on drop, kept (and
/// named) if the test failed.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("sms-relay-it-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `relay.toml` into `scratch` for `sms-relay run`: the `[relay]` keys `relay_keys` (TOML
/// lines), polls every 100 ms, and one simulator that takes `latency_ms` per send and appends
/// every message it sends to the journal `sent.log` (see [`journal_counts`]). Returns the config's
/// path and the journal's.
pub fn journaling_config(
    scratch: &Scratch,
    relay_keys: &str,
    latency_ms: u64,
) -> (PathBuf, PathBuf) {
    let journal = scratch.path("sent.log");
    let config = scratch.path("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\n{relay_keys}\npoll_interval_ms = 100\n\
             [[providers]]\nname = \"sim\"\nkind = \"simulator\"\nlatency_ms = {latency_ms}\n\
             journal = {journal:?}\n"
        ),
    )
    .unwrap();
    (config, journal)
}

/// How many times the simulator's journal at `path` shows each message id (one line per send).
pub fn journal_counts(path: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Sends beyond one per message in a journal's [`journal_counts`].
pub fn duplicate_sends(counts: &HashMap<String, usize>) -> usize {
    counts.values().map(|n| n - 1).sum()
}

/// `sms-relay run --config <config>` against the database at `url`, its stderr into `log`.
pub fn run_at(url: &str, config: &Path, log: &Path) -> Command {
    let mut cmd = sms_relay_at(url);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd
}

/// Starts `sms-relay run --config <config>` against `app` in the background, logging to `log`.
pub fn spawn_run(app: &TestApp, config: &Path, log: &Path) -> Child {
    run_at(&app.url, config, log).spawn().unwrap()
}

/// Sends SIGTERM to `child`.
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM to `child` and waits for it to exit (a hang guard of 30 s, not a speed test).
pub async fn stop(mut child: Child) -> ExitStatus {
    sigterm(&child);
    within(30, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .unwrap()
        .unwrap()
}

/// A relay id no other test's relay has: presence is looked up server-wide.
pub fn unique_id(name: &str) -> String {
    let mut suffix = Uuid::new_v4().simple().to_string();
    suffix.truncate(12);
    format!("{name}-{suffix}")
}

/// An `sms-relay run` process with its own relay id. Its pool connections carry the
/// `application_name` `it-pool-<id>` (its claim connection is `sms-relay <id>`), so a test
/// can find every backend it has. SIGKILLed if still running when dropped.
pub struct RelayProcess {
    pub id: String,
    child: Option<Child>,
}

impl RelayProcess {
    /// Starts a relay named `id` on the database at `url` with the config file `config`, logging
    /// to `<id>-run-<suffix>.log` in `scratch`.
    pub fn start(url: &str, id: &str, config: &Path, scratch: &Scratch) -> Self {
        Self::start_with(url, id, config, scratch, &[])
    }

    /// [`RelayProcess::start`] with the environment variables `env` set on top.
    pub fn start_with(
        url: &str,
        id: &str,
        config: &Path,
        scratch: &Scratch,
        env: &[(&str, &str)],
    ) -> Self {
        let separator = if url.contains('?') { '&' } else { '?' };
        let tagged = format!("{url}{separator}application_name=it-pool-{id}");
        let log = scratch.path(&format!("{id}-{}.log", unique_id("run")));
        let child = run_at(&tagged, config, &log)
            .env("SMS_RELAY__RELAY__RELAY_ID", id)
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        Self {
            id: id.to_owned(),
            child: Some(child),
        }
    }

    /// The `application_name`s of this relay's backends.
    pub fn backend_names(&self) -> Vec<String> {
        vec![presence_name(&self.id), format!("it-pool-{}", self.id)]
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the relay was not stopped")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child().try_wait().unwrap().is_none()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let child = self.child();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit (see [`stop`]).
    pub async fn stop(mut self) -> ExitStatus {
        stop(self.child.take().expect("the relay was not stopped")).await
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes `config` (TOML) into `scratch` and starts a relay with it against `app`, its admin
/// listener on a free local address; returns the relay (killed if the test ends first) and
/// that address.
pub fn spawn_with_admin(app: &TestApp, scratch: &Scratch, config: &str) -> (RelayProcess, String) {
    let path = scratch.path("relay.toml");
    std::fs::write(&path, config).unwrap();
    let address = free_address();
    let relay = RelayProcess::start_with(
        &app.url,
        &unique_id("admin"),
        &path,
        scratch,
        &[("SMS_RELAY__ADMIN__LISTEN", &address)],
    );
    (relay, address)
}
