//! A real SMTP server for the tests of e-mail: aiosmtpd (Python, from Debian's
//! `python3-aiosmtpd`, installed the way PostgreSQL is when missing), run by a short
//! script that keeps each message it takes as a JSON file — envelope, headers, and each
//! MIME part decoded by Python's own `email` parser — so a test asserts on the message
//! as a receiving server got it. The server exits when the test process does (the
//! script watches its parent), and a test can stop it and start it again on the same
//! port (an outage). `refuse_first` makes it answer the first n messages with
//! `451 4.3.0` (try again later); any `nobody@…` recipient is refused for good (550,
//! quoting the address, as real servers do).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const SERVER: &str = r#"
import asyncio, email, email.policy, json, os, sys, time
from aiosmtpd.controller import Controller

port, directory, refuse_first = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
parent = os.getppid()

class Keep:
    def __init__(self):
        self.refused = 0
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('nobody@'):
            return '550 5.1.1 <%s>: Recipient address rejected: no such user' % address
        envelope.rcpt_tos.append(address)
        return '250 OK'
    async def handle_DATA(self, server, session, envelope):
        if self.refused < refuse_first:
            self.refused += 1
            return '451 4.3.0 try again later'
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {}
        for part in message.walk():
            if part.get_content_maintype() == 'multipart':
                continue
            parts[part.get_content_type()] = part.get_content()
        record = {
            'mail_from': envelope.mail_from,
            'rcpt_to': envelope.rcpt_tos,
            'headers': [[name, str(value)] for name, value in message.items()],
            'parts': parts,
            'raw': envelope.content.decode('utf-8', 'replace'),
        }
        name = '%d-%d' % (time.time_ns(), os.getpid())
        with open(os.path.join(directory, name + '.tmp'), 'w') as out:
            json.dump(record, out)
        os.rename(os.path.join(directory, name + '.tmp'), os.path.join(directory, name + '.json'))
        return '250 2.0.0 kept as ' + name

controller = Controller(Keep(), hostname='127.0.0.1', port=port)
controller.start()
print('ready', flush=True)
while os.getppid() == parent:
    time.sleep(0.2)
controller.stop()
"#;

/// A message as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub headers: Vec<(String, String)>,
    /// Each part by content type (`text/plain`, `text/html`), decoded.
    pub parts: std::collections::BTreeMap<String, String>,
    pub raw: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

pub struct SmtpServer {
    pub port: u16,
    directory: PathBuf,
    child: Option<Child>,
}

fn python() -> &'static str {
    // Debian's interpreter, where its python3-aiosmtpd lives (a pyenv shim may be first on PATH).
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn installed() -> bool {
    Command::new(python())
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl SmtpServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> anyhow::Result<SmtpServer> {
        SmtpServer::start_refusing(0)
    }

    /// Starts a server whose first `refuse_first` messages are answered 451.
    pub fn start_refusing(refuse_first: u32) -> anyhow::Result<SmtpServer> {
        till_db::packages::ensure(
            "aiosmtpd (a real SMTP server for the e-mail tests)",
            &["python3-aiosmtpd"],
            installed,
        )
        .map_err(anyhow::Error::msg)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let directory = std::env::temp_dir().join(format!("till-smtp-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&directory)?;
        let mut server = SmtpServer { port, directory, child: None };
        server.spawn(refuse_first)?;
        Ok(server)
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, refuse_first: u32) -> anyhow::Result<()> {
        use std::io::BufRead;
        let mut child = Command::new(python())
            .args(["-c", SERVER, &self.port.to_string(), &self.directory.to_string_lossy(), &refuse_first.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("aiosmtpd's stdout"))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            anyhow::bail!("aiosmtpd did not start on port {} (it said {line:?})", self.port);
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server: connections to its port are refused until [`SmtpServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, keeping what it received.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        // The port may linger a moment after the old process; try for a few seconds.
        let mut last = None;
        for _ in 0..20 {
            match self.spawn(0) {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("aiosmtpd did not restart")))
    }

    /// Every message received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.directory)
            .map(|entries| entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect())
            .unwrap_or_default();
        names.retain(|path| path.extension().is_some_and(|extension| extension == "json"));
        names.sort();
        names
            .iter()
            .filter_map(|path| std::fs::read(path).ok())
            .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .map(|record| {
                let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
                Received {
                    mail_from: text(&record["mail_from"]),
                    rcpt_to: record["rcpt_to"].as_array().map(|all| all.iter().map(text).collect()).unwrap_or_default(),
                    headers: record["headers"]
                        .as_array()
                        .map(|all| all.iter().map(|pair| (text(&pair[0]), text(&pair[1]))).collect())
                        .unwrap_or_default(),
                    parts: record["parts"]
                        .as_object()
                        .map(|parts| parts.iter().map(|(kind, body)| (kind.clone(), text(body))).collect())
                        .unwrap_or_default(),
                    raw: text(&record["raw"]),
                }
            })
            .collect()
    }

    /// Waits until at least `count` messages arrived (or `timeout` passes), and returns
    /// what arrived.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
