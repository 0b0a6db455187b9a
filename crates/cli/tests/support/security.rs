//! What the security tests share: a throw-away CA and certificates made with openssl, and kcat.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn openssl(dir: &Path, args: &[&str]) {
    let output =
        Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (.ci/run installs it)");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, a broker certificate for localhost/127.0.0.1, one for elsewhere.example only, and a client
/// certificate, in `dir`.
pub fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=once-test-ca",
        ],
    );
    std::fs::write(dir.join("broker.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    // A v3 certificate (webpki accepts no v1), for client authentication.
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    // A broker certificate for another name: a client checking the host name refuses it.
    std::fs::write(dir.join("elsewhere.ext"), "subjectAltName=DNS:elsewhere.example\n").expect("ext");
    for (name, subject, extensions) in [
        ("broker", "/CN=localhost", Some("broker.ext")),
        ("client", "/CN=billing", Some("client.ext")),
        ("elsewhere", "/CN=elsewhere.example", Some("elsewhere.ext")),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subject,
            ],
        );
        let (csr, out) = (format!("{name}.csr"), format!("{name}.pem"));
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &out,
            "-days",
            "2",
        ];
        if let Some(extensions) = extensions {
            args.extend(["-extfile", extensions]);
        }
        openssl(dir, &args);
    }
}

pub fn kcat(args: &[&str], settings: &[String], input: Option<&str>) -> Output {
    let mut command = Command::new("kcat");
    // cargo points LD_LIBRARY_PATH at the build's own libraries; kcat must load the system's
    // librdkafka, which it was built against.
    command.env_remove("LD_LIBRARY_PATH").args(args).args(["-m", "10"]);
    for setting in settings {
        command.args(["-X", setting]);
    }
    let mut child = command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat");
    if let Some(input) = input {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    }
    child.wait_with_output().expect("kcat output")
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}
