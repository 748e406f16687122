//! Mail on VRRP state changes, as keepalived's `smtp_alert`: one plain SMTP
//! conversation per message to global_defs' smtp_server.

use std::{io, net::IpAddr};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::config::vrrp::Globals;

/// A mail that could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no smtp_server")]
    NoServer,
    #[error("connecting to {ip}:{port} timed out")]
    ConnectTimeout { ip: IpAddr, port: u16 },
    #[error("connecting to {ip}:{port}")]
    Connect {
        ip: IpAddr,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("server closed the connection")]
    Closed,
    #[error("malformed reply '{0}'")]
    Malformed(String),
    #[error("server answered '{0}'")]
    Refused(String),
    #[error("SMTP conversation timed out")]
    Timeout,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one (possibly multi-line) reply and checks its code class.
async fn expect<R: AsyncBufReadExt + Unpin>(r: &mut R, class: u8) -> Result<(), Error> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(Error::Closed);
        }
        let b = line.as_bytes();
        if b.len() < 4 {
            return Err(Error::Malformed(line.trim_end().to_string()));
        }
        if b[3] == b'-' {
            continue;
        }
        if b[0] != class {
            return Err(Error::Refused(line.trim_end().to_string()));
        }
        return Ok(());
    }
}

/// Sends one message to every `notification_email` address.
pub async fn send(g: &Globals, subject: &str, body: &str) -> Result<(), Error> {
    let (ip, port) = g.smtp_server.ok_or(Error::NoServer)?;
    let stream = tokio::time::timeout(g.smtp_connect_timeout, TcpStream::connect((ip, port)))
        .await
        .map_err(|_| Error::ConnectTimeout { ip, port })?
        .map_err(|source| Error::Connect { ip, port, source })?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let from = g
        .notification_email_from
        .clone()
        .unwrap_or_else(|| "keepalived@localhost".into());
    let helo = g
        .smtp_helo_name
        .clone()
        .unwrap_or_else(|| "localhost".into());
    let talk = async {
        expect(&mut r, b'2').await?;
        w.write_all(format!("HELO {helo}\r\n").as_bytes()).await?;
        expect(&mut r, b'2').await?;
        w.write_all(format!("MAIL FROM:<{from}>\r\n").as_bytes())
            .await?;
        expect(&mut r, b'2').await?;
        for to in &g.notification_email {
            w.write_all(format!("RCPT TO:<{to}>\r\n").as_bytes())
                .await?;
            expect(&mut r, b'2').await?;
        }
        w.write_all(b"DATA\r\n").await?;
        expect(&mut r, b'3').await?;
        let mut msg = format!(
            "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nX-Mailer: lb\r\n\r\n",
            g.notification_email
                .iter()
                .map(|t| format!("<{t}>"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for line in body.lines() {
            // Dot-stuffing (RFC 5321 §4.5.2).
            if line.starts_with('.') {
                msg.push('.');
            }
            msg.push_str(line);
            msg.push_str("\r\n");
        }
        msg.push_str(".\r\n");
        w.write_all(msg.as_bytes()).await?;
        expect(&mut r, b'2').await?;
        w.write_all(b"QUIT\r\n").await?;
        Ok::<(), Error>(())
    };
    tokio::time::timeout(g.smtp_connect_timeout, talk)
        .await
        .map_err(|_| Error::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn mail_reaches_a_server() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 test ESMTP\r\n").await.unwrap();
            let mut seen = Vec::new();
            let mut data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                seen.push(line.trim_end().to_string());
                if data {
                    if line == ".\r\n" {
                        data = false;
                        w.write_all(b"250 queued\r\n").await.unwrap();
                    }
                    continue;
                }
                if line.starts_with("DATA") {
                    data = true;
                    w.write_all(b"354 go\r\n").await.unwrap();
                } else if line.starts_with("QUIT") {
                    w.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else {
                    w.write_all(b"250 ok\r\n").await.unwrap();
                }
            }
            seen
        });
        let g = Globals {
            smtp_server: Some(("127.0.0.1".parse().unwrap(), port)),
            notification_email: vec!["a@x".into(), "b@x".into()],
            notification_email_from: Some("lb@x".into()),
            smtp_connect_timeout: std::time::Duration::from_secs(5),
            ..Default::default()
        };
        send(
            &g,
            "[LVS_01] VRRP Instance VI_1 - Entering MASTER state",
            "hello\n.dot",
        )
        .await
        .unwrap();
        let seen = server.await.unwrap();
        assert!(seen.contains(&"MAIL FROM:<lb@x>".to_string()), "{seen:?}");
        assert!(seen.contains(&"RCPT TO:<a@x>".to_string()));
        assert!(seen.contains(&"RCPT TO:<b@x>".to_string()));
        assert!(seen
            .iter()
            .any(|l| l == "Subject: [LVS_01] VRRP Instance VI_1 - Entering MASTER state"));
        assert!(seen.contains(&"..dot".to_string()), "dot-stuffed: {seen:?}");
    }
}
