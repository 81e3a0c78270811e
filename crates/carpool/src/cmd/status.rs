//! `carpool status [--watch]`: asks a running `carpool up`'s admin listener
//! for `/status` and prints it as tables (or the JSON as it is).

use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::status::model::Status;
use crate::status::render;

/// Where the embedded configuration puts the admin listener.
pub const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3180);
/// How long the admin listener has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: u64 = 64 << 20;

/// Prints the array's status once, or every `watch` until interrupted.
pub fn run(admin: SocketAddr, watch: Option<Duration>, json: bool) -> Result<ExitCode> {
    let Some(every) = watch else {
        let body = fetch(admin)?;
        if json {
            print!("{body}");
        } else {
            print!(
                "{}",
                render::text(&decode(admin, &body)?, crate::status::unix_now())
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let terminal = std::io::stdout().is_terminal();
    loop {
        let frame = match fetch(admin).and_then(|b| decode(admin, &b)) {
            Ok(s) => render::text(&s, crate::status::unix_now()),
            // the array may be restarting: say so and keep watching
            Err(e) => format!("{e:#}\n"),
        };
        let mut out = std::io::stdout().lock();
        if terminal {
            // home and clear, so the tables redraw in place
            write!(out, "\x1b[H\x1b[2J")?;
        } else {
            writeln!(out, "---")?;
        }
        if out
            .write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            // the reader went away (`| head`)
            return Ok(ExitCode::SUCCESS);
        }
        drop(out);
        std::thread::sleep(every);
    }
}

fn decode(admin: SocketAddr, body: &str) -> Result<Status> {
    serde_json::from_str(body)
        .with_context(|| format!("http://{admin}/status did not answer carpool's status JSON"))
}

/// The body of `GET /status`.
fn fetch(admin: SocketAddr) -> Result<String> {
    let hint = || {
        format!(
            "cannot reach the admin listener at {admin} (is `carpool up` running? `--admin ADDR:PORT` or `-c FILE` names another)"
        )
    };
    let mut s = TcpStream::connect_timeout(&admin, TIMEOUT).with_context(hint)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: carpool\r\nConnection: close\r\n\r\n")
        .with_context(hint)?;
    let mut buf = Vec::new();
    s.take(MAX_ANSWER)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading the answer of {admin}"))?;
    let text =
        String::from_utf8(buf).map_err(|_| anyhow!("{admin} answered bytes that are not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{admin} answered no HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(anyhow!("http://{admin}/status answered {status:?}"));
    }
    Ok(body.to_string())
}
