//! TLS and SASL listeners (issue 18, first slice) against a real `once serve` and kcat
//! (librdkafka): certificates made by the test with openssl; a broker with PLAINTEXT, SSL,
//! SASL_PLAINTEXT and SASL_SSL listeners and a SCRAM user from `--scram-user`.
//!
//! - SCRAM-SHA-512 and SCRAM-SHA-256 over SASL_SSL, PLAIN over SASL_PLAINTEXT: produce and consume.
//! - A wrong password: the client fails with the broker's authentication error, nothing is stored,
//!   the broker logs it.
//! - Each listener's Metadata names that listener's address.
//! - A plaintext client on a TLS port fails cleanly; a request before authenticating on a SASL port
//!   closes the connection; the broker goes on serving.
//! - mTLS: with `--tls-client-ca`, a client without a certificate from that CA cannot connect.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::security::{certificates, kcat, text};
use support::{free_port, BrokerProcess};

fn settings(protocol: &str, mechanism: Option<&str>, password: &str, dir: &Path) -> Vec<String> {
    let mut settings = vec![format!("security.protocol={protocol}")];
    if let Some(mechanism) = mechanism {
        settings.extend([
            format!("sasl.mechanisms={mechanism}"),
            "sasl.username=alice".into(),
            format!("sasl.password={password}"),
        ]);
    }
    if protocol.ends_with("SSL") {
        settings.push(format!("ssl.ca.location={}", dir.join("ca.pem").display()));
    }
    settings
}

