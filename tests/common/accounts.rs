//! Accounts through the CLI, as an operator makes them: users, tokens.

use super::Node;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `af <args> --data-dir <node's>` with `stdin`; asserts success; its standard output.
pub fn af(node: &Node, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_af"))
        .args(args)
        .arg("--data-dir")
        .arg(&node.data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "af {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn add_user(node: &Node, name: &str, password: &str) {
    af(node, &["registry", "user", "add", name], Some(&format!("{password}\n")));
}

/// A new access token of `user` (`extra`: `--scope`, `--expires`, ...).
pub fn token(node: &Node, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["registry", "token", "create", "--user", user];
    args.extend_from_slice(extra);
    af(node, &args, None)
}

/// The id part of `af_<id>_<secret>`.
pub fn token_id(token: &str) -> &str {
    &token[3..19]
}
