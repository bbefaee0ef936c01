//! A private PostgreSQL server in a temporary directory, started from the machine's own binaries,
//! for `demo`, `bench` and the tests when no `DATABASE_URL` is given.
//!
//! The server runs under a small `sh` watchdog whose stdin is a pipe from this process: when this
//! process ends, however it ends, the pipe closes and the watchdog stops the server and deletes
//! the directory. Nothing is left behind.

use std::{
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Why the throwaway server could not start. Not worth retrying without fixing the machine.
#[derive(Debug, thiserror::Error)]
pub enum ThrowawayPgError {
    /// No `initdb`/`postgres` binaries were found.
    #[error(
        "PostgreSQL server binaries not found (install the postgresql package, or set DATABASE_URL)"
    )]
    NoBinaries,
    /// A step failed; the text says which and includes the server's log where there is one.
    #[error("throwaway PostgreSQL: {0}")]
    Failed(String),
    /// A file or process operation failed.
    #[error("throwaway PostgreSQL: {0}")]
    Io(#[from] std::io::Error),
}

/// How the server trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults (`fsync`, `synchronous_commit=on`): for demos and benchmarks.
    Default,
    /// No fsync: for tests, where the data dies with the run anyway.
    Fast,
}

/// A running throwaway server; stopped and deleted on drop or when the process exits.
#[derive(Debug)]
pub struct ThrowawayPg {
    port: u16,
    watchdog: Child,
}

fn bindir() -> Result<PathBuf, ThrowawayPgError> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = from_pg_config.into_iter().chain(
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin")),
    );
    candidates
        .filter(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .max()
        .ok_or(ThrowawayPgError::NoBinaries)
}

/// Runs commands as the `postgres` user when we are root (PostgreSQL refuses to run as root), as
/// the throwaway server's own tools must run (`pg_ctl` included).
pub fn as_server_user(program: &Path, running_as_root: bool) -> Command {
    if running_as_root {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), ThrowawayPgError> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ThrowawayPgError::Failed(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

const WATCHDOG: &str = r#"
"$1/postgres" -D "$2/data" -p "$3" -k "$2" -c listen_addresses=127.0.0.1 $4 >"$2/server.log" 2>&1 &
pid=$!
read _ignored
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$2"
"#;

impl ThrowawayPg {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback port.
    pub fn start(durability: Durability) -> Result<Self, ThrowawayPgError> {
        let bin = bindir()?;
        let root = Command::new("id")
            .arg("-u")
            .output()?
            .stdout
            .starts_with(b"0\n");
        let dir =
            std::env::temp_dir().join(format!("sms-relay-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir)?;
        if root {
            run(Command::new("chown").arg("postgres:").arg(&dir), "chown")?;
        }
        run(
            as_server_user(&bin.join("initdb"), root)
                .arg("-D")
                .arg(dir.join("data"))
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-N",
                    "--no-instructions",
                ]),
            "initdb",
        )?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let settings = match durability {
            Durability::Default => "-c max_connections=200",
            Durability::Fast => {
                "-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            }
        };
        let watchdog = as_server_user(Path::new("sh"), root)
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&bin)
            .arg(&dir)
            .arg(port.to_string())
            .arg(settings)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self { port, watchdog };
        server.wait_ready(&bin, &dir)?;
        Ok(server)
    }

    fn wait_ready(&mut self, bin: &Path, dir: &Path) -> Result<(), ThrowawayPgError> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(self.port.to_string())
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if self.watchdog.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut log = String::new();
        if let Ok(mut f) = std::fs::File::open(dir.join("server.log")) {
            let _ = f.read_to_string(&mut log);
        }
        Err(ThrowawayPgError::Failed(format!(
            "server did not become ready: {log}"
        )))
    }

    /// A URL for database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `url` if given, else a new throwaway server (returned, to keep it alive) and its URL.
    pub fn unless_given(
        url: Option<String>,
        durability: Durability,
    ) -> Result<(Option<ThrowawayPg>, String), ThrowawayPgError> {
        match url {
            Some(url) => Ok((None, url)),
            None => {
                let server = ThrowawayPg::start(durability)?;
                let url = server.url("postgres");
                Ok((Some(server), url))
            }
        }
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}
