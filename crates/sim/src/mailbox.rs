//! The simulator's mailbox: an SMTP server (the RFC 5321 commands a submission client
//! sends: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS, no AUTH) that keeps
//! every message it takes, so that `till up` without `TILL_SMTP_URL` sends real SMTP to
//! somewhere a person can look: `GET /_sim/mailbox[?to=…]`. Tests of e-mail itself use a
//! real SMTP server (aiosmtpd) instead; this one is for the demo and the simulator's
//! users. Bounded: commands of at most 1 000 bytes, messages of at most 10 MiB, the
//! newest 10 000 messages kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const COMMAND_BYTES_MAX: u64 = 1_000;
const MESSAGE_BYTES_MAX: usize = 10 * 1024 * 1024;
const MESSAGES_MAX: usize = 10_000;

/// One message as the mailbox took it.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// The mailbox's own number for it, from 1.
    pub id: u64,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Headers as they came, unfolded (`Subject` may be RFC 2047-encoded).
    pub headers: Vec<(String, String)>,
    /// The whole message (headers and body) after dot-unstuffing.
    pub raw: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: time::OffsetDateTime,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

#[derive(Clone, Default)]
pub struct Mailbox {
    messages: Arc<Mutex<(u64, VecDeque<Received>)>>,
}

impl Mailbox {
    pub fn list(&self, to: Option<&str>) -> Vec<Received> {
        let messages = self.messages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        messages
            .1
            .iter()
            .filter(|message| to.is_none_or(|to| message.rcpt_to.iter().any(|rcpt| rcpt.eq_ignore_ascii_case(to))))
            .cloned()
            .collect()
    }

    fn keep(&self, mail_from: String, rcpt_to: Vec<String>, raw: String) -> u64 {
        let mut messages = self.messages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        messages.0 += 1;
        let id = messages.0;
        let headers = headers_of(&raw);
        messages.1.push_back(Received {
            id,
            mail_from,
            rcpt_to,
            headers,
            raw,
            received_at: time::OffsetDateTime::now_utc(),
        });
        while messages.1.len() > MESSAGES_MAX {
            messages.1.pop_front();
        }
        id
    }
}

/// The header block, unfolded: continuation lines (starting with white space) joined.
fn headers_of(raw: &str) -> Vec<(String, String)> {
    let block = raw.split("\r\n\r\n").next().unwrap_or_default();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in block.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    headers
}

/// Serves SMTP on `listener` into `mailbox`, a task per connection, until dropped.
pub async fn serve(listener: TcpListener, mailbox: Mailbox) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let mailbox = mailbox.clone();
        tokio::spawn(async move {
            if let Err(error) = session(stream, mailbox).await {
                tracing::debug!(%error, "an SMTP session at the simulator ended with an error");
            }
        });
    }
}

/// The address inside `FROM:<…>` / `TO:<…>` (parameters after it ignored).
fn path_of(argument: &str) -> Option<String> {
    let start = argument.find('<')?;
    let end = argument.get(start..)?.find('>')? + start;
    argument.get(start + 1..end).map(str::to_string)
}

async fn session(stream: TcpStream, mailbox: Mailbox) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 till-sim ESMTP the simulator's mailbox\r\n").await?;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        let read = (&mut reader).take(COMMAND_BYTES_MAX).read_line(&mut line).await?;
        if read == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') {
            write.write_all(b"500 5.5.2 line too long\r\n").await?;
            return Ok(());
        }
        let command = line.trim_end();
        let (verb, argument) = command.split_once(' ').unwrap_or((command, ""));
        let reply: &[u8] = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => b"250-till-sim\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n",
            "HELO" => b"250 till-sim\r\n",
            "MAIL" => match path_of(argument) {
                Some(path) => {
                    mail_from = Some(path);
                    rcpt_to.clear();
                    b"250 2.1.0 OK\r\n"
                }
                None => b"501 5.5.4 MAIL FROM:<address>\r\n",
            },
            "RCPT" => match (path_of(argument), &mail_from) {
                (Some(path), Some(_)) if !path.is_empty() => {
                    rcpt_to.push(path);
                    b"250 2.1.5 OK\r\n"
                }
                (_, None) => b"503 5.5.1 MAIL first\r\n",
                _ => b"501 5.5.4 RCPT TO:<address>\r\n",
            },
            "DATA" => {
                let Some(from) = mail_from.take() else {
                    write.write_all(b"503 5.5.1 MAIL first\r\n").await?;
                    continue;
                };
                if rcpt_to.is_empty() {
                    write.write_all(b"503 5.5.1 RCPT first\r\n").await?;
                    continue;
                }
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let Some(raw) = read_data(&mut reader).await? else {
                    write.write_all(b"552 5.3.4 message too big\r\n").await?;
                    return Ok(());
                };
                let id = mailbox.keep(from, std::mem::take(&mut rcpt_to), raw);
                write.write_all(format!("250 2.0.0 OK queued as {id}\r\n").as_bytes()).await?;
                continue;
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.1 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// The message after DATA, up to the line that is a lone dot, dot-unstuffed; `None` if
/// it grows past the limit.
async fn read_data(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Option<String>> {
    let mut message = Vec::new();
    loop {
        let mut line = Vec::new();
        let room = u64::try_from(MESSAGE_BYTES_MAX.saturating_sub(message.len())).unwrap_or(0) + 3;
        let read = (&mut *reader).take(room).read_until(b'\n', &mut line).await?;
        if read == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the client left during DATA"));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some(String::from_utf8_lossy(&message).into_owned()));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        message.extend_from_slice(line);
        if message.len() > MESSAGE_BYTES_MAX {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_unfolded() {
        let raw = "Subject: a\r\n long one\r\nMessage-ID: <x@y>\r\n\r\nbody";
        let headers = headers_of(raw);
        assert_eq!(headers, vec![("Subject".into(), "a long one".into()), ("Message-ID".into(), "<x@y>".into())]);
        assert_eq!(path_of("FROM:<a@b.c> BODY=8BITMIME").as_deref(), Some("a@b.c"));
        assert_eq!(path_of("TO:a@b.c"), None);
    }
}
