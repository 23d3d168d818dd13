//! A private RabbitMQ node on this machine, started the way `till_db::embedded` starts
//! PostgreSQL: its own directory, its own loopback ports (AMQP, Erlang distribution, and a
//! private epmd), and a watchdog that stops it and deletes the directory when this
//! process exits, however it exits. The test harness and `till bench events` use it; it
//! needs the `rabbitmq-server` package (or TILL_RABBITMQ_SERVER pointing at its script).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, ChildStdin, Command};

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct BrokerNode {
    dir: PathBuf,
    amqp_port: u16,
    dist_port: u16,
    epmd_port: u16,
    server: Option<Child>,
    epmd: Child,
    _watchdog: Child,
    // Closing this pipe (the process exiting) is the watchdog's signal.
    _lifeline: ChildStdin,
}

impl BrokerNode {
    /// Starts a new node and waits until it accepts AMQP connections.
    pub async fn start() -> anyhow::Result<BrokerNode> {
        // Before anything runs: installing RabbitMQ brings epmd too. (It may wait for apt,
        // so not on the runtime's own threads.)
        tokio::task::spawn_blocking(server_binary).await.context("looking for RabbitMQ")??;
        let dir = std::env::temp_dir().join(format!("till-rabbitmq-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("home")).context("creating the broker directory")?;
        let (amqp_port, dist_port, epmd_port) = (free_port()?, free_port()?, free_port()?);
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{amqp_port}\n\
                 loopback_users.guest = true\n\
                 log.console = true\n\
                 log.console.level = warning\n\
                 log.file = false\n\
                 disk_free_limit.absolute = 50MB\n"
            ),
        )?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let epmd = Command::new(epmd_binary())
            .current_dir(dir.join("home"))
            .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .context("starting epmd (install erlang / rabbitmq-server)")?;
        record_group(&dir, "epmd", &epmd)?;
        let mut watchdog = spawn_watchdog(&dir)?;
        let lifeline = watchdog.stdin.take().context("the watchdog's pipe")?;
        let mut node = BrokerNode {
            dir,
            amqp_port,
            dist_port,
            epmd_port,
            server: None,
            epmd,
            _watchdog: watchdog,
            _lifeline: lifeline,
        };
        node.run_server().await?;
        Ok(node)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// Stops the node (as an operator would: SIGTERM, a clean shutdown) and waits.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        signal_group(&server, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(STOP_TIMEOUT, server.wait()).await.is_err() {
            signal_group(&server, nix::sys::signal::Signal::SIGKILL);
            server.wait().await?;
        }
        // Erlang's helper processes may linger in the group a moment longer.
        signal_group(&server, nix::sys::signal::Signal::SIGKILL);
        Ok(())
    }

    /// Starts the stopped node again: same ports, same data (durable queues survive).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.run_server().await
    }

    async fn run_server(&mut self) -> anyhow::Result<()> {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log"))?;
        // The node's working directory is its own: Erlang writes crash dumps
        // (`MnesiaCore.*`, `erl_crash.dump`) there, never into whoever started it.
        let server = Command::new(server_binary()?)
            .current_dir(dir.join("home"))
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", "till@localhost")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("no-rabbitmq-env.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .context("starting rabbitmq-server")?;
        record_group(dir, "server", &server)?;
        self.server = Some(server);
        self.wait_until_ready().await
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let properties = || lapin::ConnectionProperties::default();
        loop {
            if let Some(server) = self.server.as_mut() {
                if let Some(status) = server.try_wait()? {
                    bail!("rabbitmq-server exited ({status}); its log:\n{}", tail(&self.dir.join("server.log")));
                }
            }
            if let Ok(connection) = lapin::Connection::connect(&self.url(), properties()).await {
                let _ = connection.close(200, "ready".into()).await;
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "rabbitmq-server did not start in {START_TIMEOUT:?}; its log:\n{}",
                    tail(&self.dir.join("server.log"))
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        // A node owned by one test stops with it; the watchdog covers a crash.
        if let Some(server) = self.server.as_ref() {
            signal_group(server, nix::sys::signal::Signal::SIGKILL);
        }
        signal_group(&self.epmd, nix::sys::signal::Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The RabbitMQ server script, installing RabbitMQ first if the machine has none and
/// Till may (`till_db::packages`); `TILL_RABBITMQ_SERVER` names it instead.
fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TILL_RABBITMQ_SERVER") {
        return Ok(PathBuf::from(path));
    }
    till_db::packages::ensure("RabbitMQ (for the tests of the RabbitMQ bus)", &["rabbitmq-server"], || {
        installed_server().is_some()
    })
    .map_err(|advice| anyhow::anyhow!("{advice}, or set TILL_RABBITMQ_SERVER"))?;
    installed_server().context("rabbitmq-server is installed but not where Till looks: set TILL_RABBITMQ_SERVER")
}

fn installed_server() -> Option<PathBuf> {
    // Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user; the script
    // behind it runs as whoever starts it, which is what a private node needs.
    let debian = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if debian.exists() {
        return Some(debian);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("rabbitmq-server")).find(|path| path.exists()))
}

fn epmd_binary() -> PathBuf {
    std::env::var_os("TILL_EPMD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("epmd"))
}

/// The watchdog waits for our end of its pipe to close, then kills the process groups
/// recorded in the directory and deletes it.
fn spawn_watchdog(dir: &Path) -> anyhow::Result<Child> {
    // POSIX sh (dash) kill: `-9 -PGID` signals the group; `--` is not accepted there.
    let script = r#"read _; for f in "$0"/*.pgid; do kill -9 "-$(cat "$f")" 2>/dev/null; done; sleep 1; rm -rf "$0""#;
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .context("starting the broker watchdog")
}

fn record_group(dir: &Path, name: &str, child: &Child) -> anyhow::Result<()> {
    let pid = child.id().context("the child has no pid")?;
    std::fs::write(dir.join(format!("{name}.pgid")), pid.to_string())?;
    Ok(())
}

fn signal_group(child: &Child, signal: nix::sys::signal::Signal) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// A port free now, from below the kernel's ephemeral range. A port the kernel hands out
/// for `:0` comes from that range, which outgoing connections also draw their source
/// ports from: under a parallel test run, one of them took the node's AMQP port between
/// this choice and RabbitMQ's bind (`eaddrinuse`, seen in CI). Below the range, only
/// another explicit bind can take it.
fn free_port() -> anyhow::Result<u16> {
    use rand::Rng;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|start| start.parse::<u16>().ok()))
        .unwrap_or(32_768);
    let (low, high) = (10_000_u16, ephemeral_start.max(10_001));
    for _ in 0..100 {
        let port = rand::thread_rng().gen_range(low..high);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
