//! `af registry list` and `info` against a hostile registry played by the test (issue 29,
//! items 16 and 17): an answer that never ends is cut off at a limit, and names full of
//! terminal escape sequences reach the terminal as text, never as control characters.

mod common;
use common::fake_registry::{Answer, Fake, Request};
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A registry on 127.0.0.1 that answers every request with `answer`, given the request's path
/// and the connection to write its whole response on.
fn hostile(answer: fn(&str, &mut TcpStream)) -> String {
    Fake::start(std::sync::Arc::new(move |r: &Request| {
        let path = r.path.clone();
        Answer::Stream(Box::new(move |stream: &mut TcpStream| answer(&path, stream)))
    }))
    .addr
}

fn json(stream: &mut TcpStream, body: &str) {
    let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
}

/// An answer that never ends: a JSON array streamed in chunks until the client hangs up.
fn endless(stream: &mut TcpStream, start: &str) {
    let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("{},", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",".repeat(2000).trim_end_matches(','));
    let _ = write!(stream, "{:x}\r\n{start}\r\n", start.len());
    while write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len()).is_ok() {}
}

fn af(args: &[&str]) -> (std::process::ExitStatus, String, String, u64) {
    let home = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_af"))
        .args(args)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let memory = MemoryWatch::start(child.id());
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned(), memory.peak_kib())
}

#[test]
fn answers_without_end_are_cut_off() {
    let registry = hostile(|path, stream| {
        if path.starts_with("/v2/_catalog") {
            endless(stream, "{\"repositories\":[");
        } else if path.contains("/manifests/") {
            endless(stream, "{\"schemaVersion\":2,\"layers\":[");
        } else {
            json(stream, "{}");
        }
    });
    for args in [vec!["registry", "list", "--registry", &registry], vec!["registry", "info", "--registry", &registry, "team/app:t"]] {
        let (status, _, stderr, peak_kib) = af(&args);
        assert!(!status.success(), "{args:?}");
        assert!(stderr.contains("over 4194304 bytes"), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(peak_kib < 96 << 10, "{args:?}: the client reached {} MiB", peak_kib >> 10);
    }
}

#[test]
fn registry_names_reach_the_terminal_as_text() {
    let registry = hostile(|path, stream| {
        if path.starts_with("/v2/_catalog") {
            json(stream, r#"{"repositories":["evil\u001b]0;pwned\u0007/app"]}"#);
        } else if path.contains("/tags/list") {
            json(stream, r#"{"name":"x","tags":["t\u001b[2J\u009b31m"]}"#);
        } else if path.contains("/manifests/") {
            let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"gone \u001b[31mred\u001b[0m"}]}"#;
            let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        } else {
            json(stream, "{}");
        }
    });
    let (status, stdout, stderr, _) = af(&["registry", "list", "--registry", &registry]);
    assert!(!status.success());
    for text in [&stdout, &stderr] {
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "control characters reached the terminal: {text:?}");
    }
    assert!(stderr.contains("evil"), "{stderr}");
}
