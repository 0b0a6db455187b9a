//! Issue 22: logging must never stop the broker. With its stderr on a full device (`2>/dev/full`,
//! as when `once serve 2> once.log` sits on the full disk), the broker starts, serves produce and
//! fetch, and exits 0 on SIGTERM — it used to exit at once with a panic (status 101), because
//! tracing-subscriber reports a failed write with `eprintln!`, which panics.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, wait_until};

#[test]
fn a_broker_whose_log_output_is_full_keeps_serving_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full");
    let mut broker = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["serve", "--listen", &bootstrap, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("ONCE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(full)
        .spawn()
        .expect("spawn once serve");
    wait_until("the broker to listen", Duration::from_secs(30), || {
        assert!(broker.try_wait().expect("wait").is_none(), "the broker exited although only its log output is full");
        std::net::TcpStream::connect(&bootstrap).is_ok()
    });
    let run = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_once"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn once");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        let output = child.wait_with_output().expect("wait");
        assert!(output.status.success(), "once {args:?} failed");
        String::from_utf8(output.stdout).expect("utf-8")
    };
    run(&["topic", "create", "logs", "--bootstrap", &bootstrap], "");
    run(&["produce", "logs", "--bootstrap", &bootstrap], "a\nb\nc\n");
    let consumed = run(&["consume", "logs", "--bootstrap", &bootstrap, "--from-beginning", "--max-messages", "3"], "");
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["a", "b", "c"], "{consumed}");
    assert!(broker.try_wait().expect("wait").is_none(), "still serving");
    let status = Command::new("kill").arg("-TERM").arg(broker.id().to_string()).status().expect("kill");
    assert!(status.success());
    let status = broker.wait().expect("wait for the broker");
    assert!(status.success(), "SIGTERM ends it with 0, not a panic: {status:?}");
}
