//! A private PostgreSQL cluster provisioned from the server binaries on this machine.
//!
//! `till up` and the test harness both use this module, so the code that runs a
//! newcomer's first start is the code every test run exercises.
//!
//! What it guarantees:
//! - The server listens only on 127.0.0.1 (and a Unix socket inside the cluster
//!   directory) and every login needs the generated password (SCRAM): never `trust`.
//! - PostgreSQL refuses to run as root, so when Till runs as root the cluster is owned by
//!   and run as an unprivileged user (`postgres` if it exists, otherwise `nobody`).
//! - The server runs in its own process group, so Ctrl-C reaches Till alone; Till drains
//!   the API first and then stops PostgreSQL with a fast shutdown.
//! - A watchdog shell holds a pipe from this process: if Till dies without stopping the
//!   cluster (SIGKILL, a panic, a test binary exiting), the pipe closes and the watchdog
//!   stops the server, so no cluster outlives its owner.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use till_kit::Secret;
use tokio::process::{Child, ChildStdin, Command};

/// The superuser created by initdb; only provisioning and migrations log in as it.
pub const SUPERUSER: &str = "till";
const PASSWORD_FILE: &str = "postgres.password";
const INITIALIZED_MARKER: &str = "pg.initialized";
const LOG_FILE: &str = "postgres.log";