#[test]
fn sasl_and_tls_listeners_authenticate_and_refuse_as_kafka_does() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    certificates(dir);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let listeners = [
        format!("PLAINTEXT://127.0.0.1:{}", ports[0]),
        format!("SSL://127.0.0.1:{}", ports[1]),
        format!("SASL_PLAINTEXT://127.0.0.1:{}", ports[2]),
        format!("SASL_SSL://127.0.0.1:{}", ports[3]),
    ];
    let (cert, key) = (dir.join("broker.pem").display().to_string(), dir.join("broker.key").display().to_string());
    // The SASL_SSL listener is advertised by name (localhost, which the certificate names too).
    let advertised = format!("SASL_SSL://localhost:{}", ports[3]);
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key, "--scram-user", "alice:alice-secret"];
    args.extend(["--advertised-listener", &advertised]);
    for listener in &listeners {
        args.extend(["--listener", listener]);
    }
    let broker = BrokerProcess::start_with_listeners(&args, ports[0]);
    let at = |index: usize| format!("127.0.0.1:{}", ports[index]);
    // A connection that never authenticates (checked at the end: closed after 10 s).
    let started = std::time::Instant::now();
    let mut idle = TcpStream::connect(at(2)).expect("connect");

    // SCRAM-SHA-512 over SASL_SSL: produce, then consume.
    let scram512 = settings("SASL_SSL", Some("SCRAM-SHA-512"), "alice-secret", dir);
    let produced = kcat(&["-P", "-b", &at(3), "-t", "secure"], &scram512, Some("one\ntwo\n"));
    assert!(produced.status.success(), "produce over SASL_SSL: {}", text(&produced));
    let consumed = kcat(&["-C", "-b", &at(3), "-t", "secure", "-e", "-q"], &scram512, None);
    assert_eq!(String::from_utf8_lossy(&consumed.stdout), "one\ntwo\n", "{}", text(&consumed));
    // SCRAM-SHA-256 over SASL_SSL and PLAIN over SASL_PLAINTEXT read the same records.
    for (index, settings) in [
        (3, settings("SASL_SSL", Some("SCRAM-SHA-256"), "alice-secret", dir)),
        (2, settings("SASL_PLAINTEXT", Some("PLAIN"), "alice-secret", dir)),
        (1, settings("SSL", None, "", dir)),
        (0, settings("PLAINTEXT", None, "", dir)),
    ] {
        let consumed = kcat(&["-C", "-b", &at(index), "-t", "secure", "-e", "-q"], &settings, None);
        assert_eq!(String::from_utf8_lossy(&consumed.stdout), "one\ntwo\n", "{settings:?}: {}", text(&consumed));
        // Each listener's Metadata names the listener the client came in on.
        let listed = kcat(&["-L", "-b", &at(index)], &settings, None);
        let expected = if index == 3 { format!("localhost:{}", ports[3]) } else { at(index) };
        assert!(text(&listed).contains(&format!("broker 0 at {expected}")), "{settings:?}: {}", text(&listed));
    }

    // A wrong password: refused with the broker's message, nothing stored, logged.
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let protocol = if mechanism == "PLAIN" { "SASL_PLAINTEXT" } else { "SASL_SSL" };
        let wrong = settings(protocol, Some(mechanism), "not-the-password", dir);
        let index = if mechanism == "PLAIN" { 2 } else { 3 };
        let refused = kcat(&["-P", "-b", &at(index), "-t", "secure"], &wrong, Some("three\n"));
        assert!(!refused.status.success(), "{mechanism}: a wrong password is refused");
        assert!(text(&refused).contains("Authentication failed"), "{mechanism}: {}", text(&refused));
    }
    let consumed = kcat(&["-C", "-b", &at(0), "-t", "secure", "-e", "-q"], &[], None);
    assert_eq!(String::from_utf8_lossy(&consumed.stdout), "one\ntwo\n", "nothing stored by a refused client");
    let log = broker.log();
    let failed =
        log.lines().find(|line| line.contains("SASL authentication failed")).expect("failed logins are logged");
    assert!(
        failed.contains("user=alice") && failed.contains("peer=Some(127.0.0.1:"),
        "with user and address: {failed}"
    );

    // A plaintext client on the TLS port fails cleanly.
    let confused = kcat(&["-L", "-b", &at(3)], &["security.protocol=PLAINTEXT".to_string()], None);
    assert!(!confused.status.success(), "plaintext on a TLS port: {}", text(&confused));
    // A request before authenticating on a SASL port closes the connection.
    let mut socket = TcpStream::connect(at(2)).expect("connect");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // Metadata v1 (api key 3), correlation id 7, client id "x", all topics.
    let body: &[u8] = &[0, 3, 0, 1, 0, 0, 0, 7, 0, 1, b'x', 0xff, 0xff, 0xff, 0xff];
    socket.write_all(&(body.len() as u32).to_be_bytes()).expect("write");
    socket.write_all(body).expect("write");
    let mut answer = [0u8; 4];
    assert_eq!(socket.read(&mut answer).unwrap_or(0), 0, "closed without an answer");
    // The idle one was closed for not authenticating in time.
    idle.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(idle.read(&mut byte).expect("closed, not timed out"), 0, "closed by the broker");
    assert!(started.elapsed() >= Duration::from_secs(9), "not before its time: {:?}", started.elapsed());
    assert!(broker.log().contains("no SASL authentication within"), "and logged");
    // Transactions and a consumer group over SASL_SSL with confluent-kafka: the group's
    // coordinator is found on this listener, the aborted transaction stays invisible.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/secure_txn_group.py");
    let ca = dir.join("ca.pem").display().to_string();
    let python = Command::new("python3")
        .args([script, &at(3), &ca, "alice", "alice-secret"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run python3 (.ci/run installs confluent-kafka)");
    assert!(python.status.success(), "confluent-kafka over SASL_SSL: {}", text(&python));
    let lines = String::from_utf8_lossy(&python.stdout);
    assert_eq!(lines.lines().take(3).collect::<Vec<_>>(), ["a", "b", "c"], "{}", text(&python));
    // The group committed its position after "c" (offset 2), fetched back from the coordinator.
    assert!(lines.contains("committed 3"), "the group's commit is stored: {}", text(&python));
    // And everyone else is still served.
    let consumed = kcat(&["-C", "-b", &at(3), "-t", "secure", "-e", "-q"], &scram512, None);
    assert_eq!(String::from_utf8_lossy(&consumed.stdout), "one\ntwo\n", "{}", text(&consumed));
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    certificates(dir);
    let (plain, ssl) = (free_port(), free_port());
    let (listener_plain, listener_ssl) = (format!("PLAINTEXT://127.0.0.1:{plain}"), format!("SSL://127.0.0.1:{ssl}"));
    let (cert, key, ca) = (
        dir.join("broker.pem").display().to_string(),
        dir.join("broker.key").display().to_string(),
        dir.join("ca.pem").display().to_string(),
    );
    let args = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--listener",
        &listener_plain,
        "--listener",
        &listener_ssl,
    ];
    let _broker = BrokerProcess::start_with_listeners(&args, plain);
    let at = format!("127.0.0.1:{ssl}");
    let anonymous = kcat(&["-L", "-b", &at], &settings("SSL", None, "", dir), None);
    assert!(!anonymous.status.success(), "no client certificate: refused: {}", text(&anonymous));
    let mut with_certificate = settings("SSL", None, "", dir);
    with_certificate.push(format!("ssl.certificate.location={}", dir.join("client.pem").display()));
    with_certificate.push(format!("ssl.key.location={}", dir.join("client.key").display()));
    let listed = kcat(&["-L", "-b", &at], &with_certificate, None);
    assert!(listed.status.success() && text(&listed).contains(&format!("broker 0 at {at}")), "{}", text(&listed));
}