/// Settings for a ledger's write load, on every cluster Till starts. With PostgreSQL's
/// defaults (128 MB of shared buffers, a checkpoint every 1 GB of WAL) `till bench
/// ledger` checkpointed every 13 to 24 seconds, and PostgreSQL's own log said
/// "checkpoints are occurring too frequently", and commits stalled while checkpoints
/// wrote (engine commit p99 6.3 ms; 3.3 ms after, with no checkpoint during the run).
/// The price of rarer checkpoints: up to 4 GB of WAL on disk and a longer recovery after
/// a crash.
///
/// The background writer then wakes every 10 ms instead of 200 and may write up to 1 000
/// pages a round (default 100), so that the ledger writer's backend finds clean buffers
/// for new rows instead of writing dirty ones out itself, inside its write statement
/// (auto_explain under the batch phase: about 1 200 such writes in one 134 ms
/// statement). pg_stat_bgwriter over the same run: buffers written by backends 154 353 →
/// 104 719, by the background writer 9 990 → 78 640.
///
/// New WAL segments are not zero-filled (`wal_init_zero=off`; only their last byte is
/// written, as on copy-on-write file systems). With checkpoints this rare, old segments
/// are seldom recycled, so the ledger's write load creates a new 16 MB segment every
/// second or so (its write statement logs about 4 KB per transfer, auto_explain), and
/// zero-filling it (about 16 ms on this machine's disk) happened inside a COMMIT while
/// every other committer waited: engine batches under `till bench ledger` had a COMMIT
/// over 8 ms every 0.6–0.8 s in every phase (53 in one run); with the setting, none in
/// the single-transfer and hot-account phases, and 29 in the run (27 in the batch phase,
/// 2 as the next began). Space is then allocated as WAL is written, and `fdatasync` makes
/// the allocation durable with the data, so a commit is as durable as before; a full disk
/// shows up when WAL is written rather than when a segment is created, as it would on
/// any such file system.
const WRITE_HEAVY_SETTINGS: [&str; 7] = [
    "shared_buffers=256MB",
    "max_wal_size=4GB",
    "checkpoint_timeout=15min",
    "bgwriter_delay=10ms",
    "bgwriter_lru_maxpages=1000",
    "bgwriter_lru_multiplier=4",
    "wal_init_zero=off",
];
const START_TIMEOUT_MS: u64 = 60_000;
const STOP_TIMEOUT_MS: u64 = 60_000;
const SOCKET_PATH_BYTES_MAX: usize = 100;

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where Till keeps its state; the cluster lives in `<data_dir>/pg`.
    pub data_dir: PathBuf,
    /// The TCP port on 127.0.0.1; `None` picks a free one at every start.
    pub port: Option<u16>,
    /// With `port` unset: the port to take if it is free once any previous postmaster of
    /// this cluster has ended (the previous run's), else a free one.
    pub preferred_port: Option<u16>,
    /// `false` turns off fsync for throwaway clusters (tests). Never for `till up`.
    pub durable: bool,
    /// Delete the whole data directory when the cluster stops (tests).
    pub ephemeral: bool,
    pub connections_max: u32,
    /// More server settings (`name=value`), after Till's own: a benchmark's
    /// `shared_preload_libraries=pg_stat_statements`, say.
    pub settings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries were found (looked in TILL_PG_BINDIR, or else `pg_config --bindir`, \
         PATH and /usr/lib/postgresql/*/bin): {0}; or set DATABASE_URL to use an existing server."
    )]
    NoBinaries(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("running as root, but no unprivileged user (`postgres` or `nobody`) exists to run PostgreSQL")]
    NoServiceUser,
    #[error("initdb failed:\n{output}")]
    Initdb { output: String },
    #[error("PostgreSQL did not start; the end of {log}:\n{tail}")]
    Start { log: String, tail: String },
    #[error("PostgreSQL did not stop within {STOP_TIMEOUT_MS} ms")]
    StopTimeout,
    #[error(
        "the PostgreSQL of this data directory (pid {0}) is still running after {STOP_TIMEOUT_MS} ms: \
         another `till up` is using it, or it is stuck shutting down"
    )]
    StillRunning(i32),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

/// Waits, at most `STOP_TIMEOUT_MS`, for a postmaster still running on `pg_dir` to end.
///
/// After `till up` is killed (kill -9), its watchdog stops PostgreSQL with a fast
/// shutdown, which ends with a checkpoint; a `till up` started at once would find the old
/// postmaster's `postmaster.pid` and fail ("lock file already exists"). A pid file whose
/// process is gone is left to PostgreSQL, which removes a stale one itself.
async fn wait_for_previous_postmaster(pg_dir: &Path) -> Result<(), EmbeddedError> {
    let Some(pid) = postmaster_pid(pg_dir) else { return Ok(()) };
    let started = std::time::Instant::now();
    let mut said = false;
    while is_postmaster(pid) {
        if started.elapsed() > Duration::from_millis(STOP_TIMEOUT_MS) {
            return Err(EmbeddedError::StillRunning(pid));
        }
        if !said {
            tracing::warn!(
                pid,
                "waiting for the PostgreSQL of a previous run of this data directory to finish shutting down"
            );
            eprintln!("Waiting for the PostgreSQL of a previous run (pid {pid}) to finish shutting down…");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The pid in the first line of `postmaster.pid`, if the file is there.
fn postmaster_pid(pg_dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(pg_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether `pid` is a live `postgres` process (a reused pid of another program is not).
fn is_postmaster(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline.split(|byte| *byte == 0).next().is_some_and(|program| program.ends_with(b"postgres"))
    })
}

fn has_server(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file()
}

/// The installed server binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    /// Finds a directory holding both `postgres` and `initdb`, installing the PostgreSQL
    /// server first if the machine has none and Till may (`crate::packages`).
    /// `TILL_PG_BINDIR`, when set, is the only place looked at, and nothing is installed.
    pub fn find() -> Result<Binaries, EmbeddedError> {
        if let Some(only) = std::env::var_os("TILL_PG_BINDIR") {
            let dir = PathBuf::from(only);
            return if has_server(&dir) {
                Ok(Binaries { dir })
            } else {
                Err(EmbeddedError::NoBinaries(format!(
                    "TILL_PG_BINDIR={} has no postgres and initdb: point it at them, or unset it and install them \
                     (`sudo apt-get install -y postgresql` on Debian/Ubuntu)",
                    dir.display()
                )))
            };
        }
        crate::packages::ensure("the PostgreSQL server", &["postgresql"], || Binaries::installed().is_some())
            .map_err(EmbeddedError::NoBinaries)?;
        Binaries::installed().ok_or_else(|| EmbeddedError::NoBinaries("they are not where Till looks".into()))
    }

    /// The installed server binaries, if any are where Till looks.
    fn installed() -> Option<Binaries> {
        let from_pg_config = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
        let from_path =
            std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
        let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| {
                        let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
                        Some((version, entry.path().join("bin")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        from_pg_config
            .into_iter()
            .chain(from_path)
            .chain(versioned.into_iter().map(|(_, dir)| dir))
            .find(|dir| has_server(dir))
            .map(|dir| {
                // PATH entries are often symlinks into the versioned directory; resolve
                // them so that `pg_ctl` is taken from the same installation.
                let dir = fs::canonicalize(dir.join("postgres"))
                    .ok()
                    .and_then(|binary| binary.parent().map(Path::to_path_buf))
                    .unwrap_or(dir);
                Binaries { dir }
            })
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Who runs the server: ourselves, or an unprivileged user when we are root.
#[derive(Debug, Clone, Copy)]
struct ServiceUser {
    uid: u32,
    gid: u32,
    switch: bool,
}

impl ServiceUser {
    fn decide() -> Result<ServiceUser, EmbeddedError> {
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            return Ok(ServiceUser { uid: euid.as_raw(), gid: nix::unistd::getegid().as_raw(), switch: false });
        }
        ["postgres", "nobody"]
            .iter()
            .find_map(|name| nix::unistd::User::from_name(name).ok().flatten())
            .map(|user| ServiceUser { uid: user.uid.as_raw(), gid: user.gid.as_raw(), switch: true })
            .ok_or(EmbeddedError::NoServiceUser)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        if self.switch {
            command.uid(self.uid).gid(self.gid);
        }
        command
    }

    fn give(&self, path: &Path) -> Result<(), EmbeddedError> {
        if self.switch {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
                .map_err(io_error(format!("giving {} to the PostgreSQL user", path.display())))?;
        }
        Ok(())
    }
}

/// A running cluster. Stop it with [`Cluster::stop`]; if it is dropped or the process
/// dies instead, the watchdog stops it.
pub struct Cluster {
    pg_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    password: Secret<String>,
    server: Child,
    watchdog: Child,
    // Held only to keep the watchdog's pipe open; closing it is the stop signal.
    _lifeline: ChildStdin,
    ephemeral: bool,
}

impl Cluster {
    /// Initialises the cluster on first use, then starts it and waits until it accepts
    /// connections.
    pub async fn start(options: &ClusterOptions) -> Result<Cluster, EmbeddedError> {
        // Finding may install PostgreSQL and wait for apt: not on the runtime's threads.
        let binaries = tokio::task::spawn_blocking(Binaries::find)
            .await
            .map_err(|error| EmbeddedError::NoBinaries(format!("looking for them failed: {error}")))??;
        let user = ServiceUser::decide()?;
        let data_dir = absolute(&options.data_dir)?;
        fs::create_dir_all(&data_dir).map_err(io_error(format!("creating {}", data_dir.display())))?;
        // When the server runs as another user it must traverse the data directory to
        // reach the cluster inside; the secrets beside it stay 0600.
        let mode = if user.switch { 0o711 } else { 0o700 };
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(mode))
            .map_err(io_error(format!("restricting {}", data_dir.display())))?;
        if options.ephemeral {
            // The watchdog (running as the server user) deletes a throwaway cluster.
            user.give(&data_dir)?;
        }
        let pg_dir = cluster_dir(&data_dir, user);
        let password = read_or_create_password(&data_dir)?;
        if !data_dir.join(INITIALIZED_MARKER).exists() {
            initdb(&binaries, user, &pg_dir, &password, &data_dir).await?;
        }
        // Before choosing a port: the previous run's postmaster still holds its own.
        wait_for_previous_postmaster(&pg_dir).await?;
        let preferred = options.preferred_port.filter(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok());
        let port = match options.port.or(preferred) {
            Some(port) => port,
            None => free_port()?,
        };
        let log_path = data_dir.join(LOG_FILE);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_error(format!("opening {}", log_path.display())))?;
        let log_for_stderr = log.try_clone().map_err(io_error("duplicating the log handle"))?;
        let socket_dir = pg_dir.join(format!(".s.PGSQL.{port}"));
        let socket_setting = if socket_dir.as_os_str().len() <= SOCKET_PATH_BYTES_MAX {
            pg_dir.display().to_string()
        } else {
            tracing::warn!(path = %pg_dir.display(), "the data directory path is too long for a Unix socket; listening on TCP only");
            String::new()
        };
        let mut server = user.command(binaries.tool("postgres"));
        server
            .arg("-D")
            .arg(&pg_dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("unix_socket_directories={socket_setting}")])
            .args(["-c", "unix_socket_permissions=0700"])
            .args(["-c", &format!("max_connections={}", options.connections_max)])
            .args(["-c", "password_encryption=scram-sha-256"])
            .args(["-c", &format!("fsync={}", if options.durable { "on" } else { "off" })])
            .args(["-c", &format!("synchronous_commit={}", if options.durable { "on" } else { "off" })])
            .args(["-c", &format!("full_page_writes={}", if options.durable { "on" } else { "off" })])
            .args(WRITE_HEAVY_SETTINGS.iter().flat_map(|setting| ["-c", setting]))
            .args(options.settings.iter().flat_map(|setting| ["-c", setting.as_str()]))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .process_group(0)
            .kill_on_drop(false);
        let mut server = server.spawn().map_err(io_error("starting postgres"))?;
        let watchdog = spawn_watchdog(&binaries, user, &pg_dir, &data_dir, options.ephemeral);
        let mut watchdog = match watchdog {
            Ok(watchdog) => watchdog,
            Err(error) => {
                // Without a watchdog the server could outlive us; do not leave it running.
                let _ = server.start_kill();
                return Err(error);
            }
        };
        let lifeline = watchdog.stdin.take().ok_or_else(|| EmbeddedError::Io {
            context: "opening the watchdog pipe".into(),
            source: std::io::Error::other("no stdin pipe"),
        })?;
        let cluster = Cluster {
            pg_dir,
            data_dir,
            port,
            password,
            server,
            watchdog,
            _lifeline: lifeline,
            ephemeral: options.ephemeral,
        };
        cluster.wait_until_ready(&log_path).await
    }

    async fn wait_until_ready(mut self, log_path: &Path) -> Result<Cluster, EmbeddedError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        loop {
            let exited = self.server.try_wait().map_err(io_error("watching postgres"))?;
            if exited.is_none() {
                let options = self.connect_options("postgres");
                if let Ok(connection) = sqlx::PgConnection::connect_with(&options).await {
                    connection.close().await?;
                    return Ok(self);
                }
            }
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                let _ = self.server.start_kill();
                return Err(EmbeddedError::Start { log: log_path.display().to_string(), tail: tail(log_path) });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn cluster_dir(&self) -> &Path {
        &self.pg_dir
    }

    /// Connection options for `database` as the cluster's superuser, over TCP on loopback.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .password(self.password.expose_secret())
            .database(database)
    }

    /// Creates `database` if it does not exist yet.
    pub async fn ensure_database(&self, database: &str) -> Result<(), EmbeddedError> {
        let mut connection = sqlx::PgConnection::connect_with(&self.connect_options("postgres")).await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut connection)
            .await?;
        if !exists {
            let quoted = database.replace('"', "\"\"");
            sqlx::query(&format!("CREATE DATABASE \"{quoted}\"")).execute(&mut connection).await?;
        }
        connection.close().await?;
        Ok(())
    }

    /// Stops the server with a fast shutdown (open transactions roll back, a checkpoint is
    /// written) and waits for it to exit.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        if let Some(pid) = self.server.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            // SIGINT is PostgreSQL's "fast" shutdown. A failure means it already exited.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        }
        let waited = tokio::time::timeout(Duration::from_millis(STOP_TIMEOUT_MS), self.server.wait()).await;
        // The server is down (or refused to go down); the watchdog has nothing left to do.
        let _ = self.watchdog.start_kill();
        let _ = self.watchdog.wait().await;
        match waited {
            Ok(status) => {
                status.map_err(io_error("waiting for postgres"))?;
            }
            Err(_) => return Err(EmbeddedError::StopTimeout),
        }
        if self.ephemeral {
            fs::remove_dir_all(&self.data_dir).map_err(io_error(format!("removing {}", self.data_dir.display())))?;
            if self.pg_dir.exists() {
                fs::remove_dir_all(&self.pg_dir).map_err(io_error(format!("removing {}", self.pg_dir.display())))?;
            }
        }
        Ok(())
    }
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let current = std::env::current_dir().map_err(io_error("reading the current directory"))?;
    Ok(current.join(path))
}

/// `<data_dir>/pg`, unless the server user cannot reach it (root's home directory is
/// usually 0700): then a directory under /var/lib/till named after the data directory.
fn cluster_dir(data_dir: &Path, user: ServiceUser) -> PathBuf {
    let inside = data_dir.join("pg");
    if !user.switch || traversable_by_others(data_dir) {
        return inside;
    }
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    PathBuf::from("/var/lib/till/clusters").join(hex::encode(&digest[..8]))
}

fn traversable_by_others(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|ancestor| fs::metadata(ancestor).map(|meta| meta.permissions().mode() & 0o001 != 0).unwrap_or(false))
}

fn read_or_create_password(data_dir: &Path) -> Result<Secret<String>, EmbeddedError> {
    let path = data_dir.join(PASSWORD_FILE);
    if let Ok(existing) = fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(Secret::new(existing));
        }
    }
    let mut bytes = [0_u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let password = hex::encode(bytes);
    write_secret_file(&path, &password)?;
    Ok(Secret::new(password))
}

/// Writes `contents` to a new file readable only by its owner.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<(), EmbeddedError> {
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(format!("creating {}", path.display())))?;
    file.write_all(contents.as_bytes()).map_err(io_error(format!("writing {}", path.display())))?;
    file.sync_all().map_err(io_error(format!("syncing {}", path.display())))?;
    Ok(())
}

async fn initdb(
    binaries: &Binaries,
    user: ServiceUser,
    pg_dir: &Path,
    password: &Secret<String>,
    data_dir: &Path,
) -> Result<(), EmbeddedError> {
    // An earlier initdb that did not finish leaves a partial directory; start again.
    if pg_dir.exists() {
        fs::remove_dir_all(pg_dir).map_err(io_error(format!("removing the partial cluster {}", pg_dir.display())))?;
    }
    fs::create_dir_all(pg_dir).map_err(io_error(format!("creating {}", pg_dir.display())))?;
    fs::set_permissions(pg_dir, fs::Permissions::from_mode(0o700))
        .map_err(io_error(format!("restricting {}", pg_dir.display())))?;
    user.give(pg_dir)?;
    // initdb reads the superuser password from a file; give it one that only the server
    // user can read, beside the cluster, and remove it straight after.
    let password_file = pg_dir.with_extension("initdb-password");
    write_secret_file(&password_file, password.expose_secret())?;
    user.give(&password_file)?;
    let output = user
        .command(binaries.tool("initdb"))
        .arg("-D")
        .arg(pg_dir)
        .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions"])
        .arg(format!("--pwfile={}", password_file.display()))
        .stdin(Stdio::null())
        .output()
        .await;
    let _ = fs::remove_file(&password_file);
    let output = output.map_err(io_error("running initdb"))?;
    if !output.status.success() {
        return Err(EmbeddedError::Initdb {
            output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        });
    }
    fs::write(data_dir.join(INITIALIZED_MARKER), pg_dir.display().to_string())
        .map_err(io_error("recording the initialised cluster"))?;
    Ok(())
}

fn spawn_watchdog(
    binaries: &Binaries,
    user: ServiceUser,
    pg_dir: &Path,
    data_dir: &Path,
    ephemeral: bool,
) -> Result<Child, EmbeddedError> {
    // `read` returns when our end of the pipe closes, which happens when this process
    // exits for any reason. Then stop the server; for a throwaway cluster, delete it.
    let script = if ephemeral {
        r#"read _; "$0" -D "$1" -m fast -w stop >/dev/null 2>&1; rm -rf "$1" "$2""#
    } else {
        r#"read _; "$0" -D "$1" -m fast -w stop >/dev/null 2>&1"#
    };
    let mut command = user.command("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .arg(binaries.tool("pg_ctl"))
        .arg(pg_dir)
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    command.spawn().map_err(io_error("starting the cluster watchdog"))
}

/// Asks the kernel for a free port on loopback. Another process could take it before
/// PostgreSQL binds it; the start then fails with a clear log rather than misbehaving.
fn free_port() -> Result<u16, EmbeddedError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_error("finding a free port"))?;
    let port = listener.local_addr().map_err(io_error("finding a free port"))?.port();
    Ok(port)
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
